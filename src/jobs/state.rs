//! The engine's state, and the one way to change it: a [`Tx`] that is saved before it is made.
//!
//! A `Tx` works on copies of the jobs it touches and collects the [`Write`]s that describe the
//! change. [`Tx::finish`] parts the writes, which the store saves in one transaction, from the
//! [`Change`] that swaps the copies in once they are saved, so memory never runs ahead of disk:
//! whatever a client can see has been saved, and a failed save leaves the state as it was.
//! Statuses are derived from facts in one place, [`Tx::commit_status`], and a turn ends in one
//! place, [`Tx::end_turn`], which ends only the turn it is told about, and only while that turn
//! is open.
//!
//! Codex's requests wait in their job's `pending` list with the [`Reply`] Codex waits on; a turn
//! that ends drops them, and a dropped reply is a refusal (see [`crate::codex::Update`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::api::Relayed;
use super::recent::{self, Recent};
use super::status::{self, Facts, Outcome};
use super::{JobError, JobSnapshot};
use crate::codex::TurnInput;
use crate::model::{
    Answer, Changes, CodexRequest, DecidedBy, Event, EventKind, JobId, JobRecord, JobStatus,
    JobTurn, Notification, PendingRequest, TokenUsage, Worktree,
};
use crate::store::{Loaded, Write};
use crate::time::now_rfc3339;

pub(super) struct State {
    pub jobs: HashMap<JobId, JobState>,
    /// Job ids, oldest first.
    pub order: Vec<JobId>,
    pub by_client_request: HashMap<String, JobId>,
    /// Jobs whose next turn waits for a slot, first come first served.
    pub queue: VecDeque<JobId>,
    /// Turns holding a slot.
    pub running: usize,
    pub last_notification: u64,
    /// The feed's newest entries, for waits to answer from memory.
    pub recent: Recent<Notification>,
    /// The newest events of each job that is not settled, for pages to answer from memory.
    pub events: HashMap<JobId, Recent<Event>>,
    /// False once shutdown began: no turn is queued or handed over any more.
    pub accepting: bool,
}

#[derive(Clone)]
pub(super) struct JobState {
    pub record: JobRecord,
    pub facts: Facts,
    /// The turn waiting in the queue.
    pub queued_turn: Option<TurnInput>,
    /// The seq of the job's newest notification.
    pub last_notification: Option<u64>,
    /// Why the running turn could not be saved as failed after the store refused Codex's events.
    /// Kept in memory only (nothing can be saved); the turn is settled once a save succeeds, and
    /// Codex's reports about it are dropped meanwhile.
    pub unsaved_failure: Option<String>,
    /// Codex's requests of the running turn that wait for an answer, oldest first.
    pub pending: Vec<Pending>,
    /// Why the running turn is being stopped, once it is.
    pub stop: Option<Stop>,
    /// The time limit of the queued turn, taken by its clock when it runs.
    pub next_limit: Option<Duration>,
    /// The running turn's time limit and how much of it is used.
    pub clock: Option<TurnClock>,
    /// The JSON Schema the open turn's final message must follow.
    pub output_schema: Option<Value>,
    /// The tokens the open turn has used so far.
    pub turn_usage: TokenUsage,
}

/// A request of Codex's that waits for an answer.
#[derive(Clone)]
pub(super) struct Pending {
    pub request: PendingRequest,
    pub reply: Reply,
}

/// Where the answer to one of Codex's requests goes. The copies a [`Tx`] makes share it; it is
/// used once, and when the last copy is dropped unused Codex is refused.
#[derive(Clone)]
pub(super) struct Reply(Arc<Mutex<Option<oneshot::Sender<Answer>>>>);

impl Reply {
    pub fn new(sender: oneshot::Sender<Answer>) -> Self {
        Self(Arc::new(Mutex::new(Some(sender))))
    }

