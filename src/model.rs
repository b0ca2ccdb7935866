//! The nouns every room shares: job ids and turns, statuses, events, notifications, thread
//! options and job records, as clients see them.
//!
//! This module imports nothing of ours, so `jobs`, `codex` and `store` can all use it without
//! importing each other. [`JobRecord`] (with its [`ThreadOptions`]) is stored in the database as
//! JSON and [`EventKind`] and [`JobStatus`] by name: a change here that a reader of an older
//! database would trip on needs a migration in `store::sqlite`.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A job's id: `job-` followed by a time-ordered UUID, so ids never repeat and sort by creation.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    pub(crate) fn generate() -> Self {
        Self(format!("job-{}", uuid::Uuid::now_v7().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for JobId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One turn of one job: the job and the turn's number within it, counting from 1. Every report a
/// backend sends names the turn it belongs to, so a late word about an earlier turn can never
/// end or fill a later one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobTurn {
    pub job: JobId,
    pub turn: u32,
}

impl JobTurn {
    pub fn new(job: JobId, turn: u32) -> Self {
        Self { job, turn }
    }
}

impl fmt::Display for JobTurn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} turn {}", self.job, self.turn)
    }
}

/// Where a job stands. Derived from the job's facts by the engine, never set directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a free slot (`--max-concurrent-jobs`).
    Queued,
    /// A turn is running in Codex.
    Running,
    /// A turn is paused on a question only a person can answer.
    InputRequired,
    /// The latest turn finished; `result` holds its last agent message.
    Completed,
    /// The latest turn failed; `error` says why.
    Failed,
    /// The latest turn was cancelled with `job_cancel`; the thread takes `job_reply`.
    Cancelled,
    /// The latest turn was cut short by something other than `job_cancel`.
    Interrupted,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::InputRequired,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Interrupted,
    ];

    /// True when no turn is queued or running: the job waits for `job_reply` or nothing.
    pub fn is_settled(self) -> bool {
        !matches!(
            self,
            JobStatus::Queued | JobStatus::Running | JobStatus::InputRequired
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::InputRequired => "input_required",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The event vocabulary. It does not depend on the backend; the README lists it. Every event's
/// `data` also carries Codex's original message under `codex`. Stored by [`EventKind::as_str`],
/// which is the same name serde gives clients (a test keeps the two equal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Codex created the thread: `thread_id`, `model`, `cwd`.
    ThreadStarted,
    /// Codex began a turn: `turn_id`.
    TurnStarted,
    /// The prompt as Codex received it: `text`.
    UserMessage,
    /// A complete agent message: `text`.
    AgentMessage,
    /// A streamed piece of an agent message: `delta`. Hidden unless `include_deltas`.
    AgentMessageDelta,
    /// A reasoning summary: `text`.
    Reasoning,
    /// A streamed piece of reasoning: `delta`. Hidden unless `include_deltas`.
    ReasoningDelta,
    /// A shell command started: `call_id`, `command`, `cwd`.
    CommandStarted,
    /// Output of a running command: `call_id`, `stream`, `text`. Hidden unless `include_deltas`.
    CommandOutputDelta,
    /// A shell command ended: `call_id`, `command`, `exit_code`, `output`, `status`.
    CommandCompleted,
    /// Codex began applying a patch: `call_id`, `changes`.
    FileChangeStarted,
    /// A patch was applied or refused: `call_id`, `success`, `output`.
    FileChangeCompleted,
    /// A call to an MCP tool started: `call_id`, `server`, `tool`.
    McpToolCallStarted,
    /// A call to an MCP tool ended: `call_id`, `result`.
    McpToolCallCompleted,
    /// Codex searched the web: `query`.
    WebSearch,
    /// The agent updated its plan: `plan`.
    PlanUpdated,
    /// Token counts so far: `usage`.
    TokenUsage,
    /// Something Codex wants known but that did not stop the turn: `message`.
    Warning,
    /// An error Codex reported: `message`.
    Error,
    /// Codex asked something: `request_id`, `kind`, `summary`, `decisions`, and what is asked
    /// (`command`, `cwd`, `reason`, `changes`, `permissions`, `questions`, `message`).
    ApprovalRequested,
    /// A request was answered: `request_id`, `decision`, `decided_by`, `answers`, `note`.
    ApprovalResolved,
    /// The turn finished: `result`.
    TurnCompleted,
    /// The turn failed: `error`.
    TurnFailed,
    /// The turn was cancelled by `job_cancel`: `reason`.
    TurnCancelled,
    /// The turn was cut short by something else (Codex, or the server going away): `reason`.
    TurnInterrupted,
    /// A Codex message this vocabulary has no name for, kept whole under `codex`.
    CodexEvent,
}

impl EventKind {
    pub const ALL: [EventKind; 26] = [
        EventKind::ThreadStarted,
        EventKind::TurnStarted,
        EventKind::UserMessage,
        EventKind::AgentMessage,
        EventKind::AgentMessageDelta,
        EventKind::Reasoning,
        EventKind::ReasoningDelta,
        EventKind::CommandStarted,
        EventKind::CommandOutputDelta,
        EventKind::CommandCompleted,
        EventKind::FileChangeStarted,
        EventKind::FileChangeCompleted,
        EventKind::McpToolCallStarted,
        EventKind::McpToolCallCompleted,
        EventKind::WebSearch,
        EventKind::PlanUpdated,
        EventKind::TokenUsage,
        EventKind::Warning,
        EventKind::Error,
        EventKind::ApprovalRequested,
        EventKind::ApprovalResolved,
        EventKind::TurnCompleted,
        EventKind::TurnFailed,
        EventKind::TurnCancelled,
        EventKind::TurnInterrupted,
        EventKind::CodexEvent,
    ];

    /// Streaming pieces, hidden from `job_events` unless the caller asks for them.
    pub fn is_delta(self) -> bool {
        matches!(
            self,
            EventKind::AgentMessageDelta
                | EventKind::ReasoningDelta
                | EventKind::CommandOutputDelta
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ThreadStarted => "thread_started",
            EventKind::TurnStarted => "turn_started",
            EventKind::UserMessage => "user_message",
            EventKind::AgentMessage => "agent_message",
            EventKind::AgentMessageDelta => "agent_message_delta",
            EventKind::Reasoning => "reasoning",
            EventKind::ReasoningDelta => "reasoning_delta",
            EventKind::CommandStarted => "command_started",
            EventKind::CommandOutputDelta => "command_output_delta",
            EventKind::CommandCompleted => "command_completed",
            EventKind::FileChangeStarted => "file_change_started",
            EventKind::FileChangeCompleted => "file_change_completed",
            EventKind::McpToolCallStarted => "mcp_tool_call_started",
            EventKind::McpToolCallCompleted => "mcp_tool_call_completed",
            EventKind::WebSearch => "web_search",
            EventKind::PlanUpdated => "plan_updated",
            EventKind::TokenUsage => "token_usage",
            EventKind::Warning => "warning",
            EventKind::Error => "error",
            EventKind::ApprovalRequested => "approval_requested",
            EventKind::ApprovalResolved => "approval_resolved",
            EventKind::TurnCompleted => "turn_completed",
            EventKind::TurnFailed => "turn_failed",
            EventKind::TurnCancelled => "turn_cancelled",
            EventKind::TurnInterrupted => "turn_interrupted",
            EventKind::CodexEvent => "codex_event",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded event of a job. `seq` counts from 1 per job, without gaps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When the server recorded it (RFC 3339, UTC).
    pub at: String,
    /// The turn it belongs to, counting from 1.
    pub turn: u32,
    /// The fields its type has (see the README's vocabulary).
    #[schemars(with = "serde_json::Map<String, Value>")]
    pub data: Value,
}

/// One entry of the global feed: a status change that matters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Notification {
    /// Counts up from 1 across all jobs and restarts; never reused. Entries of jobs deleted by
    /// the retention period leave gaps.
    pub seq: u64,
    pub job_id: JobId,
    /// Codex's thread, once Codex has named it (`job_start` answers before it does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    pub turn: u32,
    pub status: JobStatus,
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The result's whole length in chars, when the answer carries it cut (job_result reads it
    /// whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_chars: Option<usize>,
    /// The result parsed, when the turn had an `output_schema` (`result` is then left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub result_json: Option<Value>,
    /// What the turn left changed in the job's worktree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub changes: Option<Changes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The request that made the job `input_required`: answer it with job_respond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<PendingRequest>,
}

/// Who answers Codex's requests (run a command, apply a patch, grant permissions, call an MCP
/// tool, answer a question) for a job.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Approvals {
    /// The job waits as `input_required` until a client answers with `job_respond` (or the
    /// approval timeout does).
    #[default]
    Relay,
    /// Refuse every request; the turn carries on without it.
    Decline,
    /// Allow every request (questions stay unanswered: nobody is there to answer them).
    Approve,
}

/// An answer to one of Codex's requests.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Allow it (with `answers`, for a question).
    Accept,
    /// Allow it, and the same again for the rest of the thread.
    AcceptForSession,
    /// Refuse it; the turn carries on without it.
    Decline,
    /// Refuse it and end the turn as cancelled.
    Cancel,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Accept => "accept",
            Decision::AcceptForSession => "accept_for_session",
            Decision::Decline => "decline",
            Decision::Cancel => "cancel",
        }
    }
}

