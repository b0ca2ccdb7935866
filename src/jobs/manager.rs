//! [`JobManager`]: the engine's commands (`start`, `reply`, `cancel`), the hand-over of turns to
//! Codex, the job list, retention and shutdown.
//!
//! Every change runs through [`JobManager::transact`]: a [`Tx`] built under the state lock, saved
//! off the runtime's workers, then made; one change at a time, each on what the one before it
//! made. It returns an [`AfterCommit`]: waiters are woken and queued turns handed to Codex only
//! after the lock is released. Codex's reports are applied in [`super::reports`]; the feed and
//! the event pages are read in [`super::feed`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::api::{
    EngineSettings, ForkRequest, JobSnapshot, JobSummary, Relayed, ReplyRequest, ReviewSource,
    StartRequest,
};
use super::state::{AfterCommit, Announce, Change, JobState, State, Stop, Tx};
use super::status::Outcome;
use super::{JobError, reports};
use crate::codex::{Backend, BackendError, BackendEvent, BackendInfo, ThreadRef, TurnInput};
use crate::model::{
    Answer, Decision, Effort, EventKind, Isolation, JobId, JobRecord, JobStatus, JobTurn,
    ReasoningSummary, ReviewTarget, ThreadOptions, TokenUsage, Worktree,
};
use crate::store::{Problem, Store, StoreError, StoreThreads, Write};
use crate::text;
use crate::time::now_rfc3339;
use crate::worktree;

/// How long `job_list` lets the prompt and the last message be.
const LIST_TEXT_CHARS: usize = 200;
/// The longest shutdown waits for Codex's last reports and for hand-overs in flight.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(3);
/// How deeply `config` may nest: it is saved with the job and must read back.
const MAX_CONFIG_DEPTH: usize = 16;
/// How many relayed requests a slow listener may fall behind by (it then misses some; they
/// still wait for job_respond).
const RELAYED_BACKLOG: usize = 256;

/// The engine. A cheap handle: clones share one engine.
#[derive(Clone)]
pub struct JobManager {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) state: Mutex<State>,
    /// Held from the moment a change is built until it is made: changes are made one at a time,
    /// in order, each on the state the one before it left.
    changing: Arc<tokio::sync::Mutex<()>>,
    pub(super) store: StoreThreads,
    pub(super) backend: Arc<dyn Backend>,
    pub(super) settings: EngineSettings,
    /// The seq of the newest notification; waiters watch it. It only moves forward.
    pub(super) feed: watch::Sender<u64>,
    /// Requests that start waiting for a client.
    pub(super) relayed: broadcast::Sender<Relayed>,
    /// Moves whenever a turn ends or a request starts or stops waiting: turn clocks look again.
    pub(super) turns_changed: watch::Sender<u64>,
    /// Moves whenever a change saves events or posts to the feed: followers waiting on a job's
    /// events look again.
    pub(super) events_recorded: watch::Sender<u64>,
    /// Every task the engine spawns: the report loop, retention, hand-overs, interrupts.
    pub(super) tasks: TaskTracker,
    /// Cancelled when shutdown begins: retention stops and no more turns go to Codex.
    pub(super) stopping: CancellationToken,
    /// Cancelled once the backend has sent its last report: the report loop applies what is
    /// left and ends.
    pub(super) drained: CancellationToken,
    /// The report loop, awaited at shutdown.
    reports: Mutex<Option<JoinHandle<()>>>,
    /// Set while some turn waits to be saved as failed (see `JobState::unsaved_failure`), so
    /// the report loop looks for them only then.
    pub(super) unsaved: AtomicBool,
    /// How many reports the report loop has taken: tests wait on it instead of yielding.
    #[cfg(test)]
    pub(super) reports_taken: watch::Sender<usize>,
    /// One lock per job with a hand-over in flight: a job's turns reach Codex one at a time, in
    /// turn order, each after the interrupt of a predecessor cancelled mid-hand-over.
    handovers: Mutex<HashMap<JobId, Arc<tokio::sync::Mutex<()>>>>,
}

