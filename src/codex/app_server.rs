//! The backend for `codex app-server` (Codex 0.154 and later; 0.153 has it too): one long-lived
//! child spoken to in JSON-RPC over stdio.
//!
//! A job's first turn is `thread/start` then `turn/start`; a reply is another `turn/start` on the
//! same thread (after `thread/resume` when this child has not loaded the thread, e.g. after a
//! restart: app-server keeps threads on disk). `turn/interrupt` cancels; `turn/completed` ends a
//! turn. Notifications name their thread, which names the job. One task reads the child's
//! stdout and reports in order; the answers to `thread/start` and `turn/start` are routed through
//! it too, so a thread's route is filed before the first notification about it is read.
//! Every request the child sends is answered: approvals by the server's policy, anything else
//! with an error.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::mapping::Mapped;
use super::rpc::{Incoming, RpcError, RpcReader};
use super::session::{self, ChildSlot, Handshake, fail_orphans};
use super::{
    ApprovalAnswer, Backend, BackendError, BackendEvent, BackendInfo, CodexSettings, Outbox,
    ThreadRef, TurnInput, Update, app_events, check_approval_policy, detect, thread_fields,
};
use crate::jobs::{EventKind, JobId, ThreadOptions};

/// How long app-server may take to answer `thread/start`, `thread/resume`, `turn/start` or
/// `turn/interrupt`.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The approval policies `thread/start` accepts.
const APPROVAL_POLICIES: [&str; 3] = ["untrusted", "on-request", "never"];

pub struct AppServerBackend {
    version: detect::Version,
    events: mpsc::Sender<BackendEvent>,
    child: ChildSlot<Routes>,
}

type Session = session::Session<Routes>;

#[derive(Default)]
struct Routes {
    by_thread: HashMap<String, JobId>,
    /// Threads this child has started or resumed.
    loaded: HashSet<String>,
    running: HashMap<JobId, Running>,
    /// Requests whose answers the reader files before passing them on.
    calls: HashMap<i64, Call>,
}

struct Running {
    thread_id: String,
    turn_id: Option<String>,
}

struct Call {
    job: JobId,
    kind: CallKind,
    reply: oneshot::Sender<Result<Value, RpcError>>,
}

enum CallKind {
    /// `thread/start` or `thread/resume`: the answer names the thread.
    OpenThread,
    /// `turn/start`: the answer names the turn.
    StartTurn,
}

impl AppServerBackend {
    /// Starts the child and completes the handshake; fails if this Codex has no app-server.
    pub async fn start(
        settings: CodexSettings,
        version: detect::Version,
        events: mpsc::Sender<BackendEvent>,
    ) -> Result<Self, BackendError> {
        let backend = Self {
            version,
            events,
            child: ChildSlot::new(settings, "app-server"),
        };
        backend.session().await?;
        tracing::info!(codex = %backend.child.settings().bin, %version, "using codex app-server");
        Ok(backend)
    }

    /// The live session, starting a new child if there is none or the last one died.
    async fn session(&self) -> Result<Arc<Session>, BackendError> {
        let handshake = Handshake {
            method: "initialize",
            params: json!({
                "clientInfo": {"name": "codex-async-mcp", "title": "codex-async-mcp", "version": env!("CARGO_PKG_VERSION")},
                "capabilities": {"experimentalApi": false},
            }),
            initialized: "initialized",
        };
        let (events, approvals) = (self.events.clone(), self.child.settings().approvals);
        self.child
            .session(&handshake, move |session, reader| {
                read_loop(session, reader, events, approvals)
            })
            .await
    }
}

