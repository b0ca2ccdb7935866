//! Downstream: the `job_*` tools served over MCP, on stdio (`stdio`) or HTTP (`http`:
//! streamable HTTP, or the legacy SSE transport of `sse`). Every transport decodes what clients
//! send with `jsonrpc`, so a message that cannot be decoded gets a JSON-RPC error.
//!
//! Each handler parses its arguments, calls the engine and shapes the answer. Errors a user can
//! cause come back as tool results with `isError: true` whose text says what to do; the
//! arguments are parsed here rather than by rmcp so that a typo gets such an answer too. No
//! value a client sends can panic a handler (a panic would leave its request unanswered).

mod answer;
pub(crate) mod client_log;
pub(crate) mod control;
mod elicit;
pub(crate) mod http;
mod jsonrpc;
mod resources;
mod respond;
mod schema;
mod session_jobs;
mod sse;
mod stdio;
mod tasks;
mod tools;

pub(crate) use stdio::serve_stdio;

use std::borrow::Cow;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, GetTaskParams,
    GetTaskResult, Implementation, JsonObject, ListResourcesResult, PaginatedRequestParams,
    ProgressNotificationParam, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
    RequestMetaObject, ServerCapabilities, ServerConfig, SubscriptionFilter, UpdateTaskParams,
};
use rmcp::service::RequestContext;
use rmcp::{
    ErrorData as McpError, Peer, RoleServer, ServerHandler, tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

pub(crate) use answer::{Budget, view};
use serde_json::json;

use crate::jobs::{
    Answer, Event, EventKind, EventQuery, ForkRequest, JobError, JobManager, JobSnapshot,
    JobStatus, ReplyRequest, RespondRequest, ReviewSource, ReviewTarget, StartRequest, WaitAnswer,
};
use crate::text;
use tools::*;

/// The most any list-like answer returns at once.
const MAX_LIMIT: usize = 1000;

#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// The longest `job_wait` may block.
    pub max_wait: Duration,
    /// How often a waiting `job_wait` sends `notifications/progress`.
    pub progress_interval: Duration,
    /// What one answer's `structuredContent` may take when a call does not say (`max_bytes`).
    pub answer_budget: Budget,
    /// How often a client should poll a task (MCP tasks).
    pub task_poll: Duration,
    /// How long a task is kept after it was created: as long as its job.
    pub task_ttl: Duration,
    /// The most unsettled jobs one session may have (`None`: no limit).
    pub max_jobs_per_session: Option<usize>,
    /// The jobs of clients without a session, which share one count.
    pub sessionless_jobs: session_jobs::SessionJobs,
}

#[derive(Clone)]
pub struct JobServer {
    manager: JobManager,
    settings: ServerSettings,
    /// The jobs whose requests this session is asked about (`ask_client`).
    relays: elicit::Relays,
    /// What this session's client asked of the server's log (`logging/setLevel`).
    client_log: client_log::ClientLog,
    /// The jobs this session started (`--max-jobs-per-session`).
    session_jobs: session_jobs::SessionJobs,
    tool_router: &'static ToolRouter<Self>,
}

/// Parses a tool's arguments; a mistake becomes an answer that names it, and the argument at
/// fault as the tool's input schema finds it (serde names the problem, not where it is).
fn parse<T: DeserializeOwned + JsonSchema>(tool: &str, args: JsonObject) -> Result<T, String> {
    let args = serde_json::Value::Object(args);
    // From a copy: `from_value`'s code is shared with every other parse of a `Value` (from a
    // reference would compile each argument type's parser again), and the arguments are small.
    serde_json::from_value(args.clone())
        .map_err(|e| bad_arguments(tool, &args, &schema::input::<T>(), &e))
}

/// What is wrong with a tool's `args`: where they miss its input `schema`, else the parser's
/// `error`. Not generic, so compiled once.
fn bad_arguments(
    tool: &str,
    args: &serde_json::Value,
    schema: &JsonObject,
    error: &serde_json::Error,
) -> String {
    let schema = serde_json::Value::Object(schema.clone());
    // The parser's message may quote a client's whole value back.
    let problem = match crate::schema_check::check(args, &schema) {
        Err(at) => text::shorten(&at, 300),
        Ok(()) => text::shorten(&error.to_string(), 300),
    };
    format!("invalid arguments for {tool}: {problem}. The tool's input schema lists what it takes")
}

