//! The engine: jobs, turns, the status machine, the concurrency queue, cursors and waiters.
//!
//! [`JobManager`] is the only place that decides a job's status. It takes calls from the tool
//! layer, hands turns to a [`crate::codex::Backend`], applies what the backend reports in order,
//! and writes everything a client can read to the [`crate::store::Store`].

mod error;
mod manager;
mod model;
mod state;
mod status;
#[cfg(test)]
mod tests;
pub mod text;

pub use error::JobError;
pub use manager::{
    EngineSettings, EventsAnswer, JobManager, JobSnapshot, JobSummary, StartRequest, WaitAnswer,
};
pub use model::{Event, EventKind, JobId, JobRecord, JobStatus, Notification, ThreadOptions};