impl Session {
    /// Sends a request whose answer the reader files (see [`CallKind`]) and waits for it.
    async fn routed_call(
        &self,
        job: &JobId,
        kind: CallKind,
        method: &str,
        params: Value,
    ) -> Result<Value, BackendError> {
        let id = self.rpc.reserve_id();
        let (reply, answer) = oneshot::channel();
        if let Ok(mut routes) = self.routes.lock() {
            routes.calls.insert(
                id,
                Call {
                    job: job.clone(),
                    kind,
                    reply,
                },
            );
        }
        let forget = || {
            if let Ok(mut routes) = self.routes.lock() {
                routes.calls.remove(&id);
            }
        };
        if let Err(e) = self.rpc.send_routed(id, method, params).await {
            forget();
            return Err(BackendError::Io(e.to_string()));
        }
        match tokio::time::timeout(CALL_TIMEOUT, answer).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(e))) => Err(BackendError::Io(format!("`{method}` failed: {e}"))),
            Ok(Err(_)) => Err(BackendError::Io(format!(
                "Codex exited before answering `{method}`"
            ))),
            Err(_) => {
                forget();
                Err(BackendError::Io(format!(
                    "Codex did not answer `{method}` within {} s",
                    CALL_TIMEOUT.as_secs()
                )))
            }
        }
    }
}

/// `thread/start`'s parameters for a new thread.
fn thread_start_params(options: &ThreadOptions) -> Value {
    let names = [
        "model",
        "approvalPolicy",
        "sandbox",
        "baseInstructions",
        "developerInstructions",
    ];
    Value::Object(thread_fields(options, names))
}

impl Backend for AppServerBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "app-server",
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
            let thread_id = match &input.thread {
                ThreadRef::New => {
                    let started = session
                        .routed_call(
                            job,
                            CallKind::OpenThread,
                            "thread/start",
                            thread_start_params(&input.options),
                        )
                        .await?;
                    thread_id_of(&started)?
                }
                ThreadRef::Existing(thread_id) => {
                    let loaded = session
                        .routes
                        .lock()
                        .is_ok_and(|r| r.loaded.contains(thread_id));
                    if !loaded {
                        // Not in this child's memory (a restart, or a new child): load it from disk.
                        session
                            .routed_call(
                                job,
                                CallKind::OpenThread,
                                "thread/resume",
                                json!({"threadId": thread_id, "excludeTurns": true}),
                            )
                            .await?;
                    }
                    thread_id.clone()
                }
            };
            if let Ok(mut routes) = session.routes.lock() {
                routes.by_thread.insert(thread_id.clone(), job.clone());
                routes.running.insert(
                    job.clone(),
                    Running {
                        thread_id: thread_id.clone(),
                        turn_id: None,
                    },
                );
            }
            let started = session
                .routed_call(
                    job,
                    CallKind::StartTurn,
                    "turn/start",
                    json!({"threadId": thread_id, "input": [{"type": "text", "text": input.prompt}]}),
                )
                .await;
            if let Err(e) = started {
                if let Ok(mut routes) = session.routes.lock() {
                    routes.running.remove(job);
                }
                return Err(e);
            }
            Ok(Some(thread_id))
        }
        .boxed()
    }

    fn can_continue<'a>(&'a self, _thread_id: &'a str) -> BoxFuture<'a, Result<(), String>> {
        // app-server keeps threads on disk and resumes them in any process.
        async { Ok(()) }.boxed()
    }

    fn interrupt<'a>(&'a self, job: &'a JobId) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            let Some(session) = self.child.current().await else {
                return Err(BackendError::NoRunningTurn);
            };
            let (thread_id, turn_id) = session
                .routes
                .lock()
                .ok()
                .and_then(|r| {
                    let running = r.running.get(job)?;
                    Some((running.thread_id.clone(), running.turn_id.clone()?))
                })
                .ok_or(BackendError::NoRunningTurn)?;
            session
                .rpc
                .call(
                    "turn/interrupt",
                    json!({"threadId": thread_id, "turnId": turn_id}),
                    CALL_TIMEOUT,
                )
                .await
                .map(|_| ())
                .map_err(|e| BackendError::Io(e.to_string()))
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.child.shutdown().boxed()
    }
}

