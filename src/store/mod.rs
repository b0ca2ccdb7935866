//! The durable record of jobs, events and notifications, behind a narrow interface.
//!
//! The engine keeps what it needs to decide statuses in memory and writes every change here
//! before anyone can see it; what a client reads back (events, the feed) comes from here. After a
//! restart the engine rebuilds its memory with [`Store::load`].
//!
//! - [`sqlite`]: the store, one SQLite database in WAL mode.
//! - [`threads`]: the store called from threads of its own, never from the async runtime.
//! - [`state_dir`]: where it lives, and the lock that keeps a second server out.

mod sqlite;
pub(crate) mod state_dir;
mod threads;

pub use sqlite::SqliteStore;
pub use threads::StoreThreads;

use crate::model::{Event, EventPage, EventQuery, JobId, JobRecord, Notification};

/// A failure of the store. Its `Display` is for the operator and the log (it names paths); a
/// client gets [`StoreError::public`], which names only the kind of problem.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or set up at start-up; the message says what to do.
    #[error("{0}")]
    Open(String),
    /// A write failed; nothing of it was saved.
    #[error("the job store could not save the change: {detail}")]
    Write { problem: Problem, detail: String },
    /// A read failed.
    #[error("the job store could not be read: {detail}")]
    Read { problem: Problem, detail: String },
}

/// What went wrong in the store, in words a client may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    DiskFull,
    Damaged,
    NotWritable,
    Busy,
    Other,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Problem::DiskFull => "the disk is full",
            Problem::Damaged => "the database is damaged",
            Problem::NotWritable => "the database cannot be written",
            Problem::Busy => "the database is locked by another process",
            Problem::Other => "an internal error",
        })
    }
}

impl StoreError {
    /// The kind of problem.
    pub fn problem(&self) -> Problem {
        match self {
            StoreError::Open(_) => Problem::Other,
            StoreError::Write { problem, .. } | StoreError::Read { problem, .. } => *problem,
        }
    }

    /// The message for a client: what failed and the kind of problem, no paths or internals.
    pub fn public(&self) -> String {
        match self {
            StoreError::Open(_) => "the job store could not be opened".to_owned(),
            StoreError::Write { problem, .. } => format!(
                "the job store could not save the change ({problem}); nothing of it was saved. \
                 The server's log has the details"
            ),
            StoreError::Read { problem, .. } => format!(
                "the job store could not be read ({problem}). The server's log has the details"
            ),
        }
    }
}

/// One change to save. A batch of them is saved all or nothing.
#[derive(Clone, Debug)]
pub enum Write {
    /// Inserts or replaces a job's record.
    Job(Box<JobRecord>),
    /// Appends an event; its seq continues the job's stream.
    Event(JobId, Event),
    /// Boxed: rarer than events, and larger.
    Notification(Box<Notification>),
    /// Deletes a job with its events and notifications.
    DeleteJob(JobId),
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
