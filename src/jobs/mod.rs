//! The engine: jobs, turns, the status machine, the concurrency queue, cursors and waiters.
//!
//! [`JobManager`] is the only place that decides a job's status. It takes calls from the tool
//! layer, hands turns to a [`crate::codex::Backend`], applies what the backend reports in order,
//! and writes everything a client can read to the [`crate::store::Store`].
//!
//! - `api`: what a call asks for and gets back.
//! - `manager`: the commands, the hand-over of turns to Codex, retention and shutdown.
//! - `reports`: Codex's reports, applied to the turn they name.
//! - `requests`: Codex's requests: answered by policy, by clients or by the approval timeout;
//!   and the turns' time limits.
//! - `feed`: event pages, the notification feed and waiting on it.
//! - `state`: the state and `Tx`, the one way to change it; `status`: a job's status
//!   as a pure function of its facts.

mod api;
mod error;
mod feed;
mod manager;
mod reports;
mod requests;
mod state;
mod status;
#[cfg(test)]
mod tests;

pub use crate::model::{
    Answer, Approvals, DecidedBy, Decision, Event, EventKind, EventQuery, JobId, JobRecord,
    JobStatus, Notification, PendingRequest, ThreadOptions,
};
pub use api::{
    EngineSettings, EventsAnswer, JobSnapshot, JobSummary, Relayed, ReplyRequest, RespondRequest,
    StartRequest, TurnText, WaitAnswer,
};
pub use error::JobError;
pub use manager::{JobManager, expired_jobs};