/// What kind of thing Codex asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    Command,
    FileChange,
    Permissions,
    McpTool,
    Question,
}

/// Who decided a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// A client: `job_respond`, an answered elicitation, or `job_cancel`.
    Client,
    /// The job's `approvals` (`decline` or `approve`).
    Policy,
    /// Nobody answered within the approval timeout, or the turn ran out of time.
    Timeout,
}

/// One question of a `question` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Question {
    /// The key to answer it under in `answers`.
    pub id: String,
    pub question: String,
    /// The choices offered; any other text is an answer too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// One of Codex's requests, as a backend read it.
#[derive(Clone, Debug, PartialEq)]
pub struct CodexRequest {
    pub kind: RequestKind,
    /// One line saying what is asked.
    pub summary: String,
    /// What is asked, in our fields (`command`, `cwd`, `reason`, `changes`, `permissions`,
    /// `message`), recorded with the request.
    pub details: serde_json::Map<String, Value>,
    pub questions: Vec<Question>,
    /// The decisions this request takes.
    pub decisions: Vec<Decision>,
    /// Codex's request as it came.
    pub raw: Value,
}

/// What answers a request: a decision, and for a question (or an MCP tool's form) the answers
/// by question id.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub decision: Decision,
    pub answers: Option<serde_json::Map<String, Value>>,
}

