//! The durable record of jobs, events and notifications, behind a narrow interface.
//!
//! The engine keeps what it needs to decide statuses in memory and writes every change here
//! before anyone can see it; what a client reads back (events, the feed) comes from here. After a
//! restart the engine rebuilds its memory with [`Store::load`].
//!
//! - [`sqlite`]: the store, one SQLite database in WAL mode.
//! - [`state_dir`]: where it lives, and the lock that keeps a second server out.

pub mod sqlite;
pub mod state_dir;

pub use sqlite::SqliteStore;

use crate::jobs::{Event, EventKind, JobId, JobRecord, Notification};

/// A failure of the store. Each message says what happened and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or set up at start-up.
    #[error("{0}")]
    Open(String),
    /// A write failed; nothing of it was saved.
    #[error("the job store could not save the change: {0}")]
    Write(String),
    /// A read failed.
    #[error("the job store could not be read: {0}")]
    Read(String),
}

/// One change to save. A batch of them is saved all or nothing.
#[derive(Clone, Debug)]
pub enum Write {
    /// Inserts or replaces a job's record.
    Job(Box<JobRecord>),
    /// Appends an event; its seq continues the job's stream.
    Event(JobId, Event),
    Notification(Notification),
    /// Deletes a job with its events and notifications.
    DeleteJob(JobId),
}

/// Which events of a job to read.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    /// Return events with `seq` greater than this.
    pub after: u64,
    pub limit: usize,
    /// Only these types; `None` for all.
    pub types: Option<Vec<EventKind>>,
    /// Streaming deltas are skipped unless this is set (or `types` names them).
    pub include_deltas: bool,
}

impl EventQuery {
    /// The event types this query skips, when it names none to keep.
    fn hidden(&self) -> Vec<EventKind> {
        match (&self.types, self.include_deltas) {
            (None, false) => EventKind::ALL
                .into_iter()
                .filter(|k| k.is_delta())
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A page of events.
#[derive(Clone, Debug, Default)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Where the next read starts: the last event returned when the page is full, else the
    /// job's newest event (everything up to it was looked at).
    pub cursor: u64,
    /// Whether an event past `cursor` matches the query.
    pub has_more: bool,
}

/// What the store holds, for the engine to start from.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// Every job, oldest first.
    pub jobs: Vec<LoadedJob>,
    /// The seq of the newest notification ever written (kept when its job is deleted).
    pub last_notification: u64,
}

#[derive(Clone, Debug)]
pub struct LoadedJob {
    /// The record, with `last_seq` read from the job's events.
    pub record: JobRecord,
    /// The seq of the job's newest notification.
    pub last_notification: Option<u64>,
}

pub trait Store: Send + Sync + 'static {
    /// Saves a batch of changes in one transaction, or none of them.
    fn write(&self, batch: &[Write]) -> Result<(), StoreError>;
    fn read_events(&self, job: &JobId, query: &EventQuery) -> Result<EventPage, StoreError>;
    /// Notifications with `seq` greater than `after`, oldest first, for one job or all.
    fn read_notifications(
        &self,
        after: u64,
        job: Option<&JobId>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError>;
    fn load(&self) -> Result<Loaded, StoreError>;
}
