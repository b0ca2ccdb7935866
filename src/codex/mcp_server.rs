//! The backend for `codex mcp-server` (Codex 0.153 and earlier): one long-lived child, spoken to
//! as an MCP client over newline-delimited JSON-RPC.
//!
//! A turn is one `tools/call` of `codex` (new thread) or `codex-reply` (same thread); its progress
//! arrives as `codex/event` notifications tagged with the call's id in `_meta.requestId`, and its
//! answer ends the turn. One task reads the child's stdout and turns each message into a
//! [`BackendEvent`] in the order it was read. Quirks of the real binary that shape this file:
//!
//! - a cancelled call is never answered; `turn_aborted` is the last word about it;
//! - after a cancel, Codex tags the next `codex-reply`'s events, and answers it, under the
//!   *cancelled* id, so events and answers are routed by job, not by id alone;
//! - approval requests are `elicitation/create` with `codex_*` fields, and only a
//!   `{"decision": ...}` answer is read;
//! - the child does not exit on stdin EOF while a call is unanswered, so it is killed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::mapping::{Mapped, command_line};
use super::mcp_events;
use super::rpc::{Incoming, RpcError, RpcReader};
use super::session::{self, ChildSlot, Handshake, fail_orphans};
use super::{
    ApprovalAnswer, Backend, BackendError, BackendEvent, BackendInfo, CodexSettings, Outbox,
    ThreadRef, TurnEnd, TurnInput, Update, check_approval_policy, detect, thread_fields,
};
use crate::jobs::{EventKind, JobId, ThreadOptions};

/// How long `start_turn` waits for Codex to name a new thread.
const THREAD_NAMING_WAIT: Duration = Duration::from_secs(5);
/// The approval policies `codex mcp-server` accepts.
const APPROVAL_POLICIES: [&str; 2] = ["on-request", "never"];

pub struct McpServerBackend {
    version: detect::Version,
    events: mpsc::Sender<BackendEvent>,
    child: ChildSlot<Routes>,
}

type Session = session::Session<Routes>;

/// Which job a message belongs to.
#[derive(Default)]
struct Routes {
    /// Every `tools/call` id this child was sent, to the job it was for.
    by_request: HashMap<i64, JobId>,
    by_thread: HashMap<String, JobId>,
    /// Jobs with a turn running in this child, and the id of that turn's call.
    running: HashMap<JobId, RunningTurn>,
}

struct RunningTurn {
    request_id: i64,
    task_complete: Option<Value>,
    /// Told the thread id when Codex names the new thread.
    thread_named: Option<oneshot::Sender<String>>,
}

impl Routes {
    fn job_for(&self, request_id: Option<i64>, thread_id: Option<&str>) -> Option<JobId> {
        request_id
            .and_then(|id| self.by_request.get(&id))
            .or_else(|| thread_id.and_then(|t| self.by_thread.get(t)))
            .cloned()
    }
}

impl McpServerBackend {
    /// Starts the child and completes the MCP handshake.
    pub async fn start(
        settings: CodexSettings,
        version: detect::Version,
        events: mpsc::Sender<BackendEvent>,
    ) -> Result<Self, BackendError> {
        let backend = Self {
            version,
            events,
            child: ChildSlot::new(settings, "mcp-server"),
        };
        backend.session().await?;
        Ok(backend)
    }

    /// The live session, starting a new child if there is none or the last one died.
    async fn session(&self) -> Result<Arc<Session>, BackendError> {
        let handshake = Handshake {
            method: "initialize",
            params: json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {"elicitation": {}},
                "clientInfo": {"name": "codex-async-mcp", "version": env!("CARGO_PKG_VERSION")},
            }),
            initialized: "notifications/initialized",
        };
        let (events, approvals) = (self.events.clone(), self.child.settings().approvals);
        self.child
            .session(&handshake, move |session, reader| {
                read_loop(session, reader, events, approvals)
            })
            .await
    }
}

/// The arguments of the `codex` tool for a new thread.
fn codex_arguments(prompt: &str, options: &ThreadOptions) -> Value {
    let names = [
        "model",
        "approval-policy",
        "sandbox",
        "base-instructions",
        "developer-instructions",
    ];
    let mut args = thread_fields(options, names);
    args.insert("prompt".into(), json!(prompt));
    Value::Object(args)
}

