//! [`JobManager`]: the engine's API, on top of the state and its transactions ([`super::state`]).
//!
//! Every status change goes through [`Inner::commit_status`] (derive the status from the facts,
//! write the record) or, when a turn ends, [`Inner::end_turn`] (which also records the closing
//! event and the notification and frees the slot). Both run under the state lock and return an
//! [`AfterCommit`]: waiters are woken and queued turns handed to Codex only after the lock is
//! released. The backend's reports are applied by one task in
//! the order the backend sent them, so a job's events get their `seq` in the order Codex wrote them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::model::{Event, EventKind, JobId, JobRecord, JobStatus, Notification, ThreadOptions};
use super::state::{AfterCommit, Announce, JobState, State, Tx};
use super::status::Outcome;
use super::{JobError, text};
use crate::codex::{Backend, BackendEvent, ThreadRef, TurnEnd, TurnInput, Update};
use crate::store::{EventQuery, Store};
use crate::time::now_rfc3339;

/// How long `job_list` lets the prompt and the last message be.
const LIST_TEXT_CHARS: usize = 200;

#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Turns running in Codex at once; more wait in the queue.
    pub max_concurrent_jobs: usize,
    /// How long Codex gets to confirm an interrupt before the job is settled without it.
    pub cancel_grace: Duration,
    /// The cwd of jobs that name none.
    pub default_cwd: PathBuf,
    /// Settled jobs not updated for this long are deleted, with their events.
    pub retention: Duration,
}

/// What `job_start` asks for.
#[derive(Clone, Debug, Default)]
pub struct StartRequest {
    pub prompt: String,
    pub cwd: Option<String>,
    pub model: Option<String>,
    pub profile: Option<String>,
    pub approval_policy: Option<String>,
    pub sandbox: Option<String>,
    pub config: Option<serde_json::Map<String, Value>>,
    pub base_instructions: Option<String>,
    pub developer_instructions: Option<String>,
    pub client_request_id: Option<String>,
}

/// A job as `job_start`, `job_reply` and `job_cancel` report it.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct JobSnapshot {
    pub job_id: JobId,
    pub status: JobStatus,
    /// Codex's thread id, once Codex has started the thread.
    pub thread_id: Option<String>,
    /// The current (or latest) turn, counting from 1.
    pub turn: u32,
    /// The seq of the job's newest event: pass it to job_events to read only what follows.
    pub cursor: u64,
    /// The last agent message of the latest finished turn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A job as `job_list` shows it.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct JobSummary {
    pub job_id: JobId,
    pub status: JobStatus,
    pub thread_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub turns: u32,
    pub cwd: String,
    /// The first prompt, shortened.
    pub prompt: String,
    /// The last agent message, shortened.
    pub last_message: Option<String>,
}

/// A page of a job's events with the job's state.
#[derive(Clone, Debug)]
pub struct EventsAnswer {
    pub snapshot: JobSnapshot,
    pub events: Vec<Event>,
    pub cursor: u64,
    pub has_more: bool,
}

#[derive(Clone, Debug)]
pub struct WaitAnswer {
    pub notifications: Vec<Notification>,
    pub cursor: u64,
    pub timed_out: bool,
}

#[derive(Clone)]
pub struct JobManager {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    store: Arc<dyn Store>,
    backend: Arc<dyn Backend>,
    settings: EngineSettings,
    /// The seq of the newest notification; waiters watch it.
    feed: watch::Sender<u64>,
}

/// How many backend reports are saved in one transaction at most.
const APPLY_BATCH: usize = 256;

