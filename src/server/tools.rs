//! The arguments and answers of the `job_*` tools, with the schemas clients see.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::jobs::{Event, JobId, JobSnapshot, JobStatus, JobSummary, Notification};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartArgs {
    /// The task for Codex.
    pub prompt: String,
    /// Working directory: an existing absolute directory. Default: the server's working directory.
    pub cwd: Option<String>,
    /// Model override, e.g. "gpt-5.2".
    pub model: Option<String>,
    /// A Codex profile, `$CODEX_HOME/<name>.config.toml` (exec backend only: app-server and
    /// mcp-server select a profile per process).
    pub profile: Option<String>,
    /// When Codex asks before running a command: "on-request" or "never" (codex mcp-server).
    pub approval_policy: Option<String>,
    pub sandbox: Option<Sandbox>,
    /// Codex config overrides, as in config.toml (e.g. {"model_reasoning_effort": "high"}).
    pub config: Option<serde_json::Map<String, Value>>,
    /// Instructions to use instead of Codex's default ones.
    pub base_instructions: Option<String>,
    /// Extra instructions, sent as a developer message.
    pub developer_instructions: Option<String>,
    /// A key of your choosing: a second job_start with the same key returns the first job
    /// instead of starting another (safe to retry after a timeout).
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
    /// The job's first events, if any arrived already.
    pub events: Vec<Event>,
    /// How this server drives Codex: `mcp-server`, `app-server` or `exec`.
    pub backend: String,
    /// The version of the Codex that runs the job.
    pub codex_version: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsArgs {
    pub job_id: String,
    /// Read events after this seq: 0 (default) for the start, else the `cursor` of the last answer.
    pub cursor: Option<u64>,
    /// At most this many events (default 50, at most 1000).
    pub limit: Option<usize>,
    /// Only these event types (see the README for the vocabulary).
    pub event_types: Option<Vec<String>>,
    /// Shorten every string in `data` to this many characters, saying so in the string.
    pub truncate: Option<usize>,
    /// Include streaming deltas (agent_message_delta, reasoning_delta, command_output_delta).
    #[serde(default)]
    pub include_deltas: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct EventsOut {
    pub job_id: JobId,
    pub status: JobStatus,
    pub events: Vec<Event>,
    /// Pass this as `cursor` to read what follows.
    pub cursor: u64,
    /// More matching events follow `cursor`.
    pub has_more: bool,
    /// The last agent message of the latest finished turn, when it completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyArgs {
    pub job_id: String,
    /// The next message for Codex, in the same thread.
    pub prompt: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ReplyOut {
    pub job_id: JobId,
    pub status: JobStatus,
    pub turn: u32,
    /// The job's newest event seq: job_events from here shows the new turn.
    pub cursor: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationsArgs {
    /// Entries after this seq (default 0).
    pub cursor: Option<u64>,
    /// Only this job's entries.
    pub job_id: Option<String>,
    /// At most this many entries (default 100, at most 1000).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct NotificationsOut {
    pub notifications: Vec<Notification>,
    /// Pass this as `cursor` next time.
    pub cursor: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    /// Return entries after this feed seq. Without it: wait for the next entry from now (or, with
    /// job_id, answer at once if that job is already settled).
    pub cursor: Option<u64>,
    /// Wait for this job only.
    pub job_id: Option<String>,
    /// How long to wait (default 30; capped by the server's --max-wait-seconds).
    pub timeout_seconds: Option<f64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct WaitOut {
    pub notifications: Vec<Notification>,
    /// Pass this as `cursor` next time.
    pub cursor: u64,
    /// True when nothing arrived within the timeout.
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
    /// Only jobs with this status.
    pub status: Option<JobStatus>,
    /// At most this many jobs (default 50, at most 1000).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOut {
    /// Newest first.
    pub jobs: Vec<JobSummary>,
}