/// The answer to a failed call: the log gets a store failure's details, the client its kind.
fn user_error(e: JobError) -> String {
    if let JobError::Store(inner) = &e {
        tracing::error!(error = %inner, "store failure");
    }
    e.public()
}

/// How long a call waits, asked in its argument `name`: at most `max`, and any number a client
/// may send is fine (no panic on `1e308`); refused only when it is not a number of seconds.
fn wait_timeout(name: &str, seconds: f64, max: Duration) -> Result<Duration, String> {
    if seconds.is_nan() || seconds < 0.0 {
        return Err(format!(
            "{name} must be a number of seconds, 0 or more; got {seconds}"
        ));
    }
    Ok(Duration::try_from_secs_f64(seconds).map_or(max, |asked| asked.min(max)))
}

/// What a caller holding `job` does next, in one line.
fn next_step(job: &JobSnapshot) -> String {
    let id = &job.job_id;
    match job.status {
        JobStatus::InputRequired => {
            format!("Codex asks: answer with job_respond (job_id {id}), then job_wait")
        }
        JobStatus::Queued | JobStatus::Running => {
            format!("still running: job_wait (job_id {id}) gives the answer")
        }
        _ => format!("job_reply (job_id {id}) continues this thread; job_events shows the steps"),
    }
}

fn limit(requested: Option<usize>, default: usize) -> Result<usize, String> {
    match requested {
        None => Ok(default),
        Some(0) => Err("limit must be at least 1".to_owned()),
        Some(n) if n > MAX_LIMIT => Err(format!(
            "limit must be at most {MAX_LIMIT}; page with cursor for more"
        )),
        Some(n) => Ok(n),
    }
}

#[tool_router]
impl JobServer {
    pub fn new(manager: JobManager, settings: ServerSettings) -> Self {
        Self {
            manager,
            settings,
            relays: elicit::Relays::default(),
            client_log: client_log::ClientLog::default(),
            session_jobs: session_jobs::SessionJobs::default(),
            tool_router: Self::tools(),
        }
    }