impl JobManager {
    /// Builds the engine from what the store holds: turns that were unfinished when the last
    /// server went away are settled as `interrupted`, and expired jobs deleted. Then it starts
    /// applying the backend's reports from `events` and deleting expired jobs periodically.
    pub fn open(
        store: Arc<dyn Store>,
        backend: Arc<dyn Backend>,
        settings: EngineSettings,
        mut events: mpsc::Receiver<BackendEvent>,
    ) -> Result<Self, JobError> {
        let loaded = store.load()?;
        let mut state = State::new(loaded.last_notification);
        let mut unfinished = Vec::new();
        for job in loaded.jobs {
            let mut entry = JobState::new(job.record, job.last_notification);
            entry.facts.outcome = match entry.record.status {
                JobStatus::Completed => Some(Outcome::Completed),
                JobStatus::Failed => Some(Outcome::Failed),
                JobStatus::Cancelled => Some(Outcome::Cancelled),
                JobStatus::Interrupted => Some(Outcome::Interrupted),
                JobStatus::Queued | JobStatus::Running | JobStatus::InputRequired => {
                    unfinished.push(entry.record.id.clone());
                    None
                }
            };
            state.order.push(entry.record.id.clone());
            if let Some(key) = &entry.record.client_request_id {
                state
                    .by_client_request
                    .insert(key.clone(), entry.record.id.clone());
            }
            state.jobs.insert(entry.record.id.clone(), entry);
        }
        let (feed, _) = watch::channel(state.last_notification);
        let manager = Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                store,
                backend,
                settings,
                feed,
            }),
        };
        let reason = "the server stopped while this turn was running (it was restarted or it \
                      crashed), so Codex may not have finished it";
        let after = manager.transact(|tx| {
            for id in &unfinished {
                tx.settle(
                    id,
                    Outcome::Interrupted,
                    EventKind::TurnInterrupted,
                    reason.to_owned(),
                )?;
            }
            Ok(())
        })?;
        manager.publish(after);
        manager.purge_expired()?;

        let weak: Weak<Inner> = Arc::downgrade(&manager.inner);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(APPLY_BATCH);
            while events.recv_many(&mut batch, APPLY_BATCH).await > 0 {
                let Some(inner) = weak.upgrade() else { break };
                JobManager { inner }.apply(std::mem::take(&mut batch));
            }
        });
        let weak: Weak<Inner> = Arc::downgrade(&manager.inner);
        let every = (manager.inner.settings.retention / 10)
            .clamp(Duration::from_secs(1), Duration::from_secs(3600));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                if let Err(e) = (JobManager { inner }).purge_expired() {
                    tracing::error!(error = %e, "could not delete expired jobs");
                }
            }
        });
        Ok(manager)
    }

    pub fn backend_info(&self) -> crate::codex::BackendInfo {
        self.inner.backend.info()
    }

    /// Turns running in Codex now.
    pub fn running_count(&self) -> usize {
        self.inner.lock().running
    }

    /// Runs `change` on the state as one saved transaction.
    fn transact(
        &self,
        change: impl FnOnce(&mut Tx<'_>) -> Result<(), JobError>,
    ) -> Result<AfterCommit, JobError> {
        let mut state = self.inner.lock();
        let mut tx = Tx::new(&mut state, self.inner.settings.max_concurrent_jobs);
        change(&mut tx)?;
        tx.commit(&*self.inner.store)
    }

    /// Wakes waiters; returns the turns to hand to Codex.
    fn publish(&self, after: AfterCommit) -> Vec<(JobId, TurnInput)> {
        if let Some(seq) = after.notified {
            self.inner.feed.send_replace(seq);
        }
        after.dispatch
    }

    /// Wakes waiters and hands newly running turns to Codex in the background.
    fn publish_and_dispatch(&self, after: AfterCommit) {
        let dispatch = self.publish(after);
        if !dispatch.is_empty() {
            let manager = self.clone();
            tokio::spawn(async move { manager.hand_over(dispatch).await });
        }
    }

    /// Registers a job and hands its first turn to Codex, or queues it when every slot is taken.
    pub async fn start(&self, request: StartRequest) -> Result<JobSnapshot, JobError> {
        if request.prompt.trim().is_empty() {
            return Err(JobError::MissingPrompt);
        }
        let options = ThreadOptions {
            cwd: self.resolve_cwd(request.cwd.as_deref())?,
            model: request.model,
            profile: request.profile,
            approval_policy: request.approval_policy,
            sandbox: request.sandbox,
            config: request.config,
            base_instructions: request.base_instructions,
            developer_instructions: request.developer_instructions,
        };
        self.inner
            .backend
            .validate(&options)
            .map_err(JobError::InvalidArgument)?;
        let now = now_rfc3339();
        let id = JobId::generate();
        let input = TurnInput {
            prompt: request.prompt.clone(),
            thread: ThreadRef::New,
            options: options.clone(),
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
        };
        let mut existing = None;
        let after = self.transact(|tx| {
            if !tx.state().accepting {
                return Err(JobError::ShuttingDown);
            }
            existing = request
                .client_request_id
                .as_ref()
                .and_then(|key| tx.state().by_client_request.get(key))
                .cloned();
            if existing.is_none() {
                tx.create(JobState::new(record, None));
                tx.enqueue_turn(&id, input)?;
            }
            Ok(())
        })?;
        if let Some(existing) = existing {
            return self.inner.lock().snapshot(&existing);
        }
        let dispatch = self.publish(after);
        self.hand_over(dispatch).await;
        self.inner.lock().snapshot(&id)
    }

    /// Starts a new turn in the job's Codex thread.
    pub async fn reply(&self, job: &str, prompt: String) -> Result<JobSnapshot, JobError> {
        if prompt.trim().is_empty() {
            return Err(JobError::MissingPrompt);
        }
        let id = JobId::from(job);
        let thread_id = self.inner.lock().job(&id)?.record.thread_id.clone();
        if let Some(thread_id) = thread_id
            && let Err(reason) = self.inner.backend.can_continue(&thread_id).await
        {
            return Err(JobError::CannotContinue { job: id, reason });
        }
        let after = self.transact(|tx| {
            if !tx.state().accepting {
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
            entry.record.turns += 1;
            let input = TurnInput {
                prompt,
                thread: ThreadRef::Existing(thread_id),
                options: entry.record.options.clone(),
            };
            tx.enqueue_turn(&id, input)
        })?;
        let dispatch = self.publish(after);
        self.hand_over(dispatch).await;
        self.inner.lock().snapshot(&id)
    }

    /// Stops the job's queued or running turn and returns the job settled as `cancelled`.
    pub async fn cancel(&self, job: &str) -> Result<JobSnapshot, JobError> {
        let id = JobId::from(job);
        let mut feed = self.inner.feed.subscribe();
        let mut queued = false;
        let after = self.transact(|tx| {
            let entry = tx.job(&id)?;
            let status = entry.record.status;
            if status.is_settled() {
                return Err(JobError::AlreadySettled {
                    job: id.clone(),
                    status,
                });
            }
            queued = entry.facts.queued;
            if queued {
                // In the same transaction as the check, so the queue cannot hand it over first.
                let reason = "cancelled with job_cancel before the turn started".to_owned();
                tx.settle(&id, Outcome::Cancelled, EventKind::TurnCancelled, reason)
            } else {
                entry.facts.cancel_requested = true;
                Ok(())
            }
        })?;
        self.publish_and_dispatch(after);
        if queued {
            return self.inner.lock().snapshot(&id);
        }
        let reason = match self.inner.backend.interrupt(&id).await {
            Ok(()) => {
                // Codex confirms with the turn's end, which settles the job as cancelled.
                let settled = async {
                    while self
                        .inner
                        .lock()
                        .job(&id)
                        .is_ok_and(|j| !j.record.status.is_settled())
                    {
                        if feed.changed().await.is_err() {
                            return;
                        }
                    }
                };
                let _ = tokio::time::timeout(self.inner.settings.cancel_grace, settled).await;
                format!(
                    "cancelled with job_cancel; Codex did not confirm the interrupt within {} s",
                    self.inner.settings.cancel_grace.as_secs_f32()
                )
            }
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "could not interrupt the turn in codex");
                format!("cancelled with job_cancel; Codex could not be told: {e}")
            }
        };
        // Does nothing when Codex's confirmation settled the job already.
        self.settle(&id, Outcome::Cancelled, EventKind::TurnCancelled, reason)?;
        self.inner.lock().snapshot(&id)
    }

    /// A page of the job's events, with the job's state.
    pub fn events(&self, job: &str, query: &EventQuery) -> Result<EventsAnswer, JobError> {
        let id = JobId::from(job);
        let snapshot = self.inner.lock().snapshot(&id)?;
        if query.after > snapshot.cursor {
            return Err(JobError::EventCursorOutOfRange {
                job: id,
                cursor: query.after,
                last: snapshot.cursor,
            });
        }
        let page = self.inner.store.read_events(&id, query)?;
        Ok(EventsAnswer {
            snapshot,
            events: page.events,
            cursor: page.cursor,
            has_more: page.has_more,
        })
    }

    /// Feed entries after `cursor`, for one job or all; never waits.
    pub fn notifications(
        &self,
        cursor: u64,
        job: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Notification>, u64), JobError> {
        let (last, job) = {
            let state = self.inner.lock();
            let job = job.map(|j| state.job(&JobId::from(j)).map(|e| e.record.id.clone()));
            (state.last_notification, job.transpose()?)
        };
        if cursor > last {
            return Err(JobError::FeedCursorOutOfRange { cursor, last });
        }
        let found = self
            .inner
            .store
            .read_notifications(cursor, job.as_ref(), limit)?;
        let next = match found.last() {
            Some(n) if found.len() == limit => n.seq,
            // Nothing more matched up to `last`: the caller may skip past it.
            _ => last,
        };
        Ok((found, next))
    }

    /// Waits until the feed has an entry past `cursor` (for `job` if given), at most `timeout`.
    ///
    /// Without a cursor it waits for the next entry from now, except that a job that is already
    /// settled answers at once with its latest entry.
    pub async fn wait(
        &self,
        cursor: Option<u64>,
        job: Option<&str>,
        timeout: Duration,
    ) -> Result<WaitAnswer, JobError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut feed = self.inner.feed.subscribe();
        let (after, job) = {
            let state = self.inner.lock();
            let last = state.last_notification;
            let job = match job {
                Some(j) => Some(state.job(&JobId::from(j))?),
                None => None,
            };
            match (cursor, job) {
                (Some(cursor), _) if cursor > last => {
                    return Err(JobError::FeedCursorOutOfRange { cursor, last });
                }
                (Some(cursor), job) => (cursor, job.map(|j| j.record.id.clone())),
                (None, Some(j)) => match j.last_notification {
                    Some(seq) if j.record.status.is_settled() => {
                        (seq - 1, Some(j.record.id.clone()))
                    }
                    _ => (last, Some(j.record.id.clone())),
                },
                (None, None) => (last, None),
            }
        };
        loop {
            let last = *feed.borrow_and_update();
            let found = self
                .inner
                .store
                .read_notifications(after, job.as_ref(), 100)?;
            if let Some(newest) = found.last() {
                return Ok(WaitAnswer {
                    cursor: newest.seq,
                    notifications: found,
                    timed_out: false,
                });
            }
            tokio::select! {
                changed = feed.changed() => {
                    if changed.is_err() {
                        return Ok(WaitAnswer { notifications: Vec::new(), cursor: last, timed_out: true });
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Ok(WaitAnswer { notifications: Vec::new(), cursor: last.max(after), timed_out: true });
                }
            }
        }
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
            })
            .collect()
    }

    /// Stops taking turns, settles every unfinished one as `interrupted`, and stops Codex.
    pub async fn shutdown(&self) {
        let after = {
            let mut state = self.inner.lock();
            state.accepting = false;
            let unfinished: Vec<JobId> = state
                .jobs
                .values()
                .filter(|j| !j.record.status.is_settled())
                .map(|j| j.record.id.clone())
                .collect();
            let mut tx = Tx::new(&mut state, self.inner.settings.max_concurrent_jobs);
            let reason = "the server shut down while the turn was running";
            unfinished
                .iter()
                .try_for_each(|id| {
                    tx.settle(
                        id,
                        Outcome::Interrupted,
                        EventKind::TurnInterrupted,
                        reason.to_owned(),
                    )
                })
                .and_then(|()| tx.commit(&*self.inner.store))
        };
        match after {
            Ok(after) => {
                self.publish(after);
            }
            Err(e) => tracing::error!(error = %e, "could not save the interrupted jobs"),
        }
        self.inner.backend.shutdown().await;
    }

    /// Deletes settled jobs not updated within the retention period, with their events and
    /// notifications.
    pub fn purge_expired(&self) -> Result<usize, JobError> {
        let cutoff = SystemTime::now()
            .checked_sub(self.inner.settings.retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.purge_updated_before(cutoff)
    }

    /// Deletes settled jobs last updated before `cutoff`.
    pub(crate) fn purge_updated_before(&self, cutoff: SystemTime) -> Result<usize, JobError> {
        // RFC 3339 in UTC with fixed precision sorts like the times it names.
        let cutoff = humantime::format_rfc3339_millis(cutoff).to_string();
        let mut expired = 0;
        let after = self.transact(|tx| {
            let ids: Vec<JobId> = tx
                .state()
                .jobs
                .values()
                .filter(|j| j.record.status.is_settled() && j.record.updated_at < cutoff)
                .map(|j| j.record.id.clone())
                .collect();
            expired = ids.len();
            ids.iter().for_each(|id| tx.delete(id));
            Ok(())
        })?;
        self.publish(after);
        if expired > 0 {
            tracing::info!(expired, "deleted jobs past the retention period");
        }
        Ok(expired)
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

    /// Applies a batch of the backend's reports, saved as one transaction.
    fn apply(&self, batch: Vec<BackendEvent>) {
        let jobs: Vec<JobId> = batch.iter().map(|e| e.job.clone()).collect();
        let applied = self.transact(|tx| {
            for BackendEvent { job, update } in batch {
                if tx.state().job(&job).is_err() {
                    tracing::debug!(%job, "report for an unknown job; ignored");
                    continue;
                }
                apply_one(tx, &job, update)?;
            }
            Ok(())
        });
        match applied {
            Ok(after) => self.publish_and_dispatch(after),
            Err(e) => {
                // Nothing of the batch was saved. Stop the jobs loudly rather than let them run
                // on with a record that has holes.
                tracing::error!(error = %e, "could not save Codex's events; failing the jobs");
                for job in jobs {
                    let reason = format!("the job store could not save Codex's events: {e}");
                    if let Err(e) =
                        self.settle(&job, Outcome::Failed, EventKind::TurnFailed, reason)
                    {
                        tracing::error!(%job, error = %e, "could not settle the job either");
                    }
                    let manager = self.clone();
                    tokio::spawn(async move {
                        let _ = manager.inner.backend.interrupt(&job).await;
                    });
                }
            }
        }
    }

    /// Ends the job's unfinished turn without Codex's word.
    fn settle(
        &self,
        id: &JobId,
        outcome: Outcome,
        kind: EventKind,
        reason: String,
    ) -> Result<(), JobError> {
        let after = self.transact(|tx| tx.settle(id, outcome, kind, reason))?;
        self.publish_and_dispatch(after);
        Ok(())
    }

    /// Hands turns to the backend. A turn Codex did not take ends as failed.
    async fn hand_over(&self, turns: Vec<(JobId, TurnInput)>) {
        for (id, input) in turns {
            let handed = self.inner.backend.start_turn(&id, input).await;
            let settled = match handed {
                Ok(thread_id) => {
                    let cancelled = !self
                        .inner
                        .lock()
                        .job(&id)
                        .is_ok_and(|j| j.facts.turn_running);
                    if cancelled {
                        // Cancelled (or shut down) while Codex was taking it: stop it there too.
                        let _ = self.inner.backend.interrupt(&id).await;
                    }
                    match thread_id {
                        Some(thread_id) => self.transact(|tx| tx.name_thread(&id, thread_id)),
                        None => Ok(AfterCommit::default()),
                    }
                }
                Err(e) => {
                    let error = format!("could not hand the turn to Codex: {e}");
                    self.transact(|tx| {
                        tx.end_turn(
                            &id,
                            Outcome::Failed,
                            EventKind::TurnFailed,
                            json!({"error": error}),
                            Announce {
                                result: None,
                                error: Some(error.clone()),
                            },
                        )
                    })
                }
            };
            match settled {
                Ok(after) => self.publish_and_dispatch(after),
                Err(e) => tracing::error!(job = %id, error = %e, "could not update the job"),
            }
        }
    }
}

/// One report of the backend, as a change to its job.
fn apply_one(tx: &mut Tx<'_>, job: &JobId, update: Update) -> Result<(), JobError> {
    match update {
        Update::Event { kind, data } => tx.record(job, kind, data),
        Update::Thread { thread_id, data } => {
            tx.name_thread(job, thread_id)?;
            tx.record(job, EventKind::ThreadStarted, data)
        }
        Update::TurnEnded(end) => {
            let facts = &tx.job(job)?.facts;
            if !facts.turn_running {
                tracing::debug!(%job, ?end, "turn end for a turn already settled; ignored");
                return Ok(());
            }
            let cancelled = facts.cancel_requested;
            let (outcome, kind, data, announce) = match end {
                TurnEnd::Completed { result, data } => (
                    Outcome::Completed,
                    EventKind::TurnCompleted,
                    merge(json!({"result": result}), data),
                    Announce {
                        result,
                        error: None,
                    },
                ),
                TurnEnd::Failed { error, data } => (
                    Outcome::Failed,
                    EventKind::TurnFailed,
                    merge(json!({"error": error}), data),
                    Announce {
                        result: None,
                        error: Some(error),
                    },
                ),
                TurnEnd::Interrupted { reason, data } if cancelled => (
                    Outcome::Cancelled,
                    EventKind::TurnCancelled,
                    merge(
                        json!({"reason": format!("cancelled with job_cancel; Codex: {reason}")}),
                        data,
                    ),
                    Announce {
                        result: None,
                        error: None,
                    },
                ),
                TurnEnd::Interrupted { reason, data } => {
                    let reason = format!("Codex stopped the turn: {reason}");
                    (
                        Outcome::Interrupted,
                        EventKind::TurnInterrupted,
                        merge(json!({"reason": reason}), data),
                        Announce {
                            result: None,
                            error: Some(reason),
                        },
                    )
                }
            };
            tx.end_turn(job, outcome, kind, data, announce)
        }
    }
}

/// `fields` with the keys of `extra` added.
fn merge(fields: Value, extra: Value) -> Value {
    match (fields, extra) {
        (Value::Object(mut fields), Value::Object(extra)) => {
            fields.extend(extra);
            Value::Object(fields)
        }
        (fields, _) => fields,
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving with it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