    pub fn send(&self, answer: Answer) {
        let sender = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(sender) = sender
            && sender.send(answer).is_err()
        {
            tracing::debug!("codex's request was answered after its reader left");
        }
    }
}

/// Why a running turn is being stopped; its end, when Codex confirms it, is recorded so.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Stop {
    /// Cancelled, as said (by `job_cancel`, by a `cancel` answer, or by the approval timeout's).
    Cancel(String),
    /// The turn ran out of its time limit.
    TimeLimit(Duration),
}

impl Stop {
    /// How the stopped turn ends.
    pub fn outcome(&self) -> (Outcome, EventKind) {
        match self {
            Stop::Cancel(_) => (Outcome::Cancelled, EventKind::TurnCancelled),
            Stop::TimeLimit(_) => (Outcome::Failed, EventKind::TurnFailed),
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Stop::Cancel(how) => how.clone(),
            Stop::TimeLimit(limit) => format!(
                "the turn ran longer than its max_turn_seconds ({} s, not counting time spent \
                 waiting for answers to Codex's requests) and was stopped",
                limit.as_secs()
            ),
        }
    }

    /// Who decided the requests the stop answers.
    pub fn decided_by(&self) -> DecidedBy {
        match self {
            Stop::Cancel(_) => DecidedBy::Client,
            Stop::TimeLimit(_) => DecidedBy::Timeout,
        }
    }
}

/// A running turn's time limit. It runs while the turn runs and no request of Codex's waits for
/// an answer.
#[derive(Clone, Copy, Debug)]
pub(super) struct TurnClock {
    pub limit: Duration,
    used: Duration,
    since: Option<Instant>,
}

impl TurnClock {
    fn new(limit: Duration) -> Self {
        Self {
            limit,
            used: Duration::ZERO,
            since: None,
        }
    }

    /// Starts or stops the clock.
    fn run(&mut self, running: bool) {
        match (running, self.since) {
            (true, None) => self.since = Some(Instant::now()),
            (false, Some(since)) => {
                self.used += since.elapsed();
                self.since = None;
            }
            _ => {}
        }
    }

    /// When the limit runs out, if the clock runs.
    pub fn deadline(&self) -> Option<Instant> {
        self.since
            .map(|since| since + self.limit.saturating_sub(self.used))
    }
}

impl JobState {
    pub fn new(record: JobRecord, last_notification: Option<u64>) -> Self {
        Self {
            record,
            facts: Facts::default(),
            queued_turn: None,
            last_notification,
            unsaved_failure: None,
            pending: Vec::new(),
            stop: None,
            next_limit: None,
            clock: None,
            output_schema: None,
            turn_usage: TokenUsage::default(),
        }
    }

    /// The requests waiting for an answer, as clients see them.
    pub fn requests(&self) -> Vec<PendingRequest> {
        self.pending.iter().map(|p| p.request.clone()).collect()
    }

    /// The job's current (or latest) turn.
    pub fn turn(&self) -> JobTurn {
        JobTurn::new(self.record.id.clone(), self.record.turns)
    }

    /// Whether `turn` is queued or running: not ended yet.
    pub fn is_open(&self, turn: u32) -> bool {
        self.record.turns == turn && (self.facts.queued || self.facts.turn_running)
    }

    /// The tokens a `token_usage` event adds to the job. A count of the whole thread so far
    /// (`thread_usage`) adds what the job has not counted yet, and is recorded as that (`usage`).
    fn count_tokens(&self, data: &mut Value) -> Option<TokenUsage> {
        let fields = data.as_object_mut()?;
        let read = |v: Value| serde_json::from_value::<TokenUsage>(v).ok();
        let used = match fields.remove("thread_usage").and_then(read) {
            Some(thread) => {
                let used = thread.since(self.record.usage);
                fields.insert("usage".into(), serde_json::to_value(used).ok()?);
                used
            }
            None => read(fields.get("usage")?.clone())?,
        };
        Some(used)
    }