impl JobManager {
    /// Builds the engine from what the store holds: turns that were unfinished when the last
    /// server went away are settled as `interrupted`, and expired jobs deleted. Then it starts
    /// applying the backend's reports from `events` and deleting expired jobs periodically.
    pub async fn open(
        store: Arc<dyn Store>,
        backend: Arc<dyn Backend>,
        settings: EngineSettings,
        events: mpsc::Receiver<BackendEvent>,
    ) -> Result<Self, JobError> {
        let store = StoreThreads::new(store);
        let state = State::from_loaded(store.load().await?);
        let (feed, _) = watch::channel(state.last_notification);
        let manager = Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                changing: Arc::default(),
                store,
                backend,
                settings,
                feed,
                relayed: broadcast::channel(RELAYED_BACKLOG).0,
                turns_changed: watch::channel(0).0,
                events_recorded: watch::channel(0).0,
                tasks: TaskTracker::new(),
                stopping: CancellationToken::new(),
                drained: CancellationToken::new(),
                reports: Mutex::new(None),
                unsaved: AtomicBool::new(false),
                #[cfg(test)]
                reports_taken: watch::channel(0).0,
                handovers: Mutex::new(HashMap::new()),
            }),
        };
        let after = manager
            .transact(|tx| {
                tx.interrupt_open_turns("the server stopped (it was restarted or it crashed)")
            })
            .await?;
        manager.publish(after);
        manager.purge_expired().await?;

        let weak = Arc::downgrade(&manager.inner);
        let drained = manager.inner.drained.clone();
        let loop_ = manager
            .inner
            .tasks
            .spawn(reports::apply_loop(weak, events, drained));
        *manager.inner.reports_lock() = Some(loop_);
        manager.spawn_retention();
        Ok(manager)
    }

    fn spawn_retention(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let stopping = self.inner.stopping.clone();
        let every = (self.inner.settings.retention / 10)
            .clamp(Duration::from_secs(1), Duration::from_secs(3600));
        self.inner.tasks.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = stopping.cancelled() => break,
                }
                let Some(inner) = weak.upgrade() else { break };
                let manager = JobManager { inner };
                manager.retry_unsaved_failures().await;
                if let Err(e) = manager.purge_expired().await {
                    tracing::error!(error = %e, "could not delete expired jobs");
                }
            }
        });
    }

    /// How long a request relayed to clients waits for an answer.
    pub fn approval_timeout(&self) -> Duration {
        self.inner.settings.approval_timeout
    }

    pub fn backend_info(&self) -> BackendInfo {
        self.inner.backend.info()
    }

    /// Turns running in Codex now.
    pub fn running_count(&self) -> usize {
        self.inner.lock().running
    }

    /// The tokens used by every job the server holds (deleted jobs no longer count).
    pub fn total_usage(&self) -> TokenUsage {
        let state = self.inner.lock();
        let mut total = TokenUsage::default();
        for job in state.jobs.values() {
            total += job.record.usage;
        }
        total
    }

    /// Runs `change` on the state as one saved transaction: built under the state lock, saved off
    /// the runtime's workers ([`StoreThreads`]), then made.
    ///
    /// Once built, the change is saved and made even if the caller leaves meanwhile (memory must
    /// not fall behind disk), and what it brings is then published and dispatched here.
    pub(super) async fn transact(
        &self,
        change: impl FnOnce(&mut Tx<'_>) -> Result<(), JobError>,
    ) -> Result<AfterCommit, JobError> {
        let one_at_a_time = self.inner.changing.clone().lock_owned().await;
        let (writes, change) = {
            let state = self.inner.lock();
            let mut tx = Tx::new(&state, self.inner.settings.max_concurrent_jobs);
            change(&mut tx)?;
            tx.finish()
        };
        let (answer, answered) = tokio::sync::oneshot::channel();
        let manager = self.clone();
        tokio::spawn(async move {
            let made = manager.save_and_make(writes, change).await;
            drop(one_at_a_time);
            if let Err(Ok(after)) = answer.send(made) {
                manager.publish_and_dispatch(after);
            }
        });
        answered.await.unwrap_or_else(|_| {
            Err(JobError::Store(StoreError::Write {
                problem: Problem::Other,
                detail: "the change was lost on its way to the store (a panic)".into(),
            }))
        })
    }

    /// Changes what is kept in memory only, between two saved changes, so that neither
    /// overwrites it with the copy it was built on.
    pub(super) async fn change_unsaved(&self, change: impl FnOnce(&mut State)) {
        let _one_at_a_time = self.inner.changing.lock().await;
        change(&mut self.inner.lock());
    }

    async fn save_and_make(
        &self,
        writes: Vec<Write>,
        change: Change,
    ) -> Result<AfterCommit, JobError> {
        self.inner.store.write(writes).await?;
        Ok(change.make(&mut self.inner.lock()))
    }

    /// Wakes waiters, answers Codex's requests, relays those that wait for a client; returns the
    /// turns to hand to Codex.
    pub(super) fn publish(&self, after: AfterCommit) -> Vec<TurnInput> {
        for (reply, answer) in after.replies {
            reply.send(answer);
        }
        self.relay(after.relayed);
        if after.turns_changed {
            self.inner.turns_changed.send_modify(|n| *n += 1);
        }
        if after.recorded || after.notified.is_some() {
            self.inner.events_recorded.send_modify(|n| *n += 1);
        }
        if let Some(seq) = after.notified {
            // Two publishers may finish in either order: the feed never moves back.
            self.inner.feed.send_if_modified(|newest| {
                let newer = seq > *newest;
                if newer {
                    *newest = seq;
                }
                newer
            });
        }
        after.dispatch
    }

    /// Wakes waiters and hands newly running turns to Codex in the background.
    pub(super) fn publish_and_dispatch(&self, after: AfterCommit) {
        let dispatch = self.publish(after);
        if !dispatch.is_empty() {
            let manager = self.clone();
            self.inner
                .tasks
                .spawn(async move { manager.hand_over(dispatch).await });
        }
    }

    /// Registers a job and hands its first turn to Codex, or queues it when every slot is taken.
    pub async fn start(&self, request: StartRequest) -> Result<JobSnapshot, JobError> {
        self.create(request, None).await
    }

    /// Starts a new job on a copy of `job`'s Codex thread, with its settings, running `request`'s
    /// prompt as its first turn; `job` is unaffected.
    pub async fn fork(&self, job: &str, request: ForkRequest) -> Result<JobSnapshot, JobError> {
        let (start, fork) = self.fork_of(job, request).await?;
        self.create(start, Some(fork)).await
    }

    /// Runs Codex's review of `target` as a new job: on a copy of a job's thread, where that job
    /// runs, or on a new thread in a directory. The job's result is the review.
    pub async fn review(
        &self,
        source: ReviewSource,
        target: ReviewTarget,
    ) -> Result<JobSnapshot, JobError> {
        self.codex_ready().await?;
        let backend = &self.inner.backend;
        if !backend.reviews() {
            let info = backend.info();
            return Err(JobError::InvalidArgument(format!(
                "review is not supported by codex {} {}; it needs the app-server backend \
                 (Codex 0.154 or later)",
                info.name, info.codex_version
            )));
        }
        let prompt = target.to_string();
        match source {
            ReviewSource::Job(job) => {
                let request = ForkRequest {
                    prompt,
                    ..ForkRequest::default()
                };
                let (mut start, fork) = self.fork_of(&job, request).await?;
                start.review = Some(target);
                self.create(start, Some(fork)).await
            }
            ReviewSource::Cwd(cwd) => {
                let start = StartRequest {
                    prompt,
                    cwd: Some(cwd),
                    review: Some(target),
                    ..StartRequest::default()
                };
                self.create(start, None).await
            }
        }
    }

    /// A new job's request and origin, for a fork of settled `job` asked as `request`.
    async fn fork_of(
        &self,
        job: &str,
        request: ForkRequest,
    ) -> Result<(StartRequest, Fork), JobError> {
        let id = JobId::from(job);
        self.codex_ready().await?;
        let backend = &self.inner.backend;
        if !backend.forks_threads() {
            let why = crate::codex::cannot_fork(&backend.info());
            return Err(JobError::InvalidArgument(why));
        }
        let (options, approvals, thread_id, status, worktree) = {
            let state = self.inner.lock();
            let record = &state.job(&id)?.record;
            // Where the job ran is gone: the fork would run in the checkout it started from.
            let own_worktree = request.isolation == Some(Isolation::Worktree);
            if record.worktree.as_ref().is_some_and(|w| w.removed) && !own_worktree {
                return Err(JobError::InvalidArgument(format!(
                    "job {id}'s worktree was removed (job_cleanup); pass isolation \
                     \"worktree\" to give the fork one of its own"
                )));
            }
            (
                record.options.clone(),
                record.approvals,
                record.thread_id.clone(),
                record.status,
                record.live_worktree().cloned(),
            )
        };
        if !status.is_settled() {
            return Err(JobError::InvalidArgument(format!(
                "job {id} is {status}: a thread is forked between turns. Wait for the turn with \
                 job_wait (job_id {id}), then fork"
            )));
        }
        let Some(thread_id) = thread_id else {
            return Err(JobError::NoThread { job: id });
        };
        let start = StartRequest {
            prompt: request.prompt,
            cwd: Some(options.cwd),
            model: options.model,
            profile: options.profile,
            approval_policy: options.approval_policy,
            sandbox: options.sandbox,
            config: options.config,
            base_instructions: options.base_instructions,
            developer_instructions: options.developer_instructions,
            approvals: Some(approvals),
            effort: options.effort,
            summary: options.summary,
            output_schema: request.output_schema,
            max_turn_seconds: request.max_turn_seconds,
            client_request_id: None,
            // A fork runs where the forked job runs unless it asks for a worktree of its own.
            isolation: Some(request.isolation.unwrap_or(Isolation::None)),
            base_ref: request.base_ref,
            review: None,
        };
        let fork = Fork {
            job: id,
            thread: thread_id,
            worktree,
        };
        Ok((start, fork))
    }

    /// Registers a job and queues its first turn, on a new thread or on a fork, in a worktree
    /// when it asks for one.
    async fn create(
        &self,
        request: StartRequest,
        fork: Option<Fork>,
    ) -> Result<JobSnapshot, JobError> {
        // A fork with nothing to run yet: Codex copies the thread now; job_reply runs its turns.
        let turnless =
            fork.is_some() && request.review.is_none() && request.prompt.trim().is_empty();
        if request.prompt.trim().is_empty() && !turnless {
            return Err(JobError::MissingPrompt);
        }
        if let Some(config) = &request.config {
            check_depth(config)?;
        }
        self.codex_ready().await?;
        self.check_output_schema(request.output_schema.as_ref())?;
        let limit = self.turn_limit(request.max_turn_seconds);
        let options = ThreadOptions {
            cwd: self.resolve_cwd(request.cwd.as_deref())?,
            model: request.model.clone(),
            profile: request.profile.clone(),
            approval_policy: request.approval_policy.clone(),
            sandbox: request.sandbox.clone(),
            config: request.config.clone(),
            base_instructions: request.base_instructions.clone(),
            developer_instructions: request.developer_instructions.clone(),
            effort: request.effort,
            summary: request.summary,
        };
        self.inner
            .settings
            .caps
            .check(&options)
            .map_err(JobError::InvalidArgument)?;
        self.inner
            .backend
            .validate(&options)
            .map_err(JobError::InvalidArgument)?;
        let id = JobId::generate();
        let isolation = request.isolation.unwrap_or(self.inner.settings.isolation);
        if request.base_ref.is_some() && isolation != Isolation::Worktree {
            return Err(JobError::InvalidArgument(
                "base_ref is the commit a worktree starts from; pass isolation: \"worktree\" \
                 with it, or leave it out"
                    .to_owned(),
            ));
        }
        let worktree = match (isolation, fork.as_ref()) {
            (Isolation::Worktree, _) => {
                let key = request.client_request_id.as_deref();
                let base_ref = request.base_ref.as_deref();
                self.make_worktree(key, base_ref, &options, &id).await?
            }
            (Isolation::None, Some(fork)) => fork.worktree.clone(),
            (Isolation::None, None) => None,
        };
        let now = now_rfc3339();
        let (thread, forked_from) = match fork {
            Some(fork) => (ThreadRef::Fork(fork.thread), Some(fork.job)),
            None => (ThreadRef::New, None),
        };
        let record = JobRecord {
            id: id.clone(),
            status: JobStatus::Queued,
            thread_id: None,
            created_at: now.clone(),
            updated_at: now,
            turns: 1,
            prompt: request.prompt,
            options,
            client_request_id: request.client_request_id.clone(),
            last_message: None,
            error: None,
            last_seq: 0,
            approvals: request.approvals.unwrap_or(self.inner.settings.approvals),
            usage: Default::default(),
            forked_from,
            worktree,
            result_json: None,
            changes: None,
        };
        if let (true, ThreadRef::Fork(parent)) = (turnless, &thread) {
            return self.create_turnless(record, parent, isolation).await;
        }
        let input = TurnInput {
            turn: JobTurn::new(id.clone(), 1),
            prompt: record.prompt.clone(),
            thread,
            options: record.turn_options(),
            output_schema: request.output_schema,
            review: request.review,
        };
        let mut existing = None;
        let after = self
            .transact(|tx| {
                if !tx.accepting() {
                    return Err(JobError::ShuttingDown);
                }
                let first = record
                    .client_request_id
                    .as_ref()
                    .and_then(|key| tx.state().by_client_request.get(key))
                    .and_then(|id| tx.state().jobs.get(id));
                if let Some(first) = first {
                    let first = &first.record;
                    if first.prompt != record.prompt
                        || first.options != record.options
                        || first.approvals != record.approvals
                    {
                        return Err(JobError::RequestIdReused {
                            key: record.client_request_id.clone().unwrap_or_default(),
                            job: first.id.clone(),
                        });
                    }
                    existing = Some(first.id.clone());
                    return Ok(());
                }
                tx.create(JobState::new(record.clone(), None));
                tx.enqueue_turn(input, limit)
            })
            .await;
        let after = match after {
            Ok(after) => after,
            Err(e) => {
                discard_worktree(&record, isolation).await;
                return Err(e);
            }
        };
        if let Some(existing) = existing {
            return self.inner.lock().snapshot(&existing);
        }
        // Answered once the job is saved and its turn queued: Codex takes the turn in the
        // background, and the thread id it names follows in job_list, thread_started and later
        // answers.
        self.publish_and_dispatch(after);
        self.inner.lock().snapshot(&id)
    }

    /// Registers `record` as a settled job with no turn yet, on a copy Codex makes now of thread
    /// `parent`.
    async fn create_turnless(
        &self,
        mut record: JobRecord,
        parent: &str,
        isolation: Isolation,
    ) -> Result<JobSnapshot, JobError> {
        let forked = self
            .inner
            .backend
            .fork_thread(&record.id, parent, &record.turn_options())
            .await;
        let created = match forked {
            Ok(thread_id) => {
                record.thread_id = Some(thread_id);
                record.turns = 0;
                self.transact(|tx| {
                    if !tx.accepting() {
                        return Err(JobError::ShuttingDown);
                    }
                    tx.create_settled(JobState::new(record.clone(), None))
                })
                .await
            }
            Err(e) => Err(JobError::InvalidArgument(format!(
                "Codex could not fork the thread: {e}"
            ))),
        };
        match created {
            Ok(after) => {
                self.publish(after);
                self.inner.lock().snapshot(&record.id)
            }
            Err(e) => {
                discard_worktree(&record, isolation).await;
                Err(e)
            }
        }
    }

    /// Starts a new turn in the job's Codex thread, under the approval settings given (which
    /// hold for later turns too).
    pub async fn reply(&self, job: &str, request: ReplyRequest) -> Result<JobSnapshot, JobError> {
        if request.prompt.trim().is_empty() {
            return Err(JobError::MissingPrompt);
        }
        let id = JobId::from(job);
        self.codex_ready().await?;
        let (thread_id, mut options) = {
            let state = self.inner.lock();
            let record = &state.job(&id)?.record;
            (record.thread_id.clone(), record.options.clone())
        };
        self.check_output_schema(request.output_schema.as_ref())?;
        let before = options.clone();
        if let Some(policy) = request.approval_policy {
            options.approval_policy = Some(policy);
        }
        options.effort = request.effort.or(options.effort);
        options.summary = request.summary.or(options.summary);
        // Checked even when unchanged: the caps may have changed since the job started.
        self.check_settings_change(&before, &options)?;
        if let Some(thread_id) = thread_id
            && let Err(reason) = self.inner.backend.can_continue(&thread_id).await
        {
            return Err(JobError::CannotContinue { job: id, reason });
        }
        let limit = self.turn_limit(request.max_turn_seconds);
        let after = self
            .transact(|tx| {
                if !tx.accepting() {
                    return Err(JobError::ShuttingDown);
                }
                let entry = tx.job(&id)?;
                let status = entry.record.status;
                if !status.is_settled() {
                    return Err(JobError::ReplyWhileRunning {
                        job: id.clone(),
                        status,
                        turn: entry.record.turns,
                    });
                }
                let Some(thread_id) = entry.record.thread_id.clone() else {
                    return Err(JobError::NoThread { job: id.clone() });
                };
                if entry.record.worktree.as_ref().is_some_and(|w| w.removed) {
                    return Err(JobError::InvalidArgument(format!(
                        "job {id}'s worktree was removed (job_cleanup); fork it with job_fork and \
                     isolation \"worktree\", or start a new job"
                    )));
                }
                entry.record.turns += 1;
                entry.record.options = options;
                if let Some(approvals) = request.approvals {
                    entry.record.approvals = approvals;
                }
                let input = TurnInput {
                    turn: entry.turn(),
                    prompt: request.prompt,
                    thread: ThreadRef::Existing(thread_id),
                    options: entry.record.turn_options(),
                    output_schema: request.output_schema,
                    review: None,
                };
                tx.enqueue_turn(input, limit)
            })
            .await?;
        // As for `start`: Codex takes (and may first resume) the thread in the background.
        self.publish_and_dispatch(after);
        self.inner.lock().snapshot(&id)
    }

    /// A new worktree for job `id` in the repository of `options.cwd`; none for a retried
    /// request (`client_request_id`) whose first job exists: that job is the answer.
    async fn make_worktree(
        &self,
        retry_key: Option<&str>,
        base_ref: Option<&str>,
        options: &ThreadOptions,
        id: &JobId,
    ) -> Result<Option<Worktree>, JobError> {
        let retried =
            retry_key.is_some_and(|key| self.inner.lock().by_client_request.contains_key(key));
        if retried {
            return Ok(None);
        }
        let branch = format!("codex-async/{id}");
        let made = worktree::create(
            Path::new(&options.cwd),
            &self.inner.settings.worktrees,
            id.as_str(),
            &branch,
            base_ref,
        )
        .await
        .map_err(JobError::InvalidArgument)?;
        Ok(Some(made))
    }

    /// Refuses a change of a thread's settings (`before` → `after`) that the backend cannot
    /// make between turns, or settings it does not take.
    fn check_settings_change(
        &self,
        before: &ThreadOptions,
        after: &ThreadOptions,
    ) -> Result<(), JobError> {
        let backend = &self.inner.backend;
        if !backend.settings_per_turn() {
            let info = backend.info();
            let said = |value: Option<&str>| value.unwrap_or("Codex's default").to_owned();
            let changed = [
                (
                    "approval_policy",
                    said(before.approval_policy.as_deref()),
                    said(after.approval_policy.as_deref()),
                ),
                (
                    "effort",
                    said(before.effort.map(Effort::as_str)),
                    said(after.effort.map(Effort::as_str)),
                ),
                (
                    "summary",
                    said(before.summary.map(ReasoningSummary::as_str)),
                    said(after.summary.map(ReasoningSummary::as_str)),
                ),
            ];
            if let Some((name, was, wanted)) = changed.into_iter().find(|(_, a, b)| a != b) {
                return Err(JobError::InvalidArgument(format!(
                    "codex {} {} keeps the {name} a thread started with ({was}); start a new \
                     job with {name} {wanted:?}",
                    info.name, info.codex_version
                )));
            }
        }
        self.inner
            .settings
            .caps
            .check(after)
            .map_err(JobError::InvalidArgument)?;
        backend.validate(after).map_err(JobError::InvalidArgument)
    }

    /// Refuses an `output_schema` that is no JSON Schema object, or that this backend cannot
    /// pass on.
    fn check_output_schema(&self, schema: Option<&serde_json::Value>) -> Result<(), JobError> {
        let Some(schema) = schema else { return Ok(()) };
        // The model's structured outputs take an object at the root, and result_json is one.
        if schema.get("type").and_then(serde_json::Value::as_str) != Some("object") {
            return Err(JobError::InvalidArgument(
                "output_schema must be a JSON Schema of an object (\"type\": \"object\" at its \
                 root), e.g. {\"type\": \"object\", \"properties\": {\"answer\": \
                 {\"type\": \"string\"}}, \"required\": [\"answer\"], \
                 \"additionalProperties\": false}"
                    .to_owned(),
            ));
        }
        let backend = &self.inner.backend;
        if !backend.takes_output_schema() {
            let info = backend.info();
            return Err(JobError::InvalidArgument(format!(
                "output_schema is not supported by codex {} {}; it needs the app-server or exec \
                 backend (Codex 0.154 or later)",
                info.name, info.codex_version
            )));
        }
        Ok(())
    }

    /// Adds `prompt` to the job's running turn, where the backend can.
    pub async fn steer(&self, job: &str, prompt: &str) -> Result<JobSnapshot, JobError> {
        if prompt.trim().is_empty() {
            return Err(JobError::MissingPrompt);
        }
        let id = JobId::from(job);
        let (turn, status) = {
            let state = self.inner.lock();
            let entry = state.job(&id)?;
            (entry.turn(), entry.record.status)
        };
        if status != JobStatus::Running {
            return Err(JobError::NotSteerable { job: id, status });
        }
        match self.inner.backend.steer(&turn, prompt).await {
            Ok(()) => self.inner.lock().snapshot(&id),
            Err(BackendError::NoRunningTurn) => {
                // It ended meanwhile, or Codex has not started it yet.
                let status = self.inner.lock().job(&id)?.record.status;
                Err(JobError::NotSteerable { job: id, status })
            }
            Err(BackendError::Unsupported(why)) => Err(JobError::InvalidArgument(why)),
            Err(e) => Err(JobError::InvalidArgument(format!(
                "Codex did not take the input: {e}"
            ))),
        }
    }

    /// Waits until Codex can take turns (it may still be starting).
    async fn codex_ready(&self) -> Result<(), JobError> {
        self.inner
            .backend
            .ready()
            .await
            .map_err(JobError::CodexUnavailable)
    }

    /// Whether Codex can take turns now: `None` while it is still starting, else why not.
    pub fn codex_state(&self) -> Option<Result<(), String>> {
        use futures::FutureExt as _;
        self.inner.backend.ready().now_or_never()
    }

    /// A turn's time limit: `seconds` if given (0: none), else the server's.
    fn turn_limit(&self, seconds: Option<u64>) -> Option<Duration> {
        match seconds {
            Some(0) => None,
            Some(seconds) => Some(Duration::from_secs(seconds)),
            None => self.inner.settings.max_turn,
        }
    }

    /// Stops the job's queued or running turn and returns the job settled as `cancelled`, within
    /// the cancel grace in all: asking Codex (which must not take longer) and waiting for its word.
    pub async fn cancel(&self, job: &str) -> Result<JobSnapshot, JobError> {
        let stop = Stop::Cancel("cancelled with job_cancel".to_owned());
        self.stop_turn(&JobId::from(job), None, stop).await
    }

    /// Stops the job's queued or running turn (`turn`, when named) for `stop`: its waiting
    /// requests get `cancel`, Codex is asked to stop it, and it is settled as the stop says once
    /// Codex confirms, or when the cancel grace runs out. A turn stopped already keeps its first
    /// stop.
    pub(super) async fn stop_turn(
        &self,
        id: &JobId,
        turn: Option<u32>,
        stop: Stop,
    ) -> Result<JobSnapshot, JobError> {
        let grace = self.inner.settings.cancel_grace;
        let deadline = tokio::time::Instant::now() + grace;
        let mut target = None;
        let mut queued = false;
        let mut interrupt_now = false;
        let mut first_stop = None;
        let after = self
            .transact(|tx| {
                let entry = tx.job(id)?;
                let status = entry.record.status;
                if status.is_settled() || turn.is_some_and(|t| t != entry.record.turns) {
                    return Err(JobError::AlreadySettled {
                        job: id.clone(),
                        status,
                    });
                }
                let open = entry.turn();
                queued = entry.facts.queued;
                target = Some(open.clone());
                if queued {
                    // In the same transaction as the check, so the queue cannot hand it over first.
                    let (outcome, kind) = stop.outcome();
                    let reason = format!("{} before the turn started", stop.reason());
                    tx.settle(&open, outcome, kind, reason).map(drop)
                } else {
                    // Whoever sees the other's mark tells Codex: this call if Codex has the turn
                    // already, else the hand-over once Codex has it.
                    let stop = entry.stop.get_or_insert_with(|| stop.clone()).clone();
                    interrupt_now = entry.facts.handed_over;
                    let waiting: Vec<String> = entry
                        .pending
                        .iter()
                        .map(|p| p.request.request_id.clone())
                        .collect();
                    for request_id in waiting {
                        let answer = Answer::just(Decision::Cancel);
                        tx.resolve(id, &request_id, answer, stop.decided_by(), None)?;
                    }
                    first_stop = Some(stop);
                    Ok(())
                }
            })
            .await?;
        self.publish_and_dispatch(after);
        let Some(turn) = target.filter(|_| !queued) else {
            return self.inner.lock().snapshot(id);
        };
        let seconds = grace.as_secs_f32();
        let asked = if interrupt_now {
            tokio::time::timeout_at(deadline, self.inner.backend.interrupt(&turn)).await
        } else {
            Ok(Ok(()))
        };
        let stop = first_stop.unwrap_or(stop);
        let why = stop.reason();
        // Codex confirms with the turn's end, which settles it as the stop says; its word may
        // come even when the interrupt failed (a `cancel` answer stops a turn too).
        let reason = match asked {
            Ok(Ok(()) | Err(BackendError::NoRunningTurn)) => {
                self.until_ended(&turn, deadline).await;
                format!("{why}; Codex did not confirm within {seconds} s")
            }
            Ok(Err(e)) => {
                tracing::warn!(%turn, error = %e, "could not interrupt the turn in codex");
                self.until_ended(&turn, deadline).await;
                format!("{why}; Codex could not be told: {e}")
            }
            Err(_) => format!("{why}; Codex did not answer the interrupt within {seconds} s"),
        };
        // Does nothing when Codex's confirmation ended the turn already.
        let (outcome, kind) = stop.outcome();
        let after = self
            .transact(|tx| tx.settle(&turn, outcome, kind, reason).map(drop))
            .await?;
        self.publish_and_dispatch(after);
        self.inner.lock().snapshot(id)
    }

    /// Waits until `turn` has ended, or `deadline`.
    async fn until_ended(&self, turn: &JobTurn, deadline: tokio::time::Instant) {
        let mut feed = self.inner.feed.subscribe();
        let open = |manager: &Self| {
            manager
                .inner
                .lock()
                .job(&turn.job)
                .is_ok_and(|j| j.is_open(turn.turn))
        };
        while open(self) {
            tokio::select! {
                changed = feed.changed() => if changed.is_err() { return },
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Removes the job's worktree, and its branch when `delete_branch`. Refused while a job may
    /// still run in it (this one or a fork sharing it), and when it holds changes that are not
    /// committed, unless `force`.
    pub async fn cleanup(
        &self,
        job: &str,
        delete_branch: bool,
        force: bool,
    ) -> Result<JobSnapshot, JobError> {
        let id = JobId::from(job);
        // Marked removed in the same step as the check, so no turn can start in it meanwhile
        // (a reply to a job whose worktree is removed is refused); unmarked if it stays.
        let mut taken = None;
        let after = self
            .transact(|tx| {
                let worktree = removable_worktree(tx.state(), &id)?;
                tx.mark_worktree(&worktree.path, |w| w.removed = true);
                taken = Some(worktree);
                Ok(())
            })
            .await?;
        self.publish(after);
        let Some(worktree) = taken else {
            return self.inner.lock().snapshot(&id);
        };
        if let Err(e) = worktree::remove(&worktree, force).await {
            let after = self
                .transact(|tx| {
                    tx.mark_worktree(&worktree.path, |w| w.removed = false);
                    Ok(())
                })
                .await?;
            self.publish(after);
            return Err(JobError::InvalidArgument(e));
        }
        if delete_branch {
            worktree::delete_branch(&worktree).await.map_err(|e| {
                JobError::InvalidArgument(format!(
                    "the worktree is removed, but its branch {} stays: {e}",
                    worktree.branch
                ))
            })?;
            let after = self
                .transact(|tx| {
                    tx.mark_worktree(&worktree.path, |w| w.branch_deleted = true);
                    Ok(())
                })
                .await?;
            self.publish(after);
        }
        self.inner.lock().snapshot(&id)
    }

    /// Jobs, newest first.
    pub fn list(&self, status: Option<JobStatus>, limit: usize) -> Vec<JobSummary> {
        let state = self.inner.lock();
        state
            .order
            .iter()
            .rev()
            .filter_map(|id| state.jobs.get(id))
            .filter(|j| status.is_none_or(|s| j.record.status == s))
            .take(limit)
            .map(|j| JobSummary {
                job_id: j.record.id.clone(),
                status: j.record.status,
                thread_id: j.record.thread_id.clone(),
                created_at: j.record.created_at.clone(),
                updated_at: j.record.updated_at.clone(),
                turns: j.record.turns,
                cwd: j.record.options.cwd.clone(),
                prompt: text::shorten(&j.record.prompt, LIST_TEXT_CHARS),
                last_message: j
                    .record
                    .last_message
                    .as_deref()
                    .map(|m| text::shorten(m, LIST_TEXT_CHARS)),
                usage: Some(j.record.usage).filter(|u| *u != TokenUsage::default()),
                forked_from: j.record.forked_from.clone(),
                worktree: j.record.live_worktree().map(|w| w.path.clone()),
                branch: j.record.branch().map(str::to_owned),
            })
            .collect()
    }

    /// Takes no more turns from now on: nothing new is queued, and no turn goes to Codex (so no
    /// Codex is started). The first step of shutdown, taken as soon as it is decided.
    pub async fn stop_taking_turns(&self) {
        if self.inner.stopping.is_cancelled() {
            return;
        }
        match self
            .transact(|tx| {
                tx.stop_accepting();
                Ok(())
            })
            .await
        {
            Ok(after) => self.publish_and_dispatch(after),
            Err(e) => tracing::error!(error = %e, "could not stop taking turns"),
        }
        self.inner.stopping.cancel();
    }

    /// Stops the engine: takes no more turns, stops Codex, applies every report Codex sent
    /// before it stopped, settles what is still open as `interrupted`, and waits for its tasks.
    /// `hurry` (a second signal) cuts the waiting short; the settling always happens.
    pub async fn shutdown(&self, hurry: CancellationToken) {
        self.stop_taking_turns().await;
        let reports = self.inner.reports_lock().take();
        let last_words = async {
            self.inner.backend.shutdown().await;
            self.inner.drained.cancel();
            if let Some(reports) = reports {
                let _ = reports.await;
            }
        };
        tokio::select! {
            biased;
            () = last_words => {}
            () = hurry.cancelled() => tracing::warn!("stopping without Codex's last reports"),
            () = tokio::time::sleep(SHUTDOWN_PATIENCE) => {
                tracing::warn!("Codex's last reports did not arrive in time");
            }
        }
        let settled = self
            .transact(|tx| tx.interrupt_open_turns("the server shut down"))
            .await;
        match settled {
            Ok(after) => drop(self.publish(after)),
            Err(e) => tracing::error!(error = %e, "could not save the interrupted jobs"),
        }
        self.inner.tasks.close();
        tokio::select! {
            () = self.inner.tasks.wait() => {}
            () = hurry.cancelled() => {}
            () = tokio::time::sleep(SHUTDOWN_PATIENCE) => {
                tracing::warn!("engine tasks did not finish in time");
            }
        }
    }

    /// Deletes settled jobs not updated within the retention period, with their events and
    /// notifications.
    pub async fn purge_expired(&self) -> Result<usize, JobError> {
        let cutoff = SystemTime::now()
            .checked_sub(self.inner.settings.retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.purge_updated_before(cutoff).await
    }

    /// Deletes settled jobs last updated before `cutoff`.
    pub(crate) async fn purge_updated_before(&self, cutoff: SystemTime) -> Result<usize, JobError> {
        let mut expired = Vec::new();
        let mut worktrees = Vec::new();
        let after = self
            .transact(|tx| {
                let records = tx.state().jobs.values().map(|j| &j.record);
                expired = expired_jobs(records, cutoff);
                worktrees = unused_worktrees(tx.state(), &expired);
                expired.iter().for_each(|id| tx.delete(id));
                Ok(())
            })
            .await?;
        self.publish(after);
        if !worktrees.is_empty() {
            // Without force: a worktree with uncommitted work stays, and says so in the log.
            self.inner.tasks.spawn(async move {
                for worktree in worktrees {
                    match worktree::remove(&worktree, false).await {
                        Ok(()) => tracing::info!(path = %worktree.path, "removed an expired job's worktree"),
                        Err(e) => tracing::warn!(path = %worktree.path, error = %e, "kept an expired job's worktree"),
                    }
                }
            });
        }
        for id in &expired {
            self.inner.backend.forget(id);
        }
        if !expired.is_empty() {
            tracing::info!(
                expired = expired.len(),
                "deleted jobs past the retention period"
            );
        }
        Ok(expired.len())
    }

    fn resolve_cwd(&self, cwd: Option<&str>) -> Result<String, JobError> {
        let default = &self.inner.settings.default_cwd;
        let Some(cwd) = cwd else {
            return Ok(default.to_string_lossy().into_owned());
        };
        let bad = |problem| JobError::BadCwd {
            path: cwd.to_owned(),
            problem,
            default: default.to_string_lossy().into_owned(),
        };
        let path = Path::new(cwd);
        if !path.is_absolute() {
            return Err(bad("is not an absolute path"));
        }
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => Ok(cwd.to_owned()),
            Ok(_) => Err(bad("is not a directory")),
            Err(_) => Err(bad("does not exist")),
        }
    }

    /// Hands turns to the backend. A turn Codex did not take ends as failed; one cancelled or
    /// ended while Codex was taking it is stopped there too.
    pub(super) async fn hand_over(&self, turns: Vec<TurnInput>) {
        for input in turns {
            let turn = input.turn.clone();
            let lock = self.inner.handover_lock(&turn.job);
            let held = lock.lock().await;
            self.hand_over_one(input).await;
            drop(held);
            self.inner.release_handover_lock(&turn.job, lock);
        }
    }

    async fn hand_over_one(&self, input: TurnInput) {
        let turn = input.turn.clone();
        let still_open = self
            .inner
            .lock()
            .job(&turn.job)
            .is_ok_and(|j| j.takes_reports_for(turn.turn));
        // Ended (cancelled before Codex heard of it) or shutting down: nothing to hand over.
        if !still_open || self.inner.stopping.is_cancelled() {
            return;
        }
        self.watch_clock(turn.clone());
        let handed = self.inner.backend.start_turn(input).await;
        let mut stop = false;
        let saved = match handed {
            Ok(thread_id) => {
                self.transact(|tx| {
                    if let Some(thread_id) = thread_id {
                        tx.name_thread(&turn.job, thread_id)?;
                    }
                    stop = tx.handed_over(&turn)?;
                    Ok(())
                })
                .await
            }
            // Shutdown settles the turn (and a hand-over that failed because shutdown stopped
            // Codex under it is no failure of the turn's).
            Err(BackendError::ShuttingDown) => Ok(AfterCommit::default()),
            Err(_) if self.inner.stopping.is_cancelled() => Ok(AfterCommit::default()),
            Err(e) => {
                let error = format!("could not hand the turn to Codex: {e}");
                self.transact(|tx| {
                    let data = json!({"error": error});
                    let announce = Announce {
                        error: Some(error.clone()),
                        ..Announce::default()
                    };
                    tx.end_turn(
                        &turn,
                        Outcome::Failed,
                        EventKind::TurnFailed,
                        data,
                        announce,
                    )
                    .map(drop)
                })
                .await
            }
        };
        match saved {
            Ok(after) => self.publish_and_dispatch(after),
            Err(e) => tracing::error!(%turn, error = %e, "could not update the job"),
        }
        if stop {
            // Cancelled while Codex was taking it, or ended meanwhile: stop it there too.
            let grace = self.inner.settings.cancel_grace;
            match tokio::time::timeout(grace, self.inner.backend.interrupt(&turn)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%turn, error = %e, "could not stop the turn"),
                Err(_) => tracing::warn!(%turn, "codex did not answer the interrupt in time"),
            }
        }
    }
}

/// Removes the worktree made for `record` (`isolation` says it was made for it, not shared with
/// a forked job), whose job was not made after all.
async fn discard_worktree(record: &JobRecord, isolation: Isolation) {
    if let Some(made) = record
        .live_worktree()
        .filter(|_| isolation == Isolation::Worktree)
        && let Err(e) = worktree::remove(made, true).await
    {
        tracing::warn!(path = %made.path, error = %e, "could not remove the worktree of a job not made");
    }
}

/// Job `id`'s worktree, if `job_cleanup` may remove it: it has one, not removed yet, and no job
/// that runs in it is queued or running.
fn removable_worktree(state: &State, id: &JobId) -> Result<Worktree, JobError> {
    let Some(worktree) = state.job(id)?.record.worktree.clone() else {
        return Err(JobError::InvalidArgument(format!(
            "job {id} has no worktree: it did not run with isolation \"worktree\""
        )));
    };
    if worktree.removed {
        return Err(JobError::InvalidArgument(format!(
            "job {id}'s worktree {} is removed already",
            worktree.path
        )));
    }
    let user = state.jobs.values().find(|j| {
        !j.record.status.is_settled()
            && j.record
                .live_worktree()
                .is_some_and(|w| w.path == worktree.path)
    });
    if let Some(user) = user {
        return Err(JobError::InvalidArgument(format!(
            "job {} is {} in worktree {}; wait for it to settle (job_wait) or cancel it \
             (job_cancel), then clean up",
            user.record.id, user.record.status, worktree.path
        )));
    }
    Ok(worktree)
}

/// The live worktrees of the `expired` jobs that no job staying behind runs in.
fn unused_worktrees(state: &State, expired: &[JobId]) -> Vec<Worktree> {
    let mut unused: Vec<Worktree> = Vec::new();
    for id in expired {
        let Some(worktree) = state.jobs.get(id).and_then(|j| j.record.live_worktree()) else {
            continue;
        };
        let kept_user = state.jobs.values().any(|j| {
            !expired.contains(&j.record.id)
                && j.record
                    .live_worktree()
                    .is_some_and(|w| w.path == worktree.path)
        });
        if !kept_user && !unused.iter().any(|w| w.path == worktree.path) {
            unused.push(worktree.clone());
        }
    }
    unused
}

/// The job a new job forks, and what it takes from it.
struct Fork {
    job: JobId,
    thread: String,
    /// The forked job's worktree, which the fork shares unless it asks for its own.
    worktree: Option<Worktree>,
}

/// Refuses a `config` nested so deeply that the saved job could not be read back.
fn check_depth(config: &serde_json::Map<String, serde_json::Value>) -> Result<(), JobError> {
    fn depth(value: &serde_json::Value) -> usize {
        match value {
            serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    let deepest = 1 + config.values().map(depth).max().unwrap_or(0);
    if deepest > MAX_CONFIG_DEPTH {
        return Err(JobError::InvalidArgument(format!(
            "config nests {deepest} levels deep; at most {MAX_CONFIG_DEPTH} are accepted. Pass \
             Codex config overrides as in config.toml, e.g. {{\"model_reasoning_effort\": \"high\"}}"
        )));
    }
    Ok(())
}

impl Inner {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving with it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn reports_lock(&self) -> MutexGuard<'_, Option<JoinHandle<()>>> {
        self.reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn handover_lock(&self, job: &JobId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .handovers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(job.clone()).or_default().clone()
    }

    /// Drops the job's hand-over lock once nobody else holds or waits for it.
    fn release_handover_lock(&self, job: &JobId, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self
            .handovers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(lock);
        if locks.get(job).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(job);
        }
    }
}

/// The jobs among `records` that a purge of everything last updated before `cutoff` deletes:
/// the settled ones (a job still running or waiting is never deleted).
pub fn expired_jobs<'a>(
    records: impl Iterator<Item = &'a JobRecord>,
    cutoff: SystemTime,
) -> Vec<JobId> {
    // RFC 3339 in UTC with fixed precision sorts like the times it names.
    let cutoff = humantime::format_rfc3339_millis(cutoff).to_string();
    records
        .filter(|record| record.status.is_settled() && record.updated_at < cutoff)
        .map(|record| record.id.clone())
        .collect()
}
