//! The engine's state, and the one way to change it: a [`Tx`] that is saved before it is made.
//!
//! A `Tx` works on copies of the jobs it touches and collects the [`Write`]s that describe the
//! change. [`Tx::commit`] hands the writes to the store in one transaction and only then swaps
//! the copies in, so memory never runs ahead of disk: whatever a client can see has been saved,
//! and a failed save leaves the state as it was. Statuses are derived from facts in one place,
//! [`Tx::commit_status`], and a turn ends in one place, [`Tx::end_turn`], which ends only the
//! turn it is told about, and only while that turn is open.

use std::collections::{HashMap, VecDeque};

use serde_json::{Value, json};

use super::status::{self, Facts, Outcome};
use super::{JobError, JobSnapshot};
use crate::codex::TurnInput;
use crate::model::{Event, EventKind, JobId, JobRecord, JobStatus, JobTurn, Notification};
use crate::store::{Loaded, Store, Write};
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
}

impl JobState {
    pub fn new(record: JobRecord, last_notification: Option<u64>) -> Self {
        Self {
            record,
            facts: Facts::default(),
            queued_turn: None,
            last_notification,
            unsaved_failure: None,
        }
    }

    /// The job's current (or latest) turn.
    pub fn turn(&self) -> JobTurn {
        JobTurn::new(self.record.id.clone(), self.record.turns)
    }

    /// Whether `turn` is queued or running: not ended yet.
    pub fn is_open(&self, turn: u32) -> bool {
        self.record.turns == turn && (self.facts.queued || self.facts.turn_running)
    }

    /// Whether `turn` is the turn running in Codex, whose reports are taken.
    pub fn takes_reports_for(&self, turn: u32) -> bool {
        self.record.turns == turn && self.facts.turn_running && self.unsaved_failure.is_none()
    }
}

/// What the feed announces when a turn ends.
pub(super) struct Announce {
    pub result: Option<String>,
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
            result: (record.status == JobStatus::Completed)
                .then(|| record.last_message.clone())
                .flatten(),
            error: match &entry.unsaved_failure {
                Some(reason) => Some(format!(
                    "{reason}. Codex was told to stop this turn; it is marked failed as soon as \
                     the store can save again"
                )),
                None => record.error.clone(),
            },
        })
    }
}

/// A change to the state, saved before it is made.
pub(super) struct Tx<'a> {
    state: &'a mut State,
    max_running: usize,
    jobs: HashMap<JobId, JobState>,
    created: Vec<JobId>,
    deleted: Vec<JobId>,
    queue: VecDeque<JobId>,
    running: usize,
    last_notification: u64,
    accepting: bool,
    writes: Vec<Write>,
    after: AfterCommit,
}

impl<'a> Tx<'a> {
    pub fn new(state: &'a mut State, max_running: usize) -> Self {
        Self {
            queue: state.queue.clone(),
            running: state.running,
            last_notification: state.last_notification,
            accepting: state.accepting,
            state,
            max_running,
            jobs: HashMap::new(),
            created: Vec::new(),
            deleted: Vec::new(),
            writes: Vec::new(),
            after: AfterCommit::default(),
        }
    }

    /// The state as it was before this change.
    pub fn state(&self) -> &State {
        self.state
    }

    /// Whether this change still lets turns start.
    pub fn accepting(&self) -> bool {
        self.accepting
    }

    /// The job as this change sees it, copied on first touch.
    pub fn job(&mut self, id: &JobId) -> Result<&mut JobState, JobError> {
        if !self.jobs.contains_key(id) {
            let current = self.state.job(id)?.clone();
            self.jobs.insert(id.clone(), current);
        }
        self.jobs
            .get_mut(id)
            .ok_or_else(|| JobError::unknown_job(id))
    }