impl Answer {
    pub fn just(decision: Decision) -> Self {
        Self {
            decision,
            answers: None,
        }
    }
}

/// A request waiting for an answer, as clients see it listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PendingRequest {
    /// Pass it to job_respond.
    pub request_id: String,
    pub kind: RequestKind,
    pub summary: String,
    pub decisions: Vec<Decision>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub questions: Vec<Question>,
}

/// How hard the model reasons (Codex's `model_reasoning_effort`), from least to most.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Effort {
    Minimal,
    Low,
    Medium,
    High,
    Xhigh,
}

impl Effort {
    pub fn as_str(self) -> &'static str {
        match self {
            Effort::Minimal => "minimal",
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
            Effort::Xhigh => "xhigh",
        }
    }
}

/// How the model's reasoning is summarised (Codex's `model_reasoning_summary`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningSummary {
    Auto,
    Concise,
    Detailed,
    None,
}

impl ReasoningSummary {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningSummary::Auto => "auto",
            ReasoningSummary::Concise => "concise",
            ReasoningSummary::Detailed => "detailed",
            ReasoningSummary::None => "none",
        }
    }
}

/// Tokens the model used: for one model call as a backend reports it, or summed over a turn or
/// a job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenUsage {
    /// Input tokens, cached ones included.
    pub input: u64,
    /// Input tokens read from the cache.
    pub cached: u64,
    /// Output tokens, reasoning included.
    pub output: u64,
    /// Output tokens spent reasoning.
    pub reasoning: u64,
}

impl TokenUsage {
    /// What these counts add to `earlier` ones of the same thread (none where they do not).
    pub fn since(self, earlier: Self) -> Self {
        Self {
            input: self.input.saturating_sub(earlier.input),
            cached: self.cached.saturating_sub(earlier.cached),
            output: self.output.saturating_sub(earlier.output),
            reasoning: self.reasoning.saturating_sub(earlier.reasoning),
        }
    }
}

impl std::ops::AddAssign for TokenUsage {
    fn add_assign(&mut self, other: Self) {
        self.input += other.input;
        self.cached += other.cached;
        self.output += other.output;
        self.reasoning += other.reasoning;
    }
}

/// What Codex's review looks at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReviewTarget {
    /// The working tree's staged, unstaged and new files.
    Uncommitted,
    /// The current branch against this base branch.
    BaseBranch(String),
    /// What this commit changed.
    Commit(String),
    /// Whatever these instructions ask.
    Custom(String),
}

impl fmt::Display for ReviewTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReviewTarget::Uncommitted => f.write_str("review the uncommitted changes"),
            ReviewTarget::BaseBranch(branch) => write!(f, "review the changes against {branch}"),
            ReviewTarget::Commit(sha) => write!(f, "review commit {sha}"),
            ReviewTarget::Custom(instructions) => write!(f, "review: {instructions}"),
        }
    }
}

/// Where a job runs.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// In its `cwd`, as it is.
    #[default]
    None,
    /// In a git worktree of its own, on a new branch.
    Worktree,
}