impl Backend for McpServerBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "mcp-server",
            codex_version: self.version.to_string(),
        }
    }

    fn validate(&self, options: &ThreadOptions) -> Result<(), String> {
        check_approval_policy(&self.info(), options, &APPROVAL_POLICIES)
    }

    fn start_turn<'a>(
        &'a self,
        job: &'a JobId,
        input: TurnInput,
    ) -> BoxFuture<'a, Result<Option<String>, BackendError>> {
        async move {
            let session = self.session().await?;
            let id = session.rpc.reserve_id();
            let (tool, arguments) = match &input.thread {
                ThreadRef::New => ("codex", codex_arguments(&input.prompt, &input.options)),
                ThreadRef::Existing(thread_id) => (
                    "codex-reply",
                    json!({"threadId": thread_id, "prompt": input.prompt}),
                ),
            };
            let (thread_named, named) = oneshot::channel();
            // File the routes before the request goes out: Codex may answer at once.
            if let Ok(mut routes) = session.routes.lock() {
                routes.by_request.insert(id, job.clone());
                if let ThreadRef::Existing(thread_id) = &input.thread {
                    routes.by_thread.insert(thread_id.clone(), job.clone());
                }
                routes.running.insert(
                    job.clone(),
                    RunningTurn {
                        request_id: id,
                        task_complete: None,
                        thread_named: Some(thread_named),
                    },
                );
            }
            let sent = session
                .rpc
                .send_routed(
                    id,
                    "tools/call",
                    json!({"name": tool, "arguments": arguments}),
                )
                .await;
            if let Err(e) = sent {
                if let Ok(mut routes) = session.routes.lock() {
                    routes.running.remove(job);
                }
                return Err(BackendError::Io(e.to_string()));
            }
            match input.thread {
                ThreadRef::Existing(thread_id) => Ok(Some(thread_id)),
                // Codex names a new thread in its first event, within milliseconds; a turn that
                // ends first, or a slow Codex, leaves the id to the `thread_started` event.
                ThreadRef::New => Ok(tokio::time::timeout(THREAD_NAMING_WAIT, named)
                    .await
                    .ok()
                    .and_then(Result::ok)),
            }
        }
        .boxed()
    }

    fn can_continue<'a>(&'a self, thread_id: &'a str) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let known = self.child.current().await.is_some_and(|s| {
                !s.rpc.has_exited()
                    && s.routes
                        .lock()
                        .is_ok_and(|r| r.by_thread.contains_key(thread_id))
            });
            if known {
                return Ok(());
            }
            Err(format!(
                "Codex thread {thread_id} cannot be continued: codex mcp-server keeps threads only \
                 in memory, and this one belonged to a Codex process that has since exited (the \
                 server restarted, or Codex stopped). Start a new job with job_start"
            ))
        }
        .boxed()
    }

    fn interrupt<'a>(&'a self, job: &'a JobId) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            let Some(session) = self.child.current().await else {
                return Err(BackendError::NoRunningTurn);
            };
            let request_id = session
                .routes
                .lock()
                .ok()
                .and_then(|r| r.running.get(job).map(|t| t.request_id))
                .ok_or(BackendError::NoRunningTurn)?;
            session
                .rpc
                .notify(
                    "notifications/cancelled",
                    json!({"requestId": request_id, "reason": "cancelled with job_cancel"}),
                )
                .await
                .map_err(|e| BackendError::Io(e.to_string()))
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.child.shutdown().boxed()
    }
}

/// Reads the child's stdout to the end, reporting each message in order, then fails the turns
/// the child was running.
async fn read_loop(
    session: Arc<Session>,
    mut reader: RpcReader,
    events: mpsc::Sender<BackendEvent>,
    approvals: ApprovalAnswer,
) {
    let out = Outbox::new(events);
    while let Some(message) = reader.next().await {
        match message {
            Incoming::Notification { method, params } if method == "codex/event" => {
                on_codex_event(&session, &out, params).await;
            }
            Incoming::Notification { method, .. } => {
                tracing::debug!(%method, "ignoring notification from codex");
            }
            Incoming::Request { id, method, params }
                if method == "elicitation/create" && params.get("codex_elicitation").is_some() =>
            {
                on_approval(&session, &out, id, params, approvals).await;
            }
            Incoming::Request { id, method, .. } => {
                tracing::warn!(%method, "codex sent a request we do not handle");
                let message = format!("codex-async-mcp does not handle `{method}`");
                if let Err(e) = session.rpc.respond_error(id, -32601, &message).await {
                    tracing::warn!(error = %e, "could not answer codex");
                }
            }
            Incoming::Response { id, outcome } => on_turn_answer(&session, &out, id, outcome).await,
            Incoming::Garbage(line) => {
                let shown: String = line.chars().take(200).collect();
                tracing::warn!(line = %shown, "codex wrote a line that is not JSON-RPC; ignored");
            }
        }
    }

    let exit = session.exited("mcp-server").await;
    let orphaned: Vec<JobId> = session
        .routes
        .lock()
        .map(|mut r| r.running.drain().map(|(job, _)| job).collect())
        .unwrap_or_default();
    fail_orphans(&out, orphaned, &exit).await;
}

