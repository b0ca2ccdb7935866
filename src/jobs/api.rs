//! The engine's contract with the tool layer: what a call asks for and what it gets back.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use super::caps::Caps;
use crate::model::{
    Answer, Approvals, Changes, Decision, Effort, Event, Isolation, JobId, JobStatus, JobTurn,
    Notification, PendingRequest, ReasoningSummary, ReviewTarget, TokenUsage,
};

#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Turns running in Codex at once; more wait in the queue.
    pub max_concurrent_jobs: usize,
    /// How long `job_cancel` may take in all: asking Codex to stop, then waiting for it to
    /// confirm, before the job is settled without it.
    pub cancel_grace: Duration,
    /// The cwd of jobs that name none.
    pub default_cwd: PathBuf,
    /// Settled jobs not updated for this long are deleted, with their events.
    pub retention: Duration,
    /// Who answers Codex's requests for jobs that do not say.
    pub approvals: Approvals,
    /// How long a request relayed to clients waits for an answer before it gets
    /// `approval_timeout_decision`.
    pub approval_timeout: Duration,
    /// What a request nobody answered in time gets (a question cannot be accepted without
    /// answers: it gets `decline` instead of `accept`).
    pub approval_timeout_decision: Decision,
    /// The time limit of turns that do not say (`None`: none).
    pub max_turn: Option<Duration>,
    /// What clients may ask for.
    pub caps: Caps,
    /// Where jobs run that do not say.
    pub isolation: Isolation,
    /// Where job worktrees are made.
    pub worktrees: PathBuf,
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
    /// Who answers Codex's requests (default: the server's).
    pub approvals: Option<Approvals>,
    /// The first turn's time limit in seconds (default: the server's; 0: none).
    pub max_turn_seconds: Option<u64>,
    pub effort: Option<Effort>,
    pub summary: Option<ReasoningSummary>,
    /// A JSON Schema the first turn's final message must follow.
    pub output_schema: Option<Value>,
    /// Where the job runs (default: the server's).
    pub isolation: Option<Isolation>,
    /// The commit a worktree starts from (default: HEAD of `cwd`'s repository).
    pub base_ref: Option<String>,
    /// The first turn is Codex's review of this instead of `prompt` (which then says what it
    /// is, for the job list).
    pub review: Option<ReviewTarget>,
}

/// What `job_reply` asks for. The approval and reasoning settings, when given, hold for later
/// turns too.
#[derive(Clone, Debug, Default)]
pub struct ReplyRequest {
    pub prompt: String,
    pub approval_policy: Option<String>,
    pub approvals: Option<Approvals>,
    /// This turn's time limit in seconds (default: the server's; 0: none).
    pub max_turn_seconds: Option<u64>,
    /// Changes the job's reasoning effort and summary, for later turns too.
    pub effort: Option<Effort>,
    pub summary: Option<ReasoningSummary>,
    /// A JSON Schema this turn's final message must follow.
    pub output_schema: Option<Value>,
}

/// What `job_fork` asks for: the fork's first turn. Everything else is the forked job's.
#[derive(Clone, Debug, Default)]
pub struct ForkRequest {
    /// Empty: no turn yet; the fork is made now and waits for `job_reply`.
    pub prompt: String,
    pub output_schema: Option<Value>,
    pub max_turn_seconds: Option<u64>,
    /// `worktree`: the fork gets a worktree of its own (from `base_ref`); else it runs where
    /// the forked job runs.
    pub isolation: Option<Isolation>,
    pub base_ref: Option<String>,
}

/// What `job_review` reviews in.
#[derive(Clone, Debug)]
pub enum ReviewSource {
    /// A copy of this settled job's thread, where it runs (its worktree, if it has one).
    Job(String),
    /// A new thread in this directory.
    Cwd(String),
}

/// What `job_respond` answers.
#[derive(Clone, Debug)]
pub struct RespondRequest {
    pub request_id: String,
    pub answer: Answer,
    /// Why, for the record.
    pub note: Option<String>,
}

/// A request of Codex's that now waits for a client.
#[derive(Clone, Debug)]
pub struct Relayed {
    pub turn: JobTurn,
    pub request: PendingRequest,
}

/// A job as `job_start`, `job_reply` and `job_cancel` report it.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct JobSnapshot {
    pub job_id: JobId,
    pub status: JobStatus,
    /// Codex's thread id, once Codex has started the thread.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// The current (or latest) turn, counting from 1.
    pub turn: u32,
    /// The seq of the job's newest event: pass it to job_events to read only what follows.
    pub cursor: u64,
    /// The last agent message of the latest finished turn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// That result parsed, when the turn had an output_schema (result is then left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub result_json: Option<Value>,
    /// What the latest finished turn left changed in the job's worktree.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub changes: Option<Changes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Codex's requests waiting for an answer (job_respond).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<PendingRequest>,
    /// The job's git worktree, and its branch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// A job as `job_list` shows it.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct JobSummary {
    pub job_id: JobId,
    pub status: JobStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub turns: u32,
    pub cwd: String,
    /// The first prompt, shortened.
    pub prompt: String,
    /// The last agent message, shortened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_message: Option<String>,
    /// Tokens used by all its turns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    /// The job this one was forked from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<JobId>,
    /// Its git worktree (until cleaned up), and its branch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// A page of a job's events, with the job's state read after the page.
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

/// A turn's final message, as `job_result` pages it.
#[derive(Clone, Debug)]
pub struct TurnText {
    pub job_id: JobId,
    pub turn: u32,
    /// How the turn stands: `running` (or `queued`, `input_required`) while it runs, else how it
    /// ended.
    pub status: JobStatus,
    /// The turn's result when it completed, else its last agent message so far ("" if none).
    pub text: String,
    /// Why the turn ended, when it ended otherwise than completed.
    pub error: Option<String>,
    /// The tokens the turn used, once it ended.
    pub usage: Option<TokenUsage>,
}