/// A job's worktree, as its record keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worktree {
    /// Where it is checked out.
    pub path: String,
    /// Where the job's turns run: the directory in it that matches the cwd the job asked for.
    pub cwd: String,
    /// The branch it is on, made for the job.
    pub branch: String,
    /// The commit it started from.
    pub base: String,
    /// The repository's main checkout.
    pub repo: String,
    /// Set once `job_cleanup` (or retention) removed it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    /// Set once `job_cleanup` deleted its branch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub branch_deleted: bool,
}

/// What a job changed in its worktree against the commit it started from, committed or not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Changes {
    pub branch: String,
    pub files: usize,
    pub insertions: u64,
    pub deletions: u64,
    /// The changed paths (the first 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// How Codex should run a new thread. Every field is optional; Codex's own config decides the rest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadOptions {
    pub cwd: String,
    pub model: Option<String>,
    pub profile: Option<String>,
    pub approval_policy: Option<String>,
    pub sandbox: Option<String>,
    pub config: Option<serde_json::Map<String, Value>>,
    pub base_instructions: Option<String>,
    pub developer_instructions: Option<String>,
    /// Holds for later turns too, until a reply changes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<Effort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<ReasoningSummary>,
}

/// What a job is, as `job_list` shows it and the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub status: JobStatus,
    pub thread_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub turns: u32,
    pub prompt: String,
    pub options: ThreadOptions,
    pub client_request_id: Option<String>,
    pub last_message: Option<String>,
    pub error: Option<String>,
    /// The seq of the job's newest event (0 before the first).
    pub last_seq: u64,
    /// Who answers Codex's requests (older saved jobs relay).
    #[serde(default)]
    pub approvals: Approvals,
    /// Tokens used by all its turns so far.
    #[serde(default)]
    pub usage: TokenUsage,
    /// The job whose thread this job's thread is a copy of (`job_fork`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<JobId>,
    /// Its worktree, when it runs in one (`isolation: "worktree"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<Worktree>,
    /// The latest finished turn's result parsed, when it had an `output_schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_json: Option<Value>,
    /// What the latest finished turn left changed in the worktree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
}

impl JobRecord {
    /// Its worktree, unless it was removed.
    pub fn live_worktree(&self) -> Option<&Worktree> {
        self.worktree.as_ref().filter(|w| !w.removed)
    }

    /// Its branch, unless it was deleted.
    pub fn branch(&self) -> Option<&str> {
        self.worktree
            .as_ref()
            .filter(|w| !w.branch_deleted)
            .map(|w| w.branch.as_str())
    }

    /// The options its turns run with: in its worktree, when it has one.
    pub fn turn_options(&self) -> ThreadOptions {
        let mut options = self.options.clone();
        if let Some(worktree) = &self.worktree {
            options.cwd = worktree.cwd.clone();
        }
        options
    }
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
    /// Only this turn's events; `None` for all.
    pub turn: Option<u32>,
}

impl EventQuery {
    /// The event types this query skips, when it names none to keep.
    pub fn hidden(&self) -> Vec<EventKind> {
        match (&self.types, self.include_deltas) {
            (None, false) => EventKind::ALL
                .into_iter()
                .filter(|k| k.is_delta())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the query asks for `event`, regardless of where the page starts or ends: what
    /// the store selects, decided in memory.
    pub fn matches(&self, event: &Event) -> bool {
        let kind = match &self.types {
            Some(types) => types.contains(&event.kind),
            None => self.include_deltas || !event.kind.is_delta(),
        };
        kind && self.turn.is_none_or(|turn| event.turn == turn)
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

/// Entry `seq` of the feed: `job`'s first turn completed with the result `m`, for the tests of
/// every module that keeps entries.
#[cfg(test)]
pub(crate) fn sample_notification(seq: u64, job: &str) -> Notification {
    Notification {
        seq,
        job_id: JobId::from(job),
        thread_id: None,
        turn: 1,
        status: JobStatus::Completed,
        at: "2026-01-01T00:00:00.000Z".into(),
        result: Some("m".into()),
        result_chars: None,
        result_json: None,
        changes: None,
        error: None,
        request: None,
    }
}

/// A request Codex asks with one question (which color, Red or Blue), for the tests of every
/// module that handles requests.
#[cfg(test)]
pub(crate) fn sample_question() -> PendingRequest {
    PendingRequest {
        request_id: "r1".into(),
        kind: RequestKind::Question,
        summary: "answer: Which color?".into(),
        decisions: vec![Decision::Accept, Decision::Decline, Decision::Cancel],
        questions: vec![Question {
            id: "color".into(),
            question: "Which color?".into(),
            options: vec!["Red".into(), "Blue".into()],
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_are_the_names_clients_see() {
        for kind in EventKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        for status in JobStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }
}