fn thread_id_of(answer: &Value) -> Result<String, BackendError> {
    answer
        .pointer("/thread/id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| BackendError::Io(format!("Codex named no thread in {answer}")))
}

async fn read_loop(
    session: Arc<Session>,
    mut reader: RpcReader,
    events: mpsc::Sender<BackendEvent>,
    approvals: ApprovalAnswer,
) {
    let out = Outbox::new(events);
    while let Some(message) = reader.next().await {
        match message {
            Incoming::Notification { method, params } => {
                on_notification(&session, &out, &method, params).await;
            }
            Incoming::Request { id, method, params } => {
                on_request(&session, &out, id, &method, params, approvals).await;
            }
            Incoming::Response { id, outcome } => on_answer(&session, id, outcome),
            Incoming::Garbage(line) => {
                let shown: String = line.chars().take(200).collect();
                tracing::warn!(line = %shown, "codex wrote a line that is not JSON-RPC; ignored");
            }
        }
    }

    let exit = session.exited("app-server").await;
    let orphaned: Vec<JobId> = session
        .routes
        .lock()
        .map(|mut r| {
            // Dropping the calls' senders answers their waiters with "exited".
            r.calls.clear();
            r.running.drain().map(|(job, _)| job).collect()
        })
        .unwrap_or_default();
    fail_orphans(&out, orphaned, &exit).await;
}

/// Files what an answer to `thread/start`, `thread/resume` or `turn/start` says, then passes it
/// to whoever waits for it.
fn on_answer(session: &Session, id: i64, outcome: Result<Value, RpcError>) {
    let Ok(mut routes) = session.routes.lock() else {
        return;
    };
    let Some(call) = routes.calls.remove(&id) else {
        tracing::debug!(id, "answer from codex nobody waits for; ignored");
        return;
    };
    if let Ok(result) = &outcome {
        match call.kind {
            CallKind::OpenThread => {
                if let Ok(thread_id) = thread_id_of(result) {
                    routes.by_thread.insert(thread_id.clone(), call.job.clone());
                    routes.loaded.insert(thread_id);
                }
            }
            CallKind::StartTurn => {
                let turn_id = result.pointer("/turn/id").and_then(Value::as_str);
                if let (Some(running), Some(turn_id)) = (routes.running.get_mut(&call.job), turn_id)
                {
                    running.turn_id = Some(turn_id.to_owned());
                }
            }
        }
    }
    let _ = call.reply.send(outcome);
}

async fn on_notification(session: &Session, out: &Outbox, method: &str, params: Value) {
    let thread_id = params
        .get("threadId")
        .or_else(|| params.pointer("/thread/id"))
        .and_then(Value::as_str);
    let Some(thread_id) = thread_id else {
        tracing::debug!(%method, "notification for no thread; ignored");
        return;
    };
    let mapped = app_events::map(method, &params);
    let update = {
        let Ok(mut routes) = session.routes.lock() else {
            return;
        };
        let Some(job) = routes.by_thread.get(thread_id).cloned() else {
            tracing::debug!(%method, thread_id, "notification for no known job; ignored");
            return;
        };
        if method == "turn/started"
            && let Some(running) = routes.running.get_mut(&job)
            && let Some(turn_id) = params.pointer("/turn/id").and_then(Value::as_str)
        {
            running.turn_id = Some(turn_id.to_owned());
        }
        let update = match mapped {
            Mapped::Skip | Mapped::TaskComplete(_) => None,
            Mapped::Record(kind, data) => Some(Update::Event { kind, data }),
            Mapped::ThreadStarted { thread_id, data } => Some(Update::Thread { thread_id, data }),
            Mapped::TurnEnded(end) => routes.running.remove(&job).map(|_| Update::TurnEnded(end)),
        };
        update.map(|u| (job, u))
    };
    if let Some((job, update)) = update {
        out.send(job, update).await;
    }
}

/// How a request from app-server is answered under the server's policy.
struct Approval {
    /// What was asked: `command`, `file_change`, `permissions`, `mcp_elicitation`, `user_input`.
    kind: &'static str,
    /// What Codex reads.
    answer: Value,
    /// What we record: `approved` or `declined`.
    decision: &'static str,
}

/// The answer to an approval-like request, or `None` for a request we do not handle.
fn approval(method: &str, params: &Value, approve: bool) -> Option<Approval> {
    let pick = |yes: Value, no: Value| if approve { yes } else { no };
    let (kind, answer) = match method {
        "item/commandExecution/requestApproval" => (
            "command",
            pick(
                json!({"decision": "accept"}),
                json!({"decision": "decline"}),
            ),
        ),
        "item/fileChange/requestApproval" => (
            "file_change",
            pick(
                json!({"decision": "accept"}),
                json!({"decision": "decline"}),
            ),
        ),
        "execCommandApproval" => (
            "command",
            pick(
                json!({"decision": "approved"}),
                json!({"decision": "denied"}),
            ),
        ),
        "applyPatchApproval" => (
            "file_change",
            pick(
                json!({"decision": "approved"}),
                json!({"decision": "denied"}),
            ),
        ),
        // Grant what was asked, or nothing.
        "item/permissions/requestApproval" => (
            "permissions",
            pick(
                json!({"permissions": params.get("permissions").cloned().unwrap_or(json!({}))}),
                json!({"permissions": {}}),
            ),
        ),
        "mcpServer/elicitation/request" => (
            "mcp_elicitation",
            pick(
                json!({"action": "accept", "content": {}}),
                json!({"action": "decline"}),
            ),
        ),
        // No person is here to answer questions: answer none of them.
        "item/tool/requestUserInput" => {
            return Some(Approval {
                kind: "user_input",
                answer: json!({"answers": {}}),
                decision: "declined",
            });
        }
        _ => return None,
    };
    Some(Approval {
        kind,
        answer,
        decision: if approve { "approved" } else { "declined" },
    })
}

async fn on_request(
    session: &Session,
    out: &Outbox,
    id: Value,
    method: &str,
    params: Value,
    policy: ApprovalAnswer,
) {
    let job = params
        .get("threadId")
        .or_else(|| params.get("conversationId"))
        .and_then(Value::as_str)
        .and_then(|t| session.routes.lock().ok()?.by_thread.get(t).cloned());
    // A request for no job of ours is refused.
    let approve = job.is_some() && policy == ApprovalAnswer::Approve;
    let Some(Approval {
        kind,
        answer,
        decision,
    }) = approval(method, &params, approve)
    else {
        tracing::warn!(%method, "codex sent a request we do not handle");
        let message = format!("codex-async-mcp does not handle `{method}`");
        if let Err(e) = session.rpc.respond_error(id, -32601, &message).await {
            tracing::warn!(error = %e, "could not answer codex");
        }
        return;
    };
    let approval_id = params
        .get("itemId")
        .or_else(|| params.get("callId"))
        .and_then(Value::as_str)
        .map_or_else(|| format!("request-{id}"), str::to_owned);
    if let Some(job) = &job {
        let data = json!({
            "approval_id": approval_id,
            "kind": kind,
            "command": params.get("command"),
            "cwd": params.get("cwd"),
            "reason": params.get("reason"),
            "codex": {"method": method, "params": params},
        });
        out.send(
            job.clone(),
            Update::Event {
                kind: EventKind::ApprovalRequested,
                data,
            },
        )
        .await;
    }
    let answered = session.rpc.respond(id, answer.clone()).await;
    if let Some(job) = job {
        let data = json!({
            "approval_id": approval_id,
            "decision": decision,
            "decided_by": "server_policy",
            "delivered": answered.is_ok(),
            "codex": answer,
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
