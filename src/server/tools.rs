//! The arguments and answers of the `job_*` tools. Their doc comments are the schemas' field
//! descriptions, which clients pay for whenever they load the tools: keep them short.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::jobs::{
    Approvals, Changes, Decision, Effort, Event, Isolation, JobId, JobSnapshot, JobStatus,
    JobSummary, Notification, PendingRequest, ReasoningSummary, TokenUsage,
};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartArgs {
    /// The task for Codex.
    pub prompt: String,
    /// An existing absolute directory (default: the server's).
    pub cwd: Option<String>,
    /// Model override.
    pub model: Option<String>,
    /// Codex profile `$CODEX_HOME/<name>.config.toml` (exec backend only).
    pub profile: Option<String>,
    /// When Codex asks: untrusted | on-request | never (per backend).
    pub approval_policy: Option<String>,
    /// Who answers Codex's requests: relay (job_respond; the default), decline, approve.
    pub approvals: Option<Approvals>,
    /// Send each request to this client as a form too (needs elicitation).
    #[serde(default)]
    pub ask_client: bool,
    /// This turn's time limit, not counting waits for answers (0: none).
    pub max_turn_seconds: Option<u64>,
    pub sandbox: Option<Sandbox>,
    /// Codex config overrides, as in config.toml.
    pub config: Option<serde_json::Map<String, Value>>,
    /// Replaces Codex's instructions.
    pub base_instructions: Option<String>,
    /// Extra instructions (a developer message).
    pub developer_instructions: Option<String>,
    /// Reasoning effort.
    pub effort: Option<Effort>,
    pub summary: Option<ReasoningSummary>,
    /// JSON Schema for the final message (answered as result_json).
    pub output_schema: Option<serde_json::Map<String, Value>>,
    /// worktree: run in a new git worktree of cwd's repository, on its own branch.
    pub isolation: Option<Isolation>,
    /// The commit the worktree starts from (default HEAD).
    pub base_ref: Option<String>,
    /// Your key: a retry with it returns the first job.
    pub client_request_id: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Sandbox {
    ReadOnly,
    WorkspaceWrite,
    DangerFullAccess,
}

impl Sandbox {
    pub fn as_str(self) -> &'static str {
        match self {
            Sandbox::ReadOnly => "read-only",
            Sandbox::WorkspaceWrite => "workspace-write",
            Sandbox::DangerFullAccess => "danger-full-access",
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StartOut {
    #[serde(flatten)]
    pub job: JobSnapshot,
    /// How Codex is driven: mcp-server, app-server or exec.
    pub backend: String,
    pub codex_version: String,
    /// What to do next, once there is an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsArgs {
    pub job_id: String,
    /// Events after this seq (default 0); pass the last answer's cursor.
    pub cursor: Option<u64>,
    /// At most this many (default 50, max 1000).
    pub limit: Option<usize>,
    /// Only these types.
    pub event_types: Option<Vec<String>>,
    /// Shorten every string to this many chars.
    pub truncate: Option<usize>,
    /// Include *_delta events.
    #[serde(default)]
    pub include_deltas: bool,
    /// Add Codex's own message to each event (data.codex).
    #[serde(default)]
    pub raw: bool,
    /// Answer size cap in bytes.
    pub max_bytes: Option<usize>,
    /// While none follow cursor and the job runs, wait up to this many seconds for the next
    /// (default 0; capped by the server).
    pub wait_seconds: Option<f64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct EventsOut {
    pub job_id: JobId,
    pub status: JobStatus,
    pub events: Vec<Event>,
    /// Pass as cursor to read on.
    pub cursor: u64,
    /// More events follow cursor.
    pub has_more: bool,
    /// The latest turn's result, when completed and not in these events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Codex's requests waiting for job_respond.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<PendingRequest>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultArgs {
    pub job_id: String,
    /// Default: the latest turn.
    pub turn: Option<u32>,
    /// Start at this char (default 0); pass next_offset.
    pub offset: Option<usize>,
    /// Answer size cap in bytes.
    pub max_bytes: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ResultOut {
    pub job_id: JobId,
    pub turn: u32,
    pub status: JobStatus,
    /// The final message from offset, as much as fits.
    pub text: String,
    pub offset: usize,
    /// Where the rest starts; absent once the text is whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
    pub total_chars: usize,
    /// The tokens the turn used, once it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyArgs {
    pub job_id: String,
    /// The next message for Codex, in the same thread.
    pub prompt: String,
    /// Change the job's approval_policy (where the backend allows).
    pub approval_policy: Option<String>,
    /// Change who answers Codex's requests.
    pub approvals: Option<Approvals>,
    /// Send each request to this client as a form too.
    #[serde(default)]
    pub ask_client: bool,
    pub max_turn_seconds: Option<u64>,
    /// Change the reasoning effort, for later turns too.
    pub effort: Option<Effort>,
    pub summary: Option<ReasoningSummary>,
    /// JSON Schema for this turn's final message.
    pub output_schema: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkArgs {
    /// The settled job whose thread to copy.
    pub job_id: String,
    /// The fork's first turn (none: job_reply runs it).
    pub prompt: Option<String>,
    pub output_schema: Option<serde_json::Map<String, Value>>,
    pub max_turn_seconds: Option<u64>,
    /// worktree: a new worktree of its own (default: where the job runs).
    pub isolation: Option<Isolation>,
    pub base_ref: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewArgs {
    /// Review where this settled job runs, on a copy of its thread.
    pub job_id: Option<String>,
    /// Or in this directory, on a new thread.
    pub cwd: Option<String>,
    pub target: ReviewKind,
    /// For base_branch.
    pub branch: Option<String>,
    /// For commit.
    pub sha: Option<String>,
    /// For custom.
    pub instructions: Option<String>,
}

/// What a review looks at.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewKind {
    Uncommitted,
    BaseBranch,
    Commit,
    Custom,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CleanupArgs {
    pub job_id: String,
    /// Delete the job's branch too.
    #[serde(default)]
    pub delete_branch: bool,
    /// Remove even with uncommitted changes (they are lost).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SteerArgs {
    pub job_id: String,
    /// Input for the running turn.
    pub prompt: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RespondArgs {
    pub job_id: String,
    /// From approval_requested or job_wait.
    pub request_id: String,
    /// cancel also ends the turn.
    pub decision: Decision,
    /// For a question: {question_id: answer}.
    pub answers: Option<serde_json::Map<String, Value>>,
    /// Why, for the record.
    pub note: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RespondOut {
    pub job_id: JobId,
    pub status: JobStatus,
    pub turn: u32,
    /// Requests still waiting.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<PendingRequest>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ReplyOut {
    pub job_id: JobId,
    pub status: JobStatus,
    pub turn: u32,
    /// job_events from here shows the new turn.
    pub cursor: u64,
    /// The turn's final message, once it completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What to do next, once there is an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub result_json: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub changes: Option<Changes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// The job as it stands, without the outcome of a turn before the one the answer is about.
impl From<JobSnapshot> for ReplyOut {
    fn from(job: JobSnapshot) -> Self {
        Self {
            job_id: job.job_id,
            status: job.status,
            turn: job.turn,
            cursor: job.cursor,
            result: None,
            error: None,
            next: None,
            result_json: None,
            changes: None,
            worktree: job.worktree,
            branch: job.branch,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationsArgs {
    /// Entries after this seq (default 0).
    pub cursor: Option<u64>,
    pub job_id: Option<String>,
    /// At most this many (default 100, max 1000).
    pub limit: Option<usize>,
    /// Answer size cap in bytes.
    pub max_bytes: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct NotificationsOut {
    pub notifications: Vec<Notification>,
    /// Pass as cursor next time.
    pub cursor: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    /// Entries after this feed seq; without it, from now (or a settled job's last).
    pub cursor: Option<u64>,
    pub job_id: Option<String>,
    /// Default 30; capped by the server.
    pub timeout_seconds: Option<f64>,
    /// Answer size cap in bytes.
    pub max_bytes: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct WaitOut {
    pub notifications: Vec<Notification>,
    /// Pass as cursor next time.
    pub cursor: u64,
    pub timed_out: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobIdArgs {
    pub job_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    pub status: Option<JobStatus>,
    /// At most this many (default 50, max 1000).
    pub limit: Option<usize>,
    /// Answer size cap in bytes.
    pub max_bytes: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOut {
    /// Newest first.
    pub jobs: Vec<JobSummary>,
    /// More jobs than fit in max_bytes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub has_more: bool,
}
