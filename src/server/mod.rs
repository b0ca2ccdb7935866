//! Downstream: the `job_*` tools served over MCP, on stdio (`stdio`) or HTTP (`http`:
//! streamable HTTP, or the legacy SSE transport of `sse`). Every transport decodes what clients
//! send with `jsonrpc`, so a message that cannot be decoded gets a JSON-RPC error.
//!
//! Each handler parses its arguments, calls the engine and shapes the answer. Errors a user can
//! cause come back as tool results with `isError: true` whose text says what to do; the
//! arguments are parsed here rather than by rmcp so that a typo gets such an answer too. No
//! value a client sends can panic a handler (a panic would leave its request unanswered).

pub(crate) mod http;
mod jsonrpc;
mod respond;
mod sse;
mod stdio;
mod tools;

pub(crate) use stdio::serve_stdio;

use std::borrow::Cow;
use std::time::Duration;

use rmcp::handler::server::common::schema_for_input;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{
    Implementation, JsonObject, ProgressNotificationParam, ProtocolVersion, RequestMetaObject,
    ServerCapabilities, ServerConfig,
};
use rmcp::{Peer, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::jobs::{EventKind, EventQuery, JobError, JobManager, JobSnapshot, StartRequest};
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
}

#[derive(Clone)]
pub struct JobServer {
    manager: JobManager,
    settings: ServerSettings,
    tool_router: ToolRouter<Self>,
}

/// Parses a tool's arguments; a mistake becomes an answer that names it.
fn parse<T: DeserializeOwned>(tool: &str, args: JsonObject) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::Object(args)).map_err(|e| {
        // The parser's message may quote a client's whole value back.
        let e = text::shorten(&e.to_string(), 300);
        format!("invalid arguments for {tool}: {e}. The tool's input schema lists what it takes")
    })
}

/// The answer to a failed call: the log gets a store failure's details, the client its kind.
fn user_error(e: JobError) -> String {
    if let JobError::Store(inner) = &e {
        tracing::error!(error = %inner, "store failure");
    }
    e.public()
}