    /// Whether `turn` is the turn running in Codex, whose reports are taken.
    pub fn takes_reports_for(&self, turn: u32) -> bool {
        self.record.turns == turn && self.facts.turn_running && self.unsaved_failure.is_none()
    }
}

/// What the feed announces when a turn ends.
#[derive(Default)]
pub(super) struct Announce {
    pub result: Option<String>,
    /// The result as the JSON its `output_schema` asked for.
    pub result_json: Option<Value>,
    /// What the turn left changed in the job's worktree.
    pub changes: Option<Changes>,
    pub error: Option<String>,
}

/// What to do once the change is saved and the state lock released.
#[derive(Default)]
#[must_use]
pub(super) struct AfterCommit {
    /// The newest notification, to wake waiters with.
    pub notified: Option<u64>,
    /// Turns that got a slot and go to Codex now.
    pub dispatch: Vec<TurnInput>,
    /// Answers to Codex's requests, to send.
    pub replies: Vec<(Reply, Answer)>,
    /// Requests that now wait for a client: their timers start, and clients asked to answer
    /// them hear of them.
    pub relayed: Vec<Relayed>,
    /// Whether a turn ended or a request started or stopped waiting: turn clocks look again.
    pub turns_changed: bool,
    /// Whether the change saved events: followers waiting on a job's events look again.
    pub recorded: bool,
}