    /// Saves the change and makes it; on failure nothing changes.
    pub fn commit(self, store: &dyn Store) -> Result<AfterCommit, JobError> {
        store.write(&self.writes)?;
        let state = self.state;
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
        state.jobs.extend(self.jobs);
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
        }
        state.queue = self.queue;
        state.running = self.running;
        state.last_notification = self.last_notification;
        state.accepting = self.accepting;
        Ok(self.after)
    }

    /// No turn starts from now on; queued turns stay queued until they are settled.
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    /// Adds a new job.
    pub fn create(&mut self, job: JobState) {
        self.writes.push(Write::Job(Box::new(job.record.clone())));
        self.created.push(job.record.id.clone());
        self.jobs.insert(job.record.id.clone(), job);
    }

    /// Deletes a job with its events and notifications.
    pub fn delete(&mut self, id: &JobId) {
        self.writes.push(Write::DeleteJob(id.clone()));
        self.queue.retain(|queued| queued != id);
        self.deleted.push(id.clone());
    }

    /// Appends one event to the job's stream, in its current turn.
    pub fn record(&mut self, id: &JobId, kind: EventKind, data: Value) -> Result<(), JobError> {
        let entry = self.job(id)?;
        let mut job_changed = kind == EventKind::ThreadStarted;
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
        self.writes.push(Write::Event(id.clone(), event));
        // `last_seq` follows from the events; the record changes only with these.
        if let Some(job) = job {
            self.writes.push(Write::Job(Box::new(job)));
        }
        Ok(())
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

    /// Derives the job's status from its facts and saves the record.
    pub fn commit_status(&mut self, id: &JobId) -> Result<(), JobError> {
        let entry = self.job(id)?;
        entry.record.status = status::derive(&entry.facts);
        entry.record.updated_at = now_rfc3339();
        let record = entry.record.clone();
        self.writes.push(Write::Job(Box::new(record)));
        Ok(())
    }

    /// Queues the job's next turn, and takes it out again if a slot is free.
    pub fn enqueue_turn(&mut self, input: TurnInput) -> Result<(), JobError> {
        let id = input.turn.job.clone();
        let entry = self.job(&id)?;
        entry.queued_turn = Some(input);
        entry.facts.queued = true;
        entry.facts.cancel_requested = false;
        self.commit_status(&id)?;
        self.queue.push_back(id);
        self.fill_slots()
    }

    /// Moves queued turns into free slots; they go to Codex after the commit.
    fn fill_slots(&mut self) -> Result<(), JobError> {
        if !self.accepting {
            return Ok(());
        }
        while self.running < self.max_running {
            let Some(id) = self.queue.pop_front() else {
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
            self.commit_status(&id)?;
            self.running += 1;
            self.after.dispatch.push(input);
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
        Ok(entry.facts.cancel_requested)
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
        self.record(id, kind, data)?;
        let seq = self.last_notification + 1;
        let entry = self.job(id)?;
        let held_slot = entry.facts.turn_running;
        entry.facts.queued = false;
        entry.facts.turn_running = false;
        entry.facts.handed_over = false;
        entry.facts.cancel_requested = false;
        entry.facts.outcome = Some(outcome);
        entry.queued_turn = None;
        entry.unsaved_failure = None;
        if let Some(result) = &announce.result {
            entry.record.last_message = Some(result.clone());
        }
        entry.record.error = announce.error.clone();
        entry.last_notification = Some(seq);
        self.commit_status(id)?;
        let entry = self.job(id)?;
        let notification = Notification {
            seq,
            job_id: id.clone(),
            turn: entry.record.turns,
            status: entry.record.status,
            at: now_rfc3339(),
            result: announce.result,
            result_chars: None,
            error: announce.error,
        };
        self.writes.push(Write::Notification(notification));
        self.last_notification = seq;
        self.after.notified = Some(seq);
        self.queue.retain(|queued| queued != id);
        if held_slot {
            self.running = self.running.saturating_sub(1);
        }
        self.fill_slots()?;
        Ok(true)
    }

    /// Ends every open turn as `interrupted` with `reason` (at start-up, the turns the last server
    /// left open; at shutdown, those still running or queued).
    pub fn interrupt_open_turns(&mut self, reason: &str) -> Result<(), JobError> {
        let open: Vec<JobTurn> = self
            .state
            .jobs
            .values()
            .filter(|j| j.is_open(j.record.turns))
            .map(JobState::turn)
            .collect();
        for turn in &open {
            self.settle(
                turn,
                Outcome::Interrupted,
                EventKind::TurnInterrupted,
                reason.to_owned(),
            )?;
        }
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
                result: None,
                error,
            },
        )
    }
}