/// `job_wait`'s timeout: at most `max`, and any number a client may send is fine (no panic on
/// `1e308`); refused only when it is not a number of seconds.
fn wait_timeout(seconds: f64, max: Duration) -> Result<Duration, String> {
    if seconds.is_nan() || seconds < 0.0 {
        return Err(format!(
            "timeout_seconds must be a number of seconds, 0 or more; got {seconds}"
        ));
    }
    Ok(Duration::try_from_secs_f64(seconds).map_or(max, |asked| asked.min(max)))
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
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Start a Codex job in the background and return its id at once, without waiting for \
                       the turn. Follow it with job_wait, job_events or job_notifications.",
        input_schema = schema_for_input::<StartArgs>().unwrap_or_default()
    )]
    async fn job_start(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<StartOut>, String> {
        let args: StartArgs = parse("job_start", args)?;
        let job = self
            .manager
            .start(StartRequest {
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
            })
            .await
            .map_err(user_error)?;
        let query = EventQuery {
            limit: 50,
            ..EventQuery::default()
        };
        // The status as it is after the events were read, and the events' own cursor, so the
        // cursor is never behind (nor ahead of) the events returned with it.
        let page = self
            .manager
            .events(job.job_id.as_str(), &query)
            .map_err(user_error)?;
        let job = JobSnapshot {
            cursor: page.cursor,
            ..page.snapshot
        };
        let backend = self.manager.backend_info();
        Ok(Json(StartOut {
            job,
            events: page.events,
            backend: backend.name.to_owned(),
            codex_version: backend.codex_version,
        }))
    }

    #[tool(
        description = "Read a job's events, oldest first, from a cursor. Streaming deltas are hidden unless \
                       include_deltas is set. Also returns the job's status and, once a turn completed, its result.",
        input_schema = schema_for_input::<EventsArgs>().unwrap_or_default()
    )]
    async fn job_events(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<EventsOut>, String> {
        let args: EventsArgs = parse("job_events", args)?;
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
        };
        let mut answer = self
            .manager
            .events(&args.job_id, &query)
            .map_err(user_error)?;
        if let Some(max) = args.truncate {
            for event in &mut answer.events {
                text::shorten_strings(&mut event.data, max);
            }
        }
        Ok(Json(EventsOut {
            job_id: answer.snapshot.job_id,
            status: answer.snapshot.status,
            events: answer.events,
            cursor: answer.cursor,
            has_more: answer.has_more,
            result: answer.snapshot.result,
            error: answer.snapshot.error,
        }))
    }

    #[tool(
        description = "Send the next message in a job's Codex thread, as a new turn. Refused while the job's \
                       turn is still running: wait for it (job_wait) or stop it (job_cancel) first.",
        input_schema = schema_for_input::<ReplyArgs>().unwrap_or_default()
    )]
    async fn job_reply(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<ReplyOut>, String> {
        let args: ReplyArgs = parse("job_reply", args)?;
        let job = self
            .manager
            .reply(&args.job_id, args.prompt)
            .await
            .map_err(user_error)?;
        Ok(Json(ReplyOut {
            job_id: job.job_id,
            status: job.status,
            turn: job.turn,
            cursor: job.cursor,
        }))
    }

    #[tool(
        description = "Read the global feed of status changes that matter (turn completed, failed, cancelled, \
                       interrupted, input required) from a cursor. Never blocks.",
        input_schema = schema_for_input::<NotificationsArgs>().unwrap_or_default()
    )]
    async fn job_notifications(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<NotificationsOut>, String> {
        let args: NotificationsArgs = parse("job_notifications", args)?;
        let (notifications, cursor) = self
            .manager
            .notifications(
                args.cursor.unwrap_or(0),
                args.job_id.as_deref(),
                limit(args.limit, 100)?,
            )
            .map_err(user_error)?;
        Ok(Json(NotificationsOut {
            notifications,
            cursor,
        }))
    }

    #[tool(
        description = "Block until the feed has a notification past cursor (for job_id if given), or the \
                       timeout passes. With job_id and no cursor it answers at once if the job is already \
                       settled. Sends progress notifications while waiting when the request has a progress token.",
        input_schema = schema_for_input::<WaitArgs>().unwrap_or_default()
    )]
    async fn job_wait(
        &self,
        Parameters(args): Parameters<JsonObject>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        cancelled: CancellationToken,
    ) -> Result<Json<WaitOut>, String> {
        let args: WaitArgs = parse("job_wait", args)?;
        let timeout = wait_timeout(args.timeout_seconds.unwrap_or(30.0), self.settings.max_wait)?;
        tracing::debug!(job_id = ?args.job_id, ?timeout, "job_wait: waiting");
        // Cancelled by `notifications/cancelled`, a closed HTTP stream or the session's end.
        let wait = self
            .manager
            .wait(args.cursor, args.job_id.as_deref(), timeout, &cancelled);
        tokio::pin!(wait);
        let progress_token = meta.get_progress_token();
        let mut ticks = tokio::time::interval(self.settings.progress_interval);
        ticks.tick().await;
        let mut sent = 0u32;
        let answer = loop {
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
        .map_err(user_error)?;
        Ok(Json(WaitOut {
            notifications: answer.notifications,
            cursor: answer.cursor,
            timed_out: answer.timed_out,
        }))
    }

    #[tool(
        description = "Cancel a job's queued or running turn. The Codex thread stays usable: job_reply continues it.",
        input_schema = schema_for_input::<JobIdArgs>().unwrap_or_default()
    )]
    async fn job_cancel(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<JobSnapshot>, String> {
        let args: JobIdArgs = parse("job_cancel", args)?;
        self.manager
            .cancel(&args.job_id)
            .await
            .map(Json)
            .map_err(user_error)
    }

    #[tool(
        description = "List jobs, newest first, optionally only those with one status.",
        input_schema = schema_for_input::<ListArgs>().unwrap_or_default()
    )]
    async fn job_list(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<ListOut>, String> {
        let args: ListArgs = parse("job_list", args)?;
        let jobs = self.manager.list(args.status, limit(args.limit, 50)?);
        Ok(Json(ListOut { jobs }))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for JobServer {
    fn get_info(&self) -> ServerConfig {
        let backend = self.manager.backend_info();
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("codex-async-mcp", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "Runs OpenAI Codex tasks as background jobs (Codex {} via {}). job_start returns a job id \
                 at once; then job_wait (blocks briefly), job_events (the job's events from a cursor), \
                 job_reply (next turn in the same thread), job_cancel, job_list and job_notifications.",
                backend.codex_version, backend.name
            ))
    }

    // 2026-07-28 is initialize-less and brings behaviour we do not serve.
    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_wait_a_client_asks_for_is_capped_and_none_panics() {
        let max = Duration::from_secs(300);
        for huge in [1e20, 1e308, f64::INFINITY, f64::MAX] {
            assert_eq!(wait_timeout(huge, max), Ok(max), "{huge}");
        }
        assert_eq!(wait_timeout(-0.0, max), Ok(Duration::ZERO));
        assert_eq!(wait_timeout(1e-300, max), Ok(Duration::ZERO));
        assert_eq!(wait_timeout(1.5, max), Ok(Duration::from_millis(1500)));
        assert!(wait_timeout(-1.0, max).is_err());
        assert!(wait_timeout(f64::NAN, max).is_err());
    }
}