impl State {
    /// The state a store holds. Turns that were open when the last server went away stay open,
    /// holding no slot, to be settled: Codex cannot be trusted to have finished them.
    pub fn from_loaded(loaded: Loaded) -> Self {
        let mut state = Self {
            jobs: HashMap::new(),
            order: Vec::new(),
            by_client_request: HashMap::new(),
            queue: VecDeque::new(),
            running: 0,
            last_notification: loaded.last_notification,
            recent: Recent::new(recent::FEED),
            events: HashMap::new(),
            accepting: true,
        };
        for job in loaded.jobs {
            let mut entry = JobState::new(job.record, job.last_notification);
            entry.facts.outcome = match entry.record.status {
                JobStatus::Completed => Some(Outcome::Completed),
                JobStatus::Failed => Some(Outcome::Failed),
                JobStatus::Cancelled => Some(Outcome::Cancelled),
                JobStatus::Interrupted => Some(Outcome::Interrupted),
                JobStatus::Queued | JobStatus::Running | JobStatus::InputRequired => {
                    entry.facts.queued = true;
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
        state
    }

    pub fn job(&self, id: &JobId) -> Result<&JobState, JobError> {
        self.jobs.get(id).ok_or_else(|| JobError::unknown_job(id))
    }

    pub fn snapshot(&self, id: &JobId) -> Result<JobSnapshot, JobError> {
        let entry = self.job(id)?;
        let record = &entry.record;
        Ok(JobSnapshot {
            job_id: record.id.clone(),
            status: record.status,
            thread_id: record.thread_id.clone(),
            turn: record.turns,
            cursor: record.last_seq,
            requests: entry.requests(),
            // A result that is JSON is said once, as JSON.
            result: (record.status == JobStatus::Completed && record.result_json.is_none())
                .then(|| record.last_message.clone())
                .flatten(),
            result_json: (record.status == JobStatus::Completed)
                .then(|| record.result_json.clone())
                .flatten(),
            changes: (record.status.is_settled())
                .then(|| record.changes.clone())
                .flatten(),
            error: match &entry.unsaved_failure {
                Some(reason) => Some(format!(
                    "{reason}. Codex was told to stop this turn; it is marked failed as soon as \
                     the store can save again"
                )),
                None => record.error.clone(),
            },
            worktree: record.live_worktree().map(|w| w.path.clone()),
            branch: record.branch().map(str::to_owned),
        })
    }
}

/// The longest streamed piece that pieces are joined into: small enough that a page of
/// `job_events` at the smallest `max_bytes` holds one whole.
const STREAMED_PIECE_BYTES: usize = 512;

/// What a [`Tx`] makes of the state once its writes are saved.
pub(super) struct Change {
    jobs: HashMap<JobId, JobState>,
    created: Vec<JobId>,
    deleted: Vec<JobId>,
    notified: Vec<Notification>,
    /// The events the writes save, as saved.
    recorded: Vec<(JobId, Event)>,
    queue: VecDeque<JobId>,
    running: usize,
    last_notification: u64,
    accepting: bool,
    after: AfterCommit,
}

impl Change {
    /// Makes the change, whose writes are saved, on the state it was built on.
    pub fn make(self, state: &mut State) -> AfterCommit {
        for id in &self.created {
            if let Some(key) = self
                .jobs
                .get(id)
                .and_then(|j| j.record.client_request_id.clone())
            {
                state.by_client_request.insert(key, id.clone());
            }
            state.order.push(id.clone());
        }
        let settled: Vec<JobId> = (self.jobs.iter())
            .filter(|(_, job)| job.record.status.is_settled())
            .map(|(id, _)| id.clone())
            .collect();
        state.jobs.extend(self.jobs);
        let mut after = self.after;
        after.recorded = !self.recorded.is_empty();
        for (id, event) in self.recorded {
            (state.events.entry(id))
                .or_insert_with(|| Recent::new(recent::EVENTS))
                .push(event);
        }
        // A settled job's events are read rarely, and then from the store.
        for id in settled.iter().chain(&self.deleted) {
            state.events.remove(id);
        }
        for id in &self.deleted {
            if let Some(key) = state
                .jobs
                .remove(id)
                .and_then(|job| job.record.client_request_id)
            {
                state.by_client_request.remove(&key);
            }
        }
        if !self.deleted.is_empty() {
            state.order.retain(|id| !self.deleted.contains(id));
            state.recent.clear();
        }
        for entry in self.notified {
            state.recent.push(entry);
        }
        state.queue = self.queue;
        state.running = self.running;
        state.last_notification = self.last_notification;
        state.accepting = self.accepting;
        after
    }
}

/// A change to the state, saved before it is made.
pub(super) struct Tx<'a> {
    state: &'a State,
    max_running: usize,
    /// What the change makes of the state, as it builds up.
    made: Change,
    writes: Vec<Write>,
    /// Where in `writes` each job's newest event of this change is.
    newest_event: HashMap<JobId, usize>,
}

impl<'a> Tx<'a> {
    pub fn new(state: &'a State, max_running: usize) -> Self {
        Self {
            state,
            max_running,
            made: Change {
                jobs: HashMap::new(),
                created: Vec::new(),
                deleted: Vec::new(),
                notified: Vec::new(),
                recorded: Vec::new(),
                queue: state.queue.clone(),
                running: state.running,
                last_notification: state.last_notification,
                accepting: state.accepting,
                after: AfterCommit::default(),
            },
            writes: Vec::new(),
            newest_event: HashMap::new(),
        }
    }

    /// The state as it was before this change.
    pub fn state(&self) -> &State {
        self.state
    }

    /// Whether this change still lets turns start.
    pub fn accepting(&self) -> bool {
        self.made.accepting
    }

    /// The job as this change sees it, copied on first touch.
    pub fn job(&mut self, id: &JobId) -> Result<&mut JobState, JobError> {
        if !self.made.jobs.contains_key(id) {
            let current = self.state.job(id)?.clone();
            self.made.jobs.insert(id.clone(), current);
        }
        self.made
            .jobs
            .get_mut(id)
            .ok_or_else(|| JobError::unknown_job(id))
    }

    /// The writes to save, and the change to make once they are saved.
    pub fn finish(mut self) -> (Vec<Write>, Change) {
        self.made.recorded = (self.writes.iter())
            .filter_map(|write| match write {
                Write::Event(job, event) => Some((job.clone(), event.clone())),
                _ => None,
            })
            .collect();
        (self.writes, self.made)
    }

    /// No turn starts from now on; queued turns stay queued until they are settled.
    pub fn stop_accepting(&mut self) {
        self.made.accepting = false;
    }

    /// Adds a new job.
    pub fn create(&mut self, job: JobState) {
        self.writes.push(Write::Job(Box::new(job.record.clone())));
        self.made.created.push(job.record.id.clone());
        self.made.jobs.insert(job.record.id.clone(), job);
    }

    /// Adds a job that has no turn to run yet (a fork without a prompt): settled, and announced
    /// as such so that a wait for it returns.
    pub fn create_settled(&mut self, mut job: JobState) -> Result<(), JobError> {
        let id = job.record.id.clone();
        job.facts.outcome = Some(Outcome::Completed);
        self.create(job);
        self.commit_status(&id)?;
        self.notify(&id, Announce::default(), None)
    }

    /// Deletes a job with its events and notifications.
    pub fn delete(&mut self, id: &JobId) {
        self.writes.push(Write::DeleteJob(id.clone()));
        self.made.queue.retain(|queued| queued != id);
        self.made.deleted.push(id.clone());
    }

    /// Appends one event to the job's stream, in its current turn.
    pub fn record(&mut self, id: &JobId, kind: EventKind, data: Value) -> Result<(), JobError> {
        if self.join_streamed(id, kind, &data) {
            return Ok(());
        }
        let entry = self.job(id)?;
        let mut job_changed = kind == EventKind::ThreadStarted;
        let mut data = data;
        if kind == EventKind::TokenUsage
            && let Some(used) = entry.count_tokens(&mut data)
        {
            entry.turn_usage += used;
            entry.record.usage += used;
            job_changed = true;
        }
        if let (EventKind::AgentMessage, Some(text)) =
            (kind, data.get("text").and_then(Value::as_str))
        {
            entry.record.last_message = Some(text.to_owned());
            job_changed = true;
        }
        entry.record.last_seq += 1;
        let event = Event {
            seq: entry.record.last_seq,
            kind,
            at: now_rfc3339(),
            turn: entry.record.turns,
            data,
        };
        let job = job_changed.then(|| entry.record.clone());
        self.newest_event.insert(id.clone(), self.writes.len());
        self.writes.push(Write::Event(id.clone(), event));
        // `last_seq` follows from the events; the record changes only with these.
        if let Some(job) = job {
            self.writes.push(Write::Job(Box::new(job)));
        }
        Ok(())
    }

    /// Adds a streamed piece to the one the job's stream ends with in this change, when that is
    /// a piece of the same stream with room for it: Codex streams a message a few characters at
    /// a time, and an event for each cost the client reading them more than their text (and
    /// each a row). Returns whether it did.
    fn join_streamed(&mut self, id: &JobId, kind: EventKind, data: &Value) -> bool {
        let field = match kind {
            EventKind::AgentMessageDelta | EventKind::ReasoningDelta => "delta",
            EventKind::CommandOutputDelta => "text",
            _ => return false,
        };
        let Some(Write::Event(_, newest)) = self
            .newest_event
            .get(id)
            .and_then(|at| self.writes.get_mut(*at))
        else {
            return false;
        };
        let (Some(fields), Some(newest_fields)) = (data.as_object(), newest.data.as_object())
        else {
            return false;
        };
        // The same stream: all fields but the text alike (say, one command's stdout).
        let same_stream = newest.kind == kind
            && fields.len() == newest_fields.len()
            && fields
                .iter()
                .all(|(key, value)| key == field || newest_fields.get(key) == Some(value));
        let (Some(piece), Some(Value::String(text))) = (
            data.get(field).and_then(Value::as_str),
            newest.data.get_mut(field),
        ) else {
            return false;
        };
        let joins = same_stream && text.len() + piece.len() <= STREAMED_PIECE_BYTES;
        if joins {
            text.push_str(piece);
        }
        joins
    }

    /// Records the thread Codex named for the job, once.
    pub fn name_thread(&mut self, id: &JobId, thread_id: String) -> Result<(), JobError> {
        let entry = self.job(id)?;
        if entry.record.thread_id.is_none() {
            entry.record.thread_id = Some(thread_id);
            let record = entry.record.clone();
            self.writes.push(Write::Job(Box::new(record)));
        }
        Ok(())
    }

    /// Notes what became of the worktree at `path` in every job that ran in it: `mark` sets
    /// `removed` or `branch_deleted`.
    pub fn mark_worktree(&mut self, path: &str, mark: impl Fn(&mut Worktree)) {
        // Every job this change sees: those of the state, and those it creates.
        let ran_there: Vec<JobId> = (self.state.jobs.keys().chain(&self.made.created))
            .filter(|id| {
                let job = self.made.jobs.get(*id).or_else(|| self.state.jobs.get(*id));
                job.and_then(|j| j.record.worktree.as_ref())
                    .is_some_and(|w| w.path == path)
            })
            .cloned()
            .collect();
        for id in ran_there {
            let Ok(job) = self.job(&id) else { continue };
            if let Some(worktree) = job.record.worktree.as_mut() {
                mark(worktree);
                let record = job.record.clone();
                self.writes.push(Write::Job(Box::new(record)));
            }
        }
    }

    /// Derives the job's status from its facts and saves the record; the turn's clock runs only
    /// while the turn runs and no request waits.
    pub fn commit_status(&mut self, id: &JobId) -> Result<(), JobError> {
        let entry = self.job(id)?;
        entry.facts.approvals_waiting = u32::try_from(entry.pending.len()).unwrap_or(u32::MAX);
        let runs = entry.facts.turn_running && entry.pending.is_empty();
        if let Some(clock) = &mut entry.clock {
            clock.run(runs);
        }
        entry.record.status = status::derive(&entry.facts);
        entry.record.updated_at = now_rfc3339();
        let record = entry.record.clone();
        self.writes.push(Write::Job(Box::new(record)));
        Ok(())
    }

    /// Queues the job's next turn (with its time limit), and takes it out again if a slot is
    /// free.
    pub fn enqueue_turn(
        &mut self,
        input: TurnInput,
        limit: Option<Duration>,
    ) -> Result<(), JobError> {
        let id = input.turn.job.clone();
        let entry = self.job(&id)?;
        entry.output_schema = input.output_schema.clone();
        entry.turn_usage = TokenUsage::default();
        entry.queued_turn = Some(input);
        entry.next_limit = limit;
        entry.facts.queued = true;
        entry.stop = None;
        self.commit_status(&id)?;
        self.made.queue.push_back(id);
        self.fill_slots()
    }

    /// Moves queued turns into free slots; they go to Codex after the commit.
    fn fill_slots(&mut self) -> Result<(), JobError> {
        if !self.made.accepting {
            return Ok(());
        }
        while self.made.running < self.max_running {
            let Some(id) = self.made.queue.pop_front() else {
                break;
            };
            let Ok(entry) = self.job(&id) else {
                continue;
            };
            let Some(input) = entry.queued_turn.take() else {
                continue;
            };
            entry.facts.queued = false;
            entry.facts.turn_running = true;
            entry.facts.handed_over = false;
            entry.clock = entry.next_limit.take().map(TurnClock::new);
            self.commit_status(&id)?;
            self.made.running += 1;
            self.made.after.dispatch.push(input);
        }
        Ok(())
    }

    /// Codex has taken `turn`. Returns whether it must be stopped there at once: it was
    /// cancelled while being handed over, or it ended (a cancel's grace, shutdown) meanwhile.
    pub fn handed_over(&mut self, turn: &JobTurn) -> Result<bool, JobError> {
        let entry = self.job(&turn.job)?;
        if !entry.takes_reports_for(turn.turn) {
            return Ok(true);
        }
        entry.facts.handed_over = true;
        Ok(entry.stop.is_some())
    }

    /// Ends `turn` with its closing event, the new status and the notification, and frees its
    /// slot for the next queued turn. Returns false, changing nothing, when `turn` is not open
    /// (it ended already, or a later turn is the job's): a turn ends once.
    pub fn end_turn(
        &mut self,
        turn: &JobTurn,
        outcome: Outcome,
        kind: EventKind,
        data: Value,
        announce: Announce,
    ) -> Result<bool, JobError> {
        let id = &turn.job;
        if !self.job(id)?.is_open(turn.turn) {
            tracing::debug!(%turn, ?kind, "the turn is not open; its end is dropped");
            return Ok(false);
        }
        let used = self.job(id)?.turn_usage;
        let mut data = data;
        if used != TokenUsage::default()
            && let Value::Object(fields) = &mut data
        {
            fields.insert(
                "usage".into(),
                serde_json::to_value(used).unwrap_or_default(),
            );
        }
        self.record(id, kind, data)?;
        let entry = self.job(id)?;
        let held_slot = entry.facts.turn_running;
        entry.facts.queued = false;
        entry.facts.turn_running = false;
        entry.facts.handed_over = false;
        entry.facts.outcome = Some(outcome);
        entry.queued_turn = None;
        entry.unsaved_failure = None;
        entry.stop = None;
        entry.clock = None;
        // Dropped unanswered: Codex is refused (its turn is over anyway).
        entry.pending.clear();
        if let Some(result) = &announce.result {
            entry.record.last_message = Some(result.clone());
        }
        entry.record.error = announce.error.clone();
        entry.record.result_json = announce.result_json.clone();
        entry.record.changes = announce.changes.clone();
        self.made.after.turns_changed = true;
        self.commit_status(id)?;
        self.notify(id, announce, None)?;
        self.made.queue.retain(|queued| queued != id);
        if held_slot {
            self.made.running = self.made.running.saturating_sub(1);
        }
        self.fill_slots()?;
        Ok(true)
    }

    /// Posts a feed entry for the job's current turn and status.
    fn notify(
        &mut self,
        id: &JobId,
        announce: Announce,
        request: Option<PendingRequest>,
    ) -> Result<(), JobError> {
        // A result that is JSON is said once, as JSON.
        let Announce {
            result,
            result_json,
            changes,
            error,
        } = announce;
        let result = result.filter(|_| result_json.is_none());
        let seq = self.made.last_notification + 1;
        let entry = self.job(id)?;
        entry.last_notification = Some(seq);
        let notification = Notification {
            seq,
            job_id: id.clone(),
            thread_id: entry.record.thread_id.clone(),
            turn: entry.record.turns,
            status: entry.record.status,
            at: now_rfc3339(),
            result,
            result_chars: None,
            result_json,
            changes,
            error,
            request,
        };
        self.made.notified.push(notification.clone());
        self.writes
            .push(Write::Notification(Box::new(notification)));
        self.made.last_notification = seq;
        self.made.after.notified = Some(seq);
        Ok(())
    }

    /// Ends every open turn as `interrupted`, saying `what_happened` (at start-up, to the turns
    /// the last server left open; at shutdown, to those still running or queued). A turn that
    /// waited for an answer to Codex's request says so: the request was lost with the Codex
    /// process.
    pub fn interrupt_open_turns(&mut self, what_happened: &str) -> Result<(), JobError> {
        let open: Vec<(JobTurn, bool)> = self
            .state
            .jobs
            .values()
            .filter(|j| j.is_open(j.record.turns))
            .map(|j| (j.turn(), j.record.status == JobStatus::InputRequired))
            .collect();
        for (turn, waited) in &open {
            let reason = if *waited {
                format!(
                    "{what_happened} while the turn waited for an answer to Codex's request; the \
                     request was lost with that Codex process, which keeps requests in memory \
                     only"
                )
            } else {
                format!(
                    "{what_happened} while the turn was running, so Codex may not have finished it"
                )
            };
            self.settle(
                turn,
                Outcome::Interrupted,
                EventKind::TurnInterrupted,
                reason,
            )?;
        }
        Ok(())
    }

    /// Records one of Codex's requests for `turn`, and answers it at once when `answer_now` says
    /// so (who decided, and how); else it waits for a client: the job becomes `input_required`,
    /// and the feed says so.
    pub fn request(
        &mut self,
        turn: &JobTurn,
        request: CodexRequest,
        reply: Reply,
        answer_now: Option<(Answer, DecidedBy)>,
    ) -> Result<(), JobError> {
        let id = &turn.job;
        let request_id = format!("r{}", self.job(id)?.record.last_seq + 1);
        let pending = PendingRequest {
            request_id: request_id.clone(),
            kind: request.kind,
            summary: request.summary,
            decisions: request.decisions,
            questions: request.questions,
        };
        let mut data = serde_json::to_value(&pending).unwrap_or_else(|_| json!({}));
        if let Value::Object(fields) = &mut data {
            fields.extend(request.details);
            fields.insert("codex".into(), request.raw);
        }
        self.record(id, EventKind::ApprovalRequested, data)?;
        self.job(id)?.pending.push(Pending {
            request: pending.clone(),
            reply,
        });
        match answer_now {
            Some((answer, decided_by)) => {
                self.resolve(id, &request_id, answer, decided_by, None)?;
            }
            None => {
                self.commit_status(id)?;
                self.notify(id, Announce::default(), Some(pending.clone()))?;
                self.made.after.relayed.push(Relayed {
                    turn: turn.clone(),
                    request: pending,
                });
                self.made.after.turns_changed = true;
            }
        }
        Ok(())
    }

    /// The job's pending request `request_id`, if it waits.
    pub fn pending(&mut self, id: &JobId, request_id: &str) -> Result<Option<&Pending>, JobError> {
        Ok(self
            .job(id)?
            .pending
            .iter()
            .find(|p| p.request.request_id == request_id))
    }

    /// Answers the job's pending request `request_id`, recording who decided; does nothing when
    /// it does not wait (any more). The status follows.
    pub fn resolve(
        &mut self,
        id: &JobId,
        request_id: &str,
        answer: Answer,
        decided_by: DecidedBy,
        note: Option<String>,
    ) -> Result<(), JobError> {
        let entry = self.job(id)?;
        let Some(at) = entry
            .pending
            .iter()
            .position(|p| p.request.request_id == request_id)
        else {
            return Ok(());
        };
        let pending = entry.pending.remove(at);
        let mut data = json!({
            "request_id": request_id,
            "decision": answer.decision,
            "decided_by": decided_by,
        });
        if let Some(answers) = &answer.answers {
            data["answers"] = Value::Object(answers.clone());
        }
        if let Some(note) = note {
            data["note"] = Value::String(note);
        }
        self.record(id, EventKind::ApprovalResolved, data)?;
        self.commit_status(id)?;
        self.made.after.replies.push((pending.reply, answer));
        self.made.after.turns_changed = true;
        Ok(())
    }

    /// Ends `turn` without Codex's word (cancel, restart, shutdown, a store failure), with
    /// `reason`. Like [`Tx::end_turn`], does nothing to a turn that is not open.
    pub fn settle(
        &mut self,
        turn: &JobTurn,
        outcome: Outcome,
        kind: EventKind,
        reason: String,
    ) -> Result<bool, JobError> {
        let error = (outcome != Outcome::Cancelled).then(|| reason.clone());
        self.end_turn(
            turn,
            outcome,
            kind,
            json!({"reason": reason}),
            Announce {
                error,
                ..Announce::default()
            },
        )
    }
}