async fn on_codex_event(session: &Session, out: &Outbox, params: Value) {
    let meta = params.get("_meta");
    let request_id = meta
        .and_then(|m| m.get("requestId"))
        .and_then(Value::as_i64);
    let thread_id = meta.and_then(|m| m.get("threadId")).and_then(Value::as_str);
    let Some(msg) = params.get("msg") else {
        tracing::warn!("codex/event without msg; ignored");
        return;
    };
    let mapped = mcp_events::map(msg);
    // Decide routing and turn bookkeeping under the lock, send after releasing it.
    let update = {
        let Ok(mut routes) = session.routes.lock() else {
            return;
        };
        let Some(job) = routes.job_for(request_id, thread_id) else {
            tracing::debug!(?request_id, "codex/event for no known job; ignored");
            return;
        };
        let update = match mapped {
            Mapped::Skip => None,
            Mapped::Record(kind, data) => Some(Update::Event { kind, data }),
            Mapped::ThreadStarted { thread_id, data } => {
                routes.by_thread.insert(thread_id.clone(), job.clone());
                if let Some(named) = routes
                    .running
                    .get_mut(&job)
                    .and_then(|turn| turn.thread_named.take())
                {
                    let _ = named.send(thread_id.clone());
                }
                Some(Update::Thread { thread_id, data })
            }
            Mapped::TaskComplete(msg) => {
                if let Some(turn) = routes.running.get_mut(&job) {
                    turn.task_complete = Some(msg);
                }
                None
            }
            Mapped::TurnEnded(end) => routes.running.remove(&job).map(|_| Update::TurnEnded(end)),
        };
        update.map(|u| (job, u))
    };
    if let Some((job, update)) = update {
        out.send(job, update).await;
    }
}

/// The answer to a turn's `tools/call` ends that job's running turn, whichever id it came under.
async fn on_turn_answer(
    session: &Session,
    out: &Outbox,
    id: i64,
    outcome: Result<Value, RpcError>,
) {
    let ended = session.routes.lock().ok().and_then(|mut routes| {
        let job = routes.by_request.get(&id).cloned()?;
        let turn = routes.running.remove(&job)?;
        Some((job, turn))
    });
    let Some((job, turn)) = ended else {
        tracing::debug!(id, "late answer from codex for a settled turn; ignored");
        return;
    };
    let end = match outcome {
        Ok(result) => {
            let content = result
                .pointer("/structuredContent/content")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    result
                        .pointer("/content/0/text")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
            let data = json!({"codex": {"result": result, "task_complete": turn.task_complete}});
            if result.get("isError").and_then(Value::as_bool) == Some(true) {
                TurnEnd::Failed {
                    error: content.unwrap_or_else(|| "Codex reported an error".to_owned()),
                    data,
                }
            } else {
                TurnEnd::Completed {
                    result: content,
                    data,
                }
            }
        }
        Err(e) => TurnEnd::Failed {
            error: e.to_string(),
            data: json!({}),
        },
    };
    out.send(job, Update::TurnEnded(end)).await;
}

/// Answers an approval request by the server's policy, recording the request and the answer.
async fn on_approval(
    session: &Session,
    out: &Outbox,
    id: Value,
    params: Value,
    policy: ApprovalAnswer,
) {
    let call_id = params
        .get("codex_mcp_tool_call_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<i64>().ok());
    let thread_id = params.get("threadId").and_then(Value::as_str);
    let job = session
        .routes
        .lock()
        .ok()
        .and_then(|r| r.job_for(call_id, thread_id));
    // What Codex reads, and what we record. A request for no job of ours is refused.
    let (answer, decision) = match (policy, &job) {
        (ApprovalAnswer::Approve, Some(_)) => ("approved", "approved"),
        _ => ("denied", "declined"),
    };
    let approval_id = params
        .get("codex_call_id")
        .and_then(Value::as_str)
        .map_or_else(|| format!("request-{id}"), str::to_owned);
    let kind = match params.get("codex_elicitation").and_then(Value::as_str) {
        Some("patch-approval") => "file_change",
        _ => "command",
    };
    if let Some(job) = &job {
        let data = json!({
            "approval_id": approval_id,
            "kind": kind,
            "command": params.get("codex_command").map(command_line),
            "cwd": params.get("codex_cwd"),
            "reason": params.get("message"),
            "codex": params,
        });
        out.send(
            job.clone(),
            Update::Event {
                kind: EventKind::ApprovalRequested,
                data,
            },
        )
        .await;
    } else {
        tracing::warn!(?call_id, "approval request for no known job; declining");
    }
    let answered = session.rpc.respond(id, json!({"decision": answer})).await;
    if let Some(job) = job {
        let data = json!({
            "approval_id": approval_id,
            "decision": decision,
            "decided_by": "server_policy",
            "delivered": answered.is_ok(),
            "codex": {"decision": answer},
        });
        out.send(
            job,
            Update::Event {
                kind: EventKind::ApprovalResolved,
                data,
            },
        )
        .await;
    }
}
