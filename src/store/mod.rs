//! The record of jobs, events and notifications, behind a narrow interface.
//!
//! The engine keeps what it needs to decide statuses in memory; the store holds everything a
//! client can read back. [`MemoryStore`] lives only as long as the process.

mod memory;

pub use memory::MemoryStore;

use crate::jobs::{Event, EventKind, JobId, JobRecord, Notification};

/// A failure of the store itself. The engine fails the operation that hit it and keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the job store failed: {0}")]
    Backend(String),
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
    pub fn matches(&self, kind: EventKind) -> bool {
        match &self.types {
            Some(types) => types.contains(&kind),
            None => self.include_deltas || !kind.is_delta(),
        }
    }
}

/// A page of events.
#[derive(Clone, Debug, Default)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Where the next read starts: the seq of the last event examined, matching or not.
    pub cursor: u64,
    /// Whether an event past `cursor` matches the query.
    pub has_more: bool,
}

pub trait Store: Send + Sync + 'static {
    /// Inserts or replaces a job's record.
    fn put_job(&self, job: &JobRecord) -> Result<(), StoreError>;
    /// Appends events, whose seqs continue the job's stream.
    fn append_events(&self, job: &JobId, events: &[Event]) -> Result<(), StoreError>;
    fn read_events(&self, job: &JobId, query: &EventQuery) -> Result<EventPage, StoreError>;
    fn append_notification(&self, notification: &Notification) -> Result<(), StoreError>;
    /// Notifications with `seq` greater than `after`, oldest first, for one job or all.
    fn read_notifications(
        &self,
        after: u64,
        job: Option<&JobId>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError>;
}