    /// The tools, built once and shared: their schemas cost more to build than a call costs to
    /// serve, and an HTTP client on the stateless 2026-07-28 protocol gets a new `JobServer` per
    /// request.
    fn tools() -> &'static ToolRouter<Self> {
        static TOOLS: std::sync::OnceLock<ToolRouter<JobServer>> = std::sync::OnceLock::new();
        TOOLS.get_or_init(Self::tool_router)
    }

    /// Refuses `ask_client` for a session that cannot be asked.
    fn check_ask_client(ask_client: bool, peer: &Peer<RoleServer>) -> Result<(), String> {
        if ask_client && !elicit::can_ask(peer) {
            return Err(
                "ask_client needs a client that declared the elicitation capability in \
                        an initialize handshake, and this session did not (Claude Code on the \
                        newer handshake cannot receive it). Leave ask_client out and answer \
                        Codex's requests with job_respond"
                    .to_owned(),
            );
        }
        Ok(())
    }

    fn budget(&self, asked: Option<usize>) -> Result<Budget, String> {
        Budget::asked(asked, self.settings.answer_budget)
    }

    /// Runs `start`, which makes a new job, under this session's `--max-jobs-per-session`.
    async fn new_job(
        &self,
        start: impl Future<Output = Result<JobSnapshot, JobError>>,
    ) -> Result<JobSnapshot, String> {
        let cap = self.settings.max_jobs_per_session;
        let start = async { start.await.map_err(user_error) };
        self.session_jobs.start(&self.manager, cap, start).await
    }

    /// Starts a job as `job_start` (and `codex`) asks.
    pub(super) async fn start_job(
        &self,
        args: StartArgs,
        peer: Peer<RoleServer>,
    ) -> Result<JobSnapshot, String> {
        Self::check_ask_client(args.ask_client, &peer)?;
        // Subscribed first: Codex may ask before job_start answers.
        let requests = args.ask_client.then(|| self.manager.subscribe_requests());
        let start = self.manager.start(StartRequest {
            prompt: args.prompt,
            cwd: args.cwd,
            model: args.model,
            profile: args.profile,
            approval_policy: args.approval_policy,
            sandbox: args.sandbox.map(|s| s.as_str().to_owned()),
            config: args.config,
            base_instructions: args.base_instructions,
            developer_instructions: args.developer_instructions,
            client_request_id: args.client_request_id,
            approvals: args.approvals,
            max_turn_seconds: args.max_turn_seconds,
            effort: args.effort,
            summary: args.summary,
            output_schema: args.output_schema.map(serde_json::Value::Object),
            isolation: args.isolation,
            base_ref: args.base_ref,
            review: None,
        });
        let job = self.new_job(start).await?;
        if let Some(requests) = requests {
            self.relays
                .start(self.manager.clone(), peer, job.job_id.clone(), requests);
        }
        Ok(job)
    }

    /// Continues a job as `job_reply` asks.
    pub(super) async fn reply_job(
        &self,
        args: ReplyArgs,
        peer: Peer<RoleServer>,
    ) -> Result<JobSnapshot, String> {
        Self::check_ask_client(args.ask_client, &peer)?;
        let requests = args.ask_client.then(|| self.manager.subscribe_requests());
        let reply = ReplyRequest {
            prompt: args.prompt,
            approval_policy: args.approval_policy,
            approvals: args.approvals,
            max_turn_seconds: args.max_turn_seconds,
            effort: args.effort,
            summary: args.summary,
            output_schema: args.output_schema.map(serde_json::Value::Object),
        };
        let job = self
            .manager
            .reply(&args.job_id, reply)
            .await
            .map_err(user_error)?;
        if let Some(requests) = requests {
            self.relays
                .start(self.manager.clone(), peer, job.job_id.clone(), requests);
        }
        Ok(job)
    }

    /// Waits on the feed as `job_wait` does, sending `notifications/progress` while it waits when
    /// the request carries a progress token; ends early when the caller leaves.
    async fn wait_with_progress(
        &self,
        cursor: Option<u64>,
        job_id: Option<&str>,
        timeout: Duration,
        meta: &RequestMetaObject,
        peer: &Peer<RoleServer>,
        cancelled: &CancellationToken,
    ) -> Result<WaitAnswer, String> {
        // Cancelled by `notifications/cancelled`, a closed HTTP stream or the session's end.
        let wait = self.manager.wait(cursor, job_id, timeout, cancelled);
        tokio::pin!(wait);
        let progress_token = meta.get_progress_token();
        let mut ticks = tokio::time::interval(self.settings.progress_interval);
        ticks.tick().await;
        let mut sent = 0u32;
        loop {
            tokio::select! {
                answer = &mut wait => break answer,
                _ = ticks.tick(), if progress_token.is_some() => {
                    if let Some(token) = &progress_token {
                        sent += 1;
                        let note = ProgressNotificationParam::new(token.clone(), f64::from(sent))
                            .with_message("waiting for a job notification");
                        if let Err(e) = peer.notify_progress(note).await {
                            tracing::debug!(error = %e, "could not send progress");
                        }
                    }
                }
            }
        }
        .inspect_err(|e| {
            if matches!(e, JobError::Cancelled) {
                tracing::debug!("job_wait: the client left; the wait ended");
            }
        })
        .map_err(user_error)
    }

    /// `job_start`'s answer (and `codex`'s) for `job`, with what to do next.
    pub(super) fn start_out(&self, job: JobSnapshot, next: Option<String>) -> StartOut {
        let backend = self.manager.backend_info();
        StartOut {
            job,
            backend: backend.name.to_owned(),
            codex_version: backend.codex_version,
            next,
        }
    }

    #[tool(
        description = "Start a Codex job in the background; answers at once with its job_id. Then \
                       job_wait until it settles.",
        input_schema = schema::input::<StartArgs>(),
        output_schema = schema::output::<StartOut>()
    )]
    async fn job_start(
        &self,
        Parameters(args): Parameters<JsonObject>,
        peer: Peer<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let args: StartArgs = parse("job_start", args)?;
        let job = self.start_job(args, peer).await?;
        self.settings
            .answer_budget
            .answer(&self.start_out(job, None))
    }

    #[tool(
        description = "Run a task in Codex and answer with its final message: waits up to the \
                       server's max wait (job_wait goes on from there); a client with MCP tasks \
                       gets it as a background task. Takes job_start's arguments.",
        input_schema = schema::input::<StartArgs>(),
        output_schema = schema::output::<StartOut>()
    )]
    async fn codex(
        &self,
        Parameters(args): Parameters<JsonObject>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        cancelled: CancellationToken,
    ) -> Result<CallToolResult, String> {
        let args: StartArgs = parse("codex", args)?;
        let job = self.start_job(args, peer.clone()).await?;
        let id = job.job_id.as_str();
        // Until the turn ends or asks something, or the longest wait.
        self.wait_with_progress(
            None,
            Some(id),
            self.settings.max_wait,
            &meta,
            &peer,
            &cancelled,
        )
        .await?;
        let job = self.manager.snapshot(id).map_err(user_error)?;
        let next = next_step(&job);
        let out = self.start_out(job, Some(next));
        let failed = matches!(out.job.status, JobStatus::Failed | JobStatus::Interrupted);
        let mut answer = self.settings.answer_budget.answer(&out)?;
        answer.is_error = Some(failed);
        Ok(answer)
    }

    #[tool(
        description = "A job's events after cursor, oldest first (raw adds Codex's own messages). \
                       Read on from cursor while has_more; a long text is cut to max_bytes, and \
                       job_result reads a final message whole.",
        input_schema = schema::input::<EventsArgs>(),
        output_schema = schema::output::<EventsOut>()
    )]
    async fn job_events(
        &self,
        Parameters(args): Parameters<JsonObject>,
        cancelled: CancellationToken,
    ) -> Result<CallToolResult, String> {
        let args: EventsArgs = parse("job_events", args)?;
        let wait = match args.wait_seconds {
            Some(seconds) => wait_timeout("wait_seconds", seconds, self.settings.max_wait)?,
            None => Duration::ZERO,
        };
        let budget = self.budget(args.max_bytes)?;
        let types = match args.event_types {
            None => None,
            Some(names) => {
                let mut kinds = Vec::new();
                for name in &names {
                    let kind = EventKind::parse(name).ok_or_else(|| {
                        let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                        format!(
                            "unknown event type {:?} in event_types; known types: {}",
                            text::shorten(name, 100),
                            known.join(", ")
                        )
                    })?;
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                }
                Some(kinds)
            }
        };
        if args.truncate == Some(0) {
            return Err("truncate must be at least 1 (characters per string)".to_owned());
        }
        let query = EventQuery {
            after: args.cursor.unwrap_or(0),
            limit: limit(args.limit, 50)?,
            types,
            include_deltas: args.include_deltas,
            turn: None,
        };
        let page = if wait.is_zero() {
            self.manager.events(&args.job_id, &query).await
        } else {
            (self.manager)
                .events_when_any(&args.job_id, &query, wait, &cancelled)
                .await
        };
        let page = page.map_err(user_error)?;
        let mut events: Vec<Event> = page
            .events
            .into_iter()
            .map(|e| answer::view(e, args.raw))
            .collect();
        if let Some(max) = args.truncate {
            for event in &mut events {
                text::shorten_strings(&mut event.data, max);
            }
        }
        answer::say_once(&mut events);
        let snapshot = page.snapshot;
        // The latest turn's result is said by its turn_completed when this page holds it.
        let result = snapshot.result.filter(|_| {
            !events
                .iter()
                .any(|e| e.kind == EventKind::TurnCompleted && e.turn == snapshot.turn)
        });
        let mut out = EventsOut {
            job_id: snapshot.job_id,
            status: snapshot.status,
            events: Vec::new(),
            cursor: page.cursor,
            has_more: page.has_more,
            result,
            error: snapshot.error,
            requests: snapshot.requests,
        };
        // The frame may take half the budget; the events take what is left.
        let mut frame = json!({"result": out.result, "error": out.error});
        answer::cut_to_fit(&mut frame, budget.0 / 2);
        out.result = frame["result"].as_str().map(str::to_owned);
        out.error = frame["error"].as_str().map(str::to_owned);
        let room = budget.0.saturating_sub(answer::size_of(&out));
        let (taken, left_out) = budget.page(events, room);
        if left_out {
            out.has_more = true;
            out.cursor = taken.last().map_or(query.after, |e| e.seq);
        }
        let mut value = answer::to_value(&out)?;
        value["events"] = answer::events_value(taken)?;
        budget.fit(value)
    }

    #[tool(
        description = "A turn's final message (default: the latest turn's), from offset: call \
                       again with next_offset until it is absent to read any length.",
        input_schema = schema::input::<ResultArgs>(),
        output_schema = schema::output::<ResultOut>()
    )]
    async fn job_result(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<CallToolResult, String> {
        let args: ResultArgs = parse("job_result", args)?;
        let budget = self.budget(args.max_bytes)?;
        let turn = self
            .manager
            .turn_text(&args.job_id, args.turn)
            .await
            .map_err(user_error)?;
        let total_chars = turn.text.chars().count();
        let offset = args.offset.unwrap_or(0);
        if offset > total_chars {
            return Err(format!(
                "offset {offset} is past the end of the text ({total_chars} chars); pass 0 or a \
                 next_offset from job_result"
            ));
        }
        let mut out = ResultOut {
            job_id: turn.job_id,
            turn: turn.turn,
            status: turn.status,
            text: String::new(),
            offset,
            next_offset: Some(total_chars),
            total_chars,
            usage: turn.usage,
        };
        let room = budget.0.saturating_sub(answer::size_of(&out));
        let rest: String = turn.text.chars().skip(offset).collect();
        let piece = answer::prefix_within(&rest, room);
        let end = offset + piece.chars().count();
        out.text = piece;
        out.next_offset = (end < total_chars).then_some(end);
        budget.answer(&out)
    }

    #[tool(
        description = "Send the next prompt to a settled job's Codex thread, as a new turn.",
        input_schema = schema::input::<ReplyArgs>(),
        output_schema = schema::output::<ReplyOut>()
    )]
    async fn job_reply(
        &self,
        Parameters(args): Parameters<JsonObject>,
        peer: Peer<RoleServer>,
    ) -> Result<CallToolResult, String> {
        let args: ReplyArgs = parse("job_reply", args)?;
        let job = self.reply_job(args, peer).await?;
        self.settings.answer_budget.answer(&ReplyOut::from(job))
    }

    #[tool(
        description = "Start a new job on a copy of a settled job's thread (app-server), with \
                       its settings; the original is unaffected.",
        input_schema = schema::input::<ForkArgs>(),
        output_schema = schema::output::<ReplyOut>()
    )]
    async fn job_fork(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<CallToolResult, String> {
        let args: ForkArgs = parse("job_fork", args)?;
        let fork = ForkRequest {
            prompt: args.prompt.unwrap_or_default(),
            output_schema: args.output_schema.map(serde_json::Value::Object),
            max_turn_seconds: args.max_turn_seconds,
            isolation: args.isolation,
            base_ref: args.base_ref,
        };
        let start = self.manager.fork(&args.job_id, fork);
        let job = self.new_job(start).await?;
        self.settings.answer_budget.answer(&ReplyOut::from(job))
    }

    #[tool(
        description = "Run Codex's code review (app-server) as a new job whose result is the \
                       review: of a job's work (job_id) or of a directory (cwd).",
        input_schema = schema::input::<ReviewArgs>(),
        output_schema = schema::output::<ReplyOut>()
    )]
    async fn job_review(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<CallToolResult, String> {
        let args: ReviewArgs = parse("job_review", args)?;
        let source = match (args.job_id, args.cwd) {
            (Some(job), None) => ReviewSource::Job(job),
            (None, Some(cwd)) => ReviewSource::Cwd(cwd),
            _ => {
                return Err(
                    "job_review takes job_id (review that job's work) or cwd (review a \
                            directory), one of them"
                        .to_owned(),
                );
            }
        };
        let needs = |target: &str, field: &str, value: Option<String>| {
            value.ok_or_else(|| format!("target {target:?} needs {field}"))
        };
        let target = match args.target {
            ReviewKind::Uncommitted => ReviewTarget::Uncommitted,
            ReviewKind::BaseBranch => {
                ReviewTarget::BaseBranch(needs("base_branch", "branch", args.branch)?)
            }
            ReviewKind::Commit => ReviewTarget::Commit(needs("commit", "sha", args.sha)?),
            ReviewKind::Custom => {
                ReviewTarget::Custom(needs("custom", "instructions", args.instructions)?)
            }
        };
        let start = self.manager.review(source, target);
        let job = self.new_job(start).await?;
        self.settings.answer_budget.answer(&ReplyOut::from(job))
    }

    #[tool(
        description = "Remove a settled job's git worktree (and its branch with \
                       delete_branch); refused if uncommitted changes would be lost, unless force.",
        input_schema = schema::input::<CleanupArgs>(),
        output_schema = schema::output::<ReplyOut>()
    )]
    async fn job_cleanup(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<CallToolResult, String> {
        let args: CleanupArgs = parse("job_cleanup", args)?;
        let job = self
            .manager
            .cleanup(&args.job_id, args.delete_branch, args.force)
            .await
            .map_err(user_error)?;
        self.settings.answer_budget.answer(&ReplyOut::from(job))
    }

    #[tool(
        description = "Add input to a job's running turn (app-server): Codex takes it as it \
                       works, in the same turn.",
        input_schema = schema::input::<SteerArgs>(),
        output_schema = schema::output::<ReplyOut>()
    )]
    async fn job_steer(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<CallToolResult, String> {
        let args: SteerArgs = parse("job_steer", args)?;
        let job = self
            .manager
            .steer(&args.job_id, &args.prompt)
            .await
            .map_err(user_error)?;
        self.settings.answer_budget.answer(&ReplyOut::from(job))
    }

    #[tool(
        description = "Answer a request Codex made (status input_required): accept, \
                       accept_for_session, decline, or cancel (ends the turn); a question takes \
                       answers by question id.",
        input_schema = schema::input::<RespondArgs>(),
        output_schema = schema::output::<RespondOut>()
    )]
    async fn job_respond(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<CallToolResult, String> {
        let args: RespondArgs = parse("job_respond", args)?;
        let respond = RespondRequest {
            request_id: args.request_id,
            answer: Answer {
                decision: args.decision,
                answers: args.answers,
            },
            note: args.note,
        };
        let job = self
            .manager
            .respond(&args.job_id, respond)
            .await
            .map_err(user_error)?;
        self.settings.answer_budget.answer(&RespondOut {
            job_id: job.job_id,
            status: job.status,
            turn: job.turn,
            requests: job.requests,
        })
    }

    #[tool(
        description = "The feed of settled turns (all jobs, or job_id) after cursor; never \
                       blocks. A cut result has result_chars: job_result reads it whole.",
        input_schema = schema::input::<NotificationsArgs>(),
        output_schema = schema::output::<NotificationsOut>()
    )]
    async fn job_notifications(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<CallToolResult, String> {
        let args: NotificationsArgs = parse("job_notifications", args)?;
        let budget = self.budget(args.max_bytes)?;
        let (notifications, cursor) = self
            .manager
            .notifications(
                args.cursor.unwrap_or(0),
                args.job_id.as_deref(),
                limit(args.limit, 100)?,
            )
            .await
            .map_err(user_error)?;
        let mut out = NotificationsOut {
            notifications,
            cursor,
        };
        if let Some(last_kept) = budget.feed(&mut out.notifications, |n| {
            answer::size_of(&NotificationsOut {
                notifications: n.to_vec(),
                cursor,
            })
        }) {
            out.cursor = last_kept;
        }
        budget.answer(&out)
    }

    #[tool(
        description = "Wait until a job settles or needs an answer (job_id), or the feed has news \
                       past cursor, up to timeout_seconds. Each entry has the result, the error, \
                       or the request to answer with job_respond; a cut result has result_chars: \
                       job_result reads it whole.",
        input_schema = schema::input::<WaitArgs>(),
        output_schema = schema::output::<WaitOut>()
    )]
    async fn job_wait(
        &self,
        Parameters(args): Parameters<JsonObject>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        cancelled: CancellationToken,
    ) -> Result<CallToolResult, String> {
        let args: WaitArgs = parse("job_wait", args)?;
        let budget = self.budget(args.max_bytes)?;
        let timeout = wait_timeout(
            "timeout_seconds",
            args.timeout_seconds.unwrap_or(30.0),
            self.settings.max_wait,
        )?;
        tracing::debug!(job_id = ?args.job_id, ?timeout, "job_wait: waiting");
        let answer = self
            .wait_with_progress(
                args.cursor,
                args.job_id.as_deref(),
                timeout,
                &meta,
                &peer,
                &cancelled,
            )
            .await?;
        let mut out = WaitOut {
            notifications: answer.notifications,
            cursor: answer.cursor,
            timed_out: answer.timed_out,
        };
        let timed_out = out.timed_out;
        if let Some(last_kept) = budget.feed(&mut out.notifications, |n| {
            answer::size_of(&WaitOut {
                notifications: n.to_vec(),
                cursor: answer.cursor,
                timed_out,
            })
        }) {
            out.cursor = last_kept;
        }
        budget.answer(&out)
    }

    #[tool(
        description = "Stop a job's queued or running turn; its thread stays usable for job_reply.",
        input_schema = schema::input::<JobIdArgs>(),
        output_schema = schema::output::<JobSnapshot>()
    )]
    async fn job_cancel(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<CallToolResult, String> {
        let args: JobIdArgs = parse("job_cancel", args)?;
        let job = self
            .manager
            .cancel(&args.job_id)
            .await
            .map_err(user_error)?;
        self.settings.answer_budget.answer(&job)
    }

    #[tool(
        description = "Jobs, newest first, optionally those with one status.",
        input_schema = schema::input::<ListArgs>(),
        output_schema = schema::output::<ListOut>()
    )]
    async fn job_list(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<CallToolResult, String> {
        let args: ListArgs = parse("job_list", args)?;
        let budget = self.budget(args.max_bytes)?;
        let mut out = ListOut {
            jobs: self.manager.list(args.status, limit(args.limit, 50)?),
            has_more: false,
        };
        while out.jobs.len() > 1 && answer::size_of(&out) > budget.0 {
            out.jobs.pop();
            out.has_more = true;
        }
        budget.answer(&out)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for JobServer {
    /// A client that declared the MCP tasks extension gets `job_start`, `job_reply` and `codex`
    /// as tasks; everything else goes to the tools as it is.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        // A request without a session counts its jobs with every other such request.
        let sessionless = context
            .extensions
            .get::<axum::http::request::Parts>()
            .is_some_and(|parts| !parts.headers.contains_key("mcp-session-id"));
        let shared;
        let this = if sessionless {
            shared = Self {
                session_jobs: self.settings.sessionless_jobs.clone(),
                ..self.clone()
            };
            &shared
        } else {
            self
        };
        let tasks = context
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks());
        if tasks && tasks::TASK_TOOLS.contains(&request.name.as_ref()) {
            let args = request.arguments.unwrap_or_default();
            let peer = context.peer.clone();
            return Ok(this.start_task(&request.name, args, peer).await);
        }
        let call = ToolCallContext::new(this, request, context);
        this.tool_router.call(call).await
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        self.get_task_state(request).await
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.update_task_input(request).await
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.cancel_task_turn(request).await
    }

    /// `subscriptions/listen` is acknowledged (Claude Code waits for that before it goes on);
    /// the server sends no list-changed notifications.
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.clone())
    }

    #[allow(deprecated)] // MCP logging (SEP-2577), still used by clients of earlier versions
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.client_log.set_level(&context.peer, request.level);
        Ok(())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(resources::list())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        resources::read(&self.manager, &request.uri).map(Into::into)
    }

    #[allow(deprecated)] // enable_logging: MCP logging (SEP-2577), see set_level
    fn get_info(&self) -> ServerConfig {
        let backend = self.manager.backend_info();
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tasks()
                .enable_resources()
                .enable_logging()
                .build(),
        )
        .with_server_info(Implementation::new(
            "codex-async-mcp",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(format!(
            "Runs Codex {} ({}) coding tasks as background jobs. job_start answers at once; \
                 job_wait waits until the job settles and gives its result, or until Codex asks \
                 something (status input_required): answer with job_respond. job_result reads a \
                 long final message whole; job_events shows the steps.",
            backend.codex_version, backend.name
        ))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2026_07_28))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_wait_a_client_asks_for_is_capped_and_none_panics() {
        let max = Duration::from_secs(300);
        for huge in [1e20, 1e308, f64::INFINITY, f64::MAX] {
            assert_eq!(
                wait_timeout("timeout_seconds", huge, max),
                Ok(max),
                "{huge}"
            );
        }
        assert_eq!(
            wait_timeout("timeout_seconds", -0.0, max),
            Ok(Duration::ZERO)
        );
        assert_eq!(
            wait_timeout("timeout_seconds", 1e-300, max),
            Ok(Duration::ZERO)
        );
        assert_eq!(
            wait_timeout("timeout_seconds", 1.5, max),
            Ok(Duration::from_millis(1500))
        );
        assert!(wait_timeout("timeout_seconds", f64::NAN, max).is_err());
    }

    #[test]
    fn a_wait_of_no_number_of_seconds_is_refused_naming_the_argument() {
        let refused = wait_timeout("wait_seconds", -1.0, Duration::from_secs(300));
        assert_eq!(
            refused,
            Err("wait_seconds must be a number of seconds, 0 or more; got -1".to_owned())
        );
    }
}
