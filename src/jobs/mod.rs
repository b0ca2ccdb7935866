//! The engine: jobs, turns, the status machine, the concurrency queue, cursors and waiters.
//!
//! [`JobManager`] is the only place that decides a job's status. It takes calls from the tool
//! layer, hands turns to a [`crate::codex::Backend`], applies what the backend reports in order,
//! and writes everything a client can read to the [`crate::store::Store`].
//!
//! - `api`: what a call asks for and gets back; `caps`: what an operator lets clients ask for.
//! - `manager`: the commands, the hand-over of turns to Codex, retention and shutdown.
//! - `reports`: Codex's reports, applied to the turn they name; `output`: a turn's final message
//!   checked against the `output_schema` it was asked to follow.
//! - `requests`: Codex's requests: answered by policy, by clients or by the approval timeout;
//!   and the turns' time limits.
//! - `feed`: event pages, the notification feed and waiting on it; `recent`: the newest entries
//!   of the feed and of each running job's events, kept in memory for those who follow them.
//! - `state`: the state and `Tx`, the one way to change it; `status`: a job's status
//!   as a pure function of its facts.

mod api;
mod caps;
mod error;
mod feed;
mod manager;
mod output;
mod recent;
mod reports;
mod requests;
mod state;
mod status;
#[cfg(test)]
mod tests;

pub use crate::model::{
    Answer, Approvals, Changes, DecidedBy, Decision, Effort, Event, EventKind, EventQuery,
    Isolation, JobId, JobRecord, JobStatus, Notification, PendingRequest, ReasoningSummary,
    ReviewTarget, ThreadOptions, TokenUsage,
};
pub use api::{
    EngineSettings, EventsAnswer, ForkRequest, JobSnapshot, JobSummary, Relayed, ReplyRequest,
    RespondRequest, ReviewSource, StartRequest, TurnText, WaitAnswer,
};
pub use caps::Caps;
pub use error::JobError;
pub use manager::{JobManager, expired_jobs};
