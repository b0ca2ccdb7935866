//! What can go wrong with a call to the engine. Each message names the problem and the way out;
//! the tool layer returns it as a tool result with `isError: true`.

use crate::model::{JobId, JobStatus};
use crate::store::StoreError;
use crate::text::shorten;

/// How much of a client's own input an error message repeats.
const ECHO_CHARS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The caller named a job this server does not know.
    #[error("no job has the id {0:?}; job_list shows the jobs this server knows")]
    UnknownJob(String),
    /// A `job_events` cursor past the job's newest event.
    #[error(
        "cursor {cursor} is past the end of job {job}'s events (its newest event is {last}); \
         pass a cursor returned by job_events, or 0 to read from the start"
    )]
    EventCursorOutOfRange { job: JobId, cursor: u64, last: u64 },
    /// A notification cursor past the newest notification.
    #[error(
        "cursor {cursor} is past the end of the notification feed (its newest entry is {last}); \
         pass a cursor returned by job_notifications or job_wait, or 0 to read from the start"
    )]
    FeedCursorOutOfRange { cursor: u64, last: u64 },
    /// `job_start` or `job_reply` without a prompt.
    #[error("prompt is empty; pass the task for Codex as `prompt`")]
    MissingPrompt,
    /// A `cwd` that is not an existing absolute directory.
    #[error(
        "cwd {path:?} {problem}; pass an existing absolute directory, or leave cwd out to use {default:?}"
    )]
    BadCwd {
        path: String,
        problem: &'static str,
        default: String,
    },
    /// Any other argument that cannot be used; the message says which and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// `job_reply` while the job's turn is queued or running.
    #[error(
        "job {job} is {status}: its turn {turn} has not finished. Wait for it with job_wait \
         (job_id {job}) or stop it with job_cancel, then reply"
    )]
    ReplyWhileRunning {
        job: JobId,
        status: JobStatus,
        turn: u32,
    },
    /// `job_reply` to a job whose first turn ended before Codex named a thread.
    #[error(
        "job {job} has no Codex thread to reply to: its first turn ended before Codex started \
         one. Start a new job with job_start"
    )]
    NoThread { job: JobId },
    /// The backend cannot run another turn in the job's thread.
    #[error("job {job}: {reason}")]
    CannotContinue { job: JobId, reason: String },
    /// `job_steer` of a job whose turn is not running in Codex.
    #[error(
        "job {job} is {status}: only a running turn takes input. A settled job continues with \
         job_reply; a queued turn takes it once it runs; a turn waiting for an answer gets it \
         with job_respond"
    )]
    NotSteerable { job: JobId, status: JobStatus },
    /// `job_cancel` of a job with no queued or running turn.
    #[error(
        "job {job} is already {status}; there is nothing to cancel. Continue it with job_reply \
         or start a new job"
    )]
    AlreadySettled { job: JobId, status: JobStatus },
    /// A retried `job_start` whose `client_request_id` names a job started with other input.
    #[error(
        "client_request_id {key:?} was first used for job {job}, with a different prompt or \
         options. A retry must send the same ones; use a new client_request_id for a new job, or \
         read job {job} with job_events"
    )]
    RequestIdReused { key: String, job: JobId },
    /// An answer to a request that does not wait (the engine refines it into one below).
    #[error("request {request_id:?} of job {job} does not wait for an answer")]
    NoSuchRequest { job: JobId, request_id: String },
    /// `job_respond` to a request answered before.
    #[error(
        "request {request_id} of job {job} was answered already ({decision}, decided by \
         {decided_by}); {waiting}"
    )]
    AlreadyAnswered {
        job: JobId,
        request_id: String,
        decision: String,
        decided_by: String,
        waiting: String,
    },
    /// `job_respond` to a request whose turn ended before anyone answered it.
    #[error(
        "request {request_id} of job {job} takes no answer any more: its turn ended first; \
         {waiting}"
    )]
    RequestOver {
        job: JobId,
        request_id: String,
        waiting: String,
    },
    /// `job_respond` to a request Codex never made.
    #[error(
        "job {job} has no request {request_id:?}; {waiting}. The ids are in the job's \
         approval_requested events and in job_wait's answers"
    )]
    UnknownRequest {
        job: JobId,
        request_id: String,
        waiting: String,
    },
    /// Codex could not be started (missing, not Codex, failed its handshake, ...).
    #[error("Codex is not usable, so no turn can run: {0}")]
    CodexUnavailable(String),
    /// A call made while the server shuts down.
    #[error("the server is shutting down and takes no new turns")]
    ShuttingDown,
    /// The caller cancelled the request (or left) before it was answered.
    #[error("the request was cancelled by the client")]
    Cancelled,
    /// The store failed. Its `Display` has the details for the log; [`JobError::public`] is
    /// what a client sees.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl JobError {
    /// No job has `id`; the message repeats at most the start of it.
    pub(crate) fn unknown_job(id: &JobId) -> Self {
        JobError::UnknownJob(shorten(id.as_str(), ECHO_CHARS))
    }

    /// The message for a client: everything but a store failure's internals (paths), which the
    /// log keeps.
    pub fn public(&self) -> String {
        match self {
            JobError::Store(e) => e.public(),
            other => other.to_string(),
        }
    }
}
