//! [`JobManager`]: the state of every job, changed in one place.
//!
//! Every status change goes through [`Inner::commit_status`] (derive the status from the facts,
//! write the record) or, when a turn ends, [`Inner::end_turn`] (which also records the closing
//! event and the notification and frees the slot). Both run under the state lock and return an
//! [`AfterCommit`]: waiters are woken and queued turns handed to Codex only after the lock is
//! released. The backend's reports are applied by one task in
//! the order the backend sent them, so a job's events get their `seq` in the order Codex wrote them.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::model::{Event, EventKind, JobId, JobRecord, JobStatus, Notification, ThreadOptions};
use super::status::{self, Facts, Outcome};
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

struct State {
    jobs: HashMap<JobId, JobState>,
    /// Job ids, oldest first.
    order: Vec<JobId>,
    by_client_request: HashMap<String, JobId>,
    /// Jobs whose next turn waits for a slot, first come first served.
    queue: VecDeque<JobId>,
    /// Turns holding a slot.
    running: usize,
    last_notification: u64,
    accepting: bool,
}

struct JobState {
    record: JobRecord,
    facts: Facts,
    /// The turn waiting in the queue.
    queued_turn: Option<TurnInput>,
    /// The seq of the job's newest notification.
    last_notification: Option<u64>,
}

/// A job's status change that the feed announces.
struct Announce {
    result: Option<String>,
    error: Option<String>,
}

/// What to do once the state lock is released.
#[derive(Default)]
#[must_use]
struct AfterCommit {
    notified: Option<u64>,
    dispatch: Vec<(JobId, TurnInput)>,
}

impl JobManager {
    /// Builds the engine and starts applying the backend's reports from `events`.
    pub fn new(
        store: Arc<dyn Store>,
        backend: Arc<dyn Backend>,
        settings: EngineSettings,
        mut events: mpsc::Receiver<BackendEvent>,
    ) -> Self {
        let (feed, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                jobs: HashMap::new(),
                order: Vec::new(),
                by_client_request: HashMap::new(),
                queue: VecDeque::new(),
                running: 0,
                last_notification: 0,
                accepting: true,
            }),
            store,
            backend,
            settings,
            feed,
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let Some(inner) = weak.upgrade() else { break };
                JobManager { inner }.apply(event);
            }
        });
        Self { inner }
    }

    pub fn backend_info(&self) -> crate::codex::BackendInfo {
        self.inner.backend.info()
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
            thread: ThreadRef::New(options.clone()),
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
        let dispatch = {
            let mut state = self.inner.lock();
            if !state.accepting {
                return Err(JobError::ShuttingDown);
            }
            if let Some(existing) = request
                .client_request_id
                .as_ref()
                .and_then(|key| state.by_client_request.get(key))
            {
                let existing = existing.clone();
                return state.snapshot(&existing);
            }
            self.inner.store.put_job(&record)?;
            if let Some(key) = request.client_request_id {
                state.by_client_request.insert(key, id.clone());
            }
            state.order.push(id.clone());
            state.jobs.insert(
                id.clone(),
                JobState {
                    record,
                    facts: Facts::default(),
                    queued_turn: None,
                    last_notification: None,
                },
            );
            self.inner.enqueue_turn(&mut state, &id, input)?
        };
        self.hand_over(dispatch).await;
        self.inner.lock().snapshot(&id)
    }

    /// Starts a new turn in the job's Codex thread.
    pub async fn reply(&self, job: &str, prompt: String) -> Result<JobSnapshot, JobError> {
        if prompt.trim().is_empty() {
            return Err(JobError::MissingPrompt);
        }
        let id = JobId::from(job);
        let dispatch = {
            let mut state = self.inner.lock();
            if !state.accepting {
                return Err(JobError::ShuttingDown);
            }
            let entry = state.job(&id)?;
            let status = entry.record.status;
            if !status.is_settled() {
                return Err(JobError::ReplyWhileRunning {
                    job: id,
                    status,
                    turn: entry.record.turns,
                });
            }
            let Some(thread_id) = entry.record.thread_id.clone() else {
                return Err(JobError::NoThread { job: id });
            };
            let entry = state.job_mut(&id)?;
            entry.record.turns += 1;
            let input = TurnInput {
                prompt,
                thread: ThreadRef::Existing(thread_id),
            };
            self.inner.enqueue_turn(&mut state, &id, input)?
        };
        self.hand_over(dispatch).await;
        self.inner.lock().snapshot(&id)
    }

    /// Stops the job's queued or running turn and returns the job settled as `cancelled`.
    pub async fn cancel(&self, job: &str) -> Result<JobSnapshot, JobError> {
        let id = JobId::from(job);
        let mut feed = self.inner.feed.subscribe();
        {
            let mut state = self.inner.lock();
            let entry = state.job_mut(&id)?;
            let status = entry.record.status;
            if status.is_settled() {
                return Err(JobError::AlreadySettled { job: id, status });
            }
            if entry.facts.queued {
                // Under the same lock as the check, so the queue cannot hand it to Codex first.
                state.queue.retain(|queued| queued != &id);
                let reason = "cancelled with job_cancel before the turn started";
                let after = self.inner.end_turn(
                    &mut state,
                    &id,
                    Outcome::Cancelled,
                    EventKind::TurnCancelled,
                    json!({"reason": reason}),
                    Announce {
                        result: None,
                        error: None,
                    },
                )?;
                drop(state);
                self.after_commit(after);
                return self.inner.lock().snapshot(&id);
            }
            entry.facts.cancel_requested = true;
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
        self.force_end(&id, Outcome::Cancelled, EventKind::TurnCancelled, reason);
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
        let unfinished: Vec<JobId> = {
            let mut state = self.inner.lock();
            state.accepting = false;
            state.queue.clear();
            state
                .jobs
                .values()
                .filter(|j| !j.record.status.is_settled())
                .map(|j| j.record.id.clone())
                .collect()
        };
        for id in unfinished {
            self.force_end(
                &id,
                Outcome::Interrupted,
                EventKind::TurnInterrupted,
                "the server shut down while the turn was running".to_owned(),
            );
        }
        self.inner.backend.shutdown().await;
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

    /// Applies one report of the backend.
    fn apply(&self, event: BackendEvent) {
        let after = {
            let mut state = self.inner.lock();
            let BackendEvent { job, update } = event;
            let Some(entry) = state.jobs.get_mut(&job) else {
                tracing::debug!(%job, "report for an unknown job; ignored");
                return;
            };
            let result = match update {
                Update::Event { kind, data } => self
                    .inner
                    .record(entry, kind, data)
                    .map(|()| AfterCommit::default()),
                Update::Thread { thread_id, data } => {
                    entry.record.thread_id = Some(thread_id);
                    self.inner
                        .record(entry, EventKind::ThreadStarted, data)
                        .map(|()| AfterCommit::default())
                }
                Update::TurnEnded(end) if !entry.facts.turn_running => {
                    tracing::debug!(%job, ?end, "turn end for a turn already settled; ignored");
                    Ok(AfterCommit::default())
                }
                Update::TurnEnded(end) => {
                    let cancelled = entry.facts.cancel_requested;
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
                    self.inner
                        .end_turn(&mut state, &job, outcome, kind, data, announce)
                }
            };
            match result {
                Ok(after) => after,
                Err(e) => {
                    tracing::error!(%job, error = %e, "could not record a codex event");
                    return;
                }
            }
        };
        self.after_commit(after);
    }

    /// Ends the job's unfinished turn without Codex's word (cancel timeout, shutdown).
    fn force_end(&self, id: &JobId, outcome: Outcome, kind: EventKind, reason: String) {
        let after = {
            let mut state = self.inner.lock();
            let Ok(entry) = state.job(id) else { return };
            if entry.record.status.is_settled() {
                return;
            }
            let error = (outcome != Outcome::Cancelled).then(|| reason.clone());
            state.queue.retain(|queued| queued != id);
            self.inner.end_turn(
                &mut state,
                id,
                outcome,
                kind,
                json!({"reason": reason}),
                Announce {
                    result: None,
                    error,
                },
            )
        };
        match after {
            Ok(after) => self.after_commit(after),
            Err(e) => tracing::error!(job = %id, error = %e, "could not settle the job"),
        }
    }

    /// Hands turns to the backend. A turn Codex did not take ends as failed.
    async fn hand_over(&self, turns: Vec<(JobId, TurnInput)>) {
        for (id, input) in turns {
            let handed = self.inner.backend.start_turn(&id, input).await;
            let after = {
                let mut state = self.inner.lock();
                match handed {
                    Ok(thread_id) if !state.job(&id).is_ok_and(|j| j.facts.turn_running) => {
                        // Cancelled (or shut down) while Codex was taking it: stop it there too.
                        let manager = self.clone();
                        let job = id.clone();
                        tokio::spawn(async move {
                            let _ = manager.inner.backend.interrupt(&job).await;
                        });
                        self.inner.name_thread(&mut state, &id, thread_id)
                    }
                    Ok(thread_id) => self.inner.name_thread(&mut state, &id, thread_id),
                    Err(e) => {
                        let error = format!("could not hand the turn to Codex: {e}");
                        self.inner.end_turn(
                            &mut state,
                            &id,
                            Outcome::Failed,
                            EventKind::TurnFailed,
                            json!({"error": error}),
                            Announce {
                                result: None,
                                error: Some(error.clone()),
                            },
                        )
                    }
                }
            };
            match after {
                Ok(after) => self.after_commit(after),
                Err(e) => tracing::error!(job = %id, error = %e, "could not update the job"),
            }
        }
    }

    /// Wakes waiters and starts queued turns, with the state lock released.
    fn after_commit(&self, after: AfterCommit) {
        if let Some(seq) = after.notified {
            self.inner.feed.send_replace(seq);
        }
        if !after.dispatch.is_empty() {
            let manager = self.clone();
            tokio::spawn(async move { manager.hand_over(after.dispatch).await });
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

    /// Appends one event to the job's stream.
    fn record(&self, entry: &mut JobState, kind: EventKind, data: Value) -> Result<(), JobError> {
        if let (EventKind::AgentMessage, Some(text)) =
            (kind, data.get("text").and_then(Value::as_str))
        {
            entry.record.last_message = Some(text.to_owned());
        }
        let event = Event {
            seq: entry.record.last_seq + 1,
            kind,
            at: now_rfc3339(),
            turn: entry.record.turns,
            data,
        };
        self.store.append_events(&entry.record.id, &[event])?;
        entry.record.last_seq += 1;
        // The record's other fields change only with these; `last_seq` follows from the events.
        if matches!(kind, EventKind::ThreadStarted | EventKind::AgentMessage) {
            self.store.put_job(&entry.record)?;
        }
        Ok(())
    }

    /// Records the thread id the backend reported when it took the turn, unless the
    /// `thread_started` event already did.
    fn name_thread(
        &self,
        state: &mut State,
        id: &JobId,
        thread_id: Option<String>,
    ) -> Result<AfterCommit, JobError> {
        let entry = state.job_mut(id)?;
        if let (None, Some(thread_id)) = (&entry.record.thread_id, thread_id) {
            entry.record.thread_id = Some(thread_id);
            self.store.put_job(&entry.record)?;
        }
        Ok(AfterCommit::default())
    }

    /// Queues the job's next turn, and takes it out again if a slot is free.
    fn enqueue_turn(
        &self,
        state: &mut State,
        id: &JobId,
        input: TurnInput,
    ) -> Result<Vec<(JobId, TurnInput)>, JobError> {
        let entry = state.job_mut(id)?;
        entry.queued_turn = Some(input);
        entry.facts.queued = true;
        entry.facts.cancel_requested = false;
        self.commit_status(entry)?;
        state.queue.push_back(id.clone());
        self.take_dispatchable(state)
    }

    /// Moves queued turns into free slots; the caller hands them to the backend.
    fn take_dispatchable(&self, state: &mut State) -> Result<Vec<(JobId, TurnInput)>, JobError> {
        let mut ready = Vec::new();
        while state.running < self.settings.max_concurrent_jobs {
            let Some(id) = state.queue.pop_front() else {
                break;
            };
            let Some(entry) = state.jobs.get_mut(&id) else {
                continue;
            };
            let Some(input) = entry.queued_turn.take() else {
                continue;
            };
            entry.facts.queued = false;
            entry.facts.turn_running = true;
            self.commit_status(entry)?;
            state.running += 1;
            ready.push((id, input));
        }
        Ok(ready)
    }

    /// Settles the job's turn: records the closing event, the new status and the notification,
    /// and frees its slot for the next queued turn.
    fn end_turn(
        &self,
        state: &mut State,
        id: &JobId,
        outcome: Outcome,
        kind: EventKind,
        data: Value,
        announce: Announce,
    ) -> Result<AfterCommit, JobError> {
        let seq = state.last_notification + 1;
        let entry = state.job_mut(id)?;
        let held_slot = entry.facts.turn_running;
        self.record(entry, kind, data)?;
        entry.facts.queued = false;
        entry.facts.turn_running = false;
        entry.facts.cancel_requested = false;
        entry.facts.outcome = Some(outcome);
        entry.queued_turn = None;
        if let Some(result) = &announce.result {
            entry.record.last_message = Some(result.clone());
        }
        entry.record.error = announce.error.clone();
        self.commit_status(entry)?;
        let notification = Notification {
            seq,
            job_id: id.clone(),
            turn: entry.record.turns,
            status: entry.record.status,
            at: now_rfc3339(),
            result: announce.result,
            error: announce.error,
        };
        self.store.append_notification(&notification)?;
        entry.last_notification = Some(seq);
        state.last_notification = seq;
        if held_slot {
            state.running = state.running.saturating_sub(1);
        }
        let dispatch = if state.accepting {
            self.take_dispatchable(state)?
        } else {
            Vec::new()
        };
        Ok(AfterCommit {
            notified: Some(seq),
            dispatch,
        })
    }

    /// Derives the status from the facts and writes the record.
    fn commit_status(&self, entry: &mut JobState) -> Result<(), JobError> {
        entry.record.status = status::derive(&entry.facts);
        entry.record.updated_at = now_rfc3339();
        self.store.put_job(&entry.record)?;
        Ok(())
    }
}

impl State {
    fn job(&self, id: &JobId) -> Result<&JobState, JobError> {
        self.jobs
            .get(id)
            .ok_or_else(|| JobError::UnknownJob(id.to_string()))
    }

    fn job_mut(&mut self, id: &JobId) -> Result<&mut JobState, JobError> {
        self.jobs
            .get_mut(id)
            .ok_or_else(|| JobError::UnknownJob(id.to_string()))
    }

    fn snapshot(&self, id: &JobId) -> Result<JobSnapshot, JobError> {
        let record = &self.job(id)?.record;
        Ok(JobSnapshot {
            job_id: record.id.clone(),
            status: record.status,
            thread_id: record.thread_id.clone(),
            turn: record.turns,
            cursor: record.last_seq,
            result: (record.status == JobStatus::Completed)
                .then(|| record.last_message.clone())
                .flatten(),
            error: record.error.clone(),
        })
    }
}
