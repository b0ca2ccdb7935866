//! The backend for `codex app-server` (Codex 0.154 and later; 0.153 has it too): one long-lived
//! child spoken to in JSON-RPC over stdio.
//!
//! A job's first turn is `thread/start` then `turn/start`; a reply is another `turn/start` on the
//! same thread (after `thread/resume` when this child has not loaded the thread, e.g. after a
//! restart: app-server keeps threads on disk). `turn/interrupt` cancels; `turn/completed` ends a
//! turn. Notifications name their thread, which names the job, and their turn (`turnId`), which
//! names our turn ([`super::turns`]): a late `turn/completed` of a cancelled turn is reported as
//! that turn's, not its successor's. One task reads the child's stdout and reports in order; the
//! answers to `thread/start` and `turn/start` are routed through it too, so a thread's route and a
//! turn's id are filed before the first notification about them is read. Every request the child
//! sends is answered: approvals by the server's policy, anything else with an error.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::approvals::{self, Approval};
use super::mapping::Mapped;
use super::rpc::{Incoming, RpcError, RpcReader, ignore_garbage};
use super::session::{self, ChildSlot, Handshake};
use super::turns::JobTurns;
use super::{
    ApprovalAnswer, Backend, BackendError, BackendEvent, BackendInfo, CodexSettings, Outbox,
    ThreadRef, TurnInput, Update, app_events, check_approval_policy, detect, refuse_profile,
    thread_fields,
};
use crate::model::{JobId, JobTurn, ThreadOptions};

/// How long app-server may take to answer `thread/start`, `thread/resume`, `turn/start` or
/// `turn/interrupt` (an interrupt is bounded by the cancel grace on top of this).
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
    /// Each job's turns in this child; the running one keeps its thread, once known.
    jobs: HashMap<JobId, JobTurns<Option<String>>>,
    /// Requests whose answers the reader files before passing them on.
    calls: HashMap<i64, Call>,
}

impl Routes {
    fn turns(&mut self, job: &JobId) -> &mut JobTurns<Option<String>> {
        self.jobs.entry(job.clone()).or_default()
    }

    /// Every turn running in this child.
    fn running(&mut self) -> Vec<JobTurn> {
        // Dropping the calls' senders answers their waiters with "exited".
        self.calls.clear();
        self.jobs
            .iter_mut()
            .filter_map(|(job, turns)| Some(JobTurn::new(job.clone(), turns.running.take()?.turn)))
            .collect()
    }
}

struct Call {
    turn: JobTurn,
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
        turn: &JobTurn,
        kind: CallKind,
        method: &str,
        params: Value,
    ) -> Result<Value, BackendError> {
        let id = self.rpc.reserve_id();
        let (reply, answer) = oneshot::channel();
        self.routes().calls.insert(
            id,
            Call {
                turn: turn.clone(),
                kind,
                reply,
            },
        );
        let forget = || {
            self.routes().calls.remove(&id);
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

impl AppServerBackend {
    /// The thread of the turn: a new one, or the job's, resumed from disk when this child has
    /// not loaded it (a restart, or a new child).
    async fn open_thread(
        &self,
        session: &Session,
        input: &TurnInput,
    ) -> Result<String, BackendError> {
        match &input.thread {
            ThreadRef::New => {
                let started = session
                    .routed_call(
                        &input.turn,
                        CallKind::OpenThread,
                        "thread/start",
                        thread_start_params(&input.options),
                    )
                    .await?;
                thread_id_of(&started)
            }
            ThreadRef::Existing(thread_id) => {
                if !session.routes().loaded.contains(thread_id) {
                    session
                        .routed_call(
                            &input.turn,
                            CallKind::OpenThread,
                            "thread/resume",
                            json!({"threadId": thread_id, "excludeTurns": true}),
                        )
                        .await?;
                }
                Ok(thread_id.clone())
            }
        }
    }
}

impl Backend for AppServerBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "app-server",
            codex_version: self.version.to_string(),
        }
    }

    fn validate(&self, options: &ThreadOptions) -> Result<(), String> {
        refuse_profile(&self.info(), options)?;
        check_approval_policy(&self.info(), options, &APPROVAL_POLICIES)
    }

    fn start_turn(&self, input: TurnInput) -> BoxFuture<'_, Result<Option<String>, BackendError>> {
        async move {
            let session = self.session().await?;
            let turn = &input.turn;
            // Filed first: `thread/started` comes right after `thread/start`'s answer.
            session.routes().turns(&turn.job).start(turn.turn, None);
            let thread_id = self.open_thread(&session, &input).await;
            let thread_id = match thread_id {
                Ok(thread_id) => thread_id,
                Err(e) => {
                    session.routes().turns(&turn.job).end(turn.turn);
                    return Err(e);
                }
            };
            {
                let mut routes = session.routes();
                routes.by_thread.insert(thread_id.clone(), turn.job.clone());
                if let Some(running) = routes.turns(&turn.job).running(turn.turn) {
                    running.state = Some(thread_id.clone());
                }
            }
            let started = session
                .routed_call(
                    turn,
                    CallKind::StartTurn,
                    "turn/start",
                    json!({"threadId": thread_id, "input": [{"type": "text", "text": input.prompt}]}),
                )
                .await;
            if let Err(e) = started {
                session.routes().turns(&turn.job).end(turn.turn);
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

    fn interrupt<'a>(&'a self, turn: &'a JobTurn) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            let session = self.child.current().ok_or(BackendError::NoRunningTurn)?;
            let (thread_id, codex_turn) = session
                .routes()
                .jobs
                .get_mut(&turn.job)
                .and_then(|turns| {
                    let running = turns.running(turn.turn)?;
                    Some((running.state.clone()?, running.codex_turn.clone()?))
                })
                .ok_or(BackendError::NoRunningTurn)?;
            session
                .rpc
                .call(
                    "turn/interrupt",
                    json!({"threadId": thread_id, "turnId": codex_turn}),
                    CALL_TIMEOUT,
                )
                .await
                .map(|_| ())
                .map_err(|e| BackendError::Io(e.to_string()))
        }
        .boxed()
    }

    fn forget(&self, job: &JobId) {
        if let Some(session) = self.child.current() {
            let mut routes = session.routes();
            let Routes {
                jobs,
                by_thread,
                loaded,
                ..
            } = &mut *routes;
            jobs.remove(job);
            session::forget_threads(by_thread, job, |thread| {
                loaded.remove(thread);
            });
        }
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
            Incoming::Garbage(line) => ignore_garbage("codex app-server", &line),
        }
    }
    session.wind_up("app-server", &out, Routes::running).await;
}

/// Files what an answer to `thread/start`, `thread/resume` or `turn/start` says, then passes it
/// to whoever waits for it.
fn on_answer(session: &Session, id: i64, outcome: Result<Value, RpcError>) {
    let mut routes = session.routes();
    let Some(call) = routes.calls.remove(&id) else {
        tracing::debug!(id, "answer from codex nobody waits for; ignored");
        return;
    };
    if let Ok(result) = &outcome {
        match call.kind {
            CallKind::OpenThread => {
                if let Ok(thread_id) = thread_id_of(result) {
                    routes
                        .by_thread
                        .insert(thread_id.clone(), call.turn.job.clone());
                    routes.loaded.insert(thread_id);
                }
            }
            CallKind::StartTurn => {
                if let Some(codex_turn) = result.pointer("/turn/id").and_then(Value::as_str) {
                    routes
                        .turns(&call.turn.job)
                        .name(call.turn.turn, codex_turn);
                }
            }
        }
    }
    let _ = call.reply.send(outcome);
}

/// The job and turn a message is about: its thread names the job, its turn id the turn.
fn turn_of(routes: &mut Routes, params: &Value) -> Option<JobTurn> {
    let thread_id = params
        .get("threadId")
        .or_else(|| params.pointer("/thread/id"))
        .or_else(|| params.get("conversationId"))
        .and_then(Value::as_str)?;
    let job = routes.by_thread.get(thread_id)?.clone();
    let codex_turn = params
        .get("turnId")
        .or_else(|| params.pointer("/turn/id"))
        .and_then(Value::as_str);
    let turn = routes.turns(&job).turn_of(codex_turn)?;
    Some(JobTurn::new(job, turn))
}

async fn on_notification(session: &Session, out: &Outbox, method: &str, params: Value) {
    let mapped = app_events::map(method, &params);
    let report = {
        let mut routes = session.routes();
        let Some(turn) = turn_of(&mut routes, &params) else {
            tracing::debug!(%method, "notification for no turn we know; ignored");
            return;
        };
        let update = match mapped {
            Mapped::Skip | Mapped::TaskComplete(_) => None,
            Mapped::Record(kind, data) => Some(Update::Event { kind, data }),
            Mapped::ThreadStarted { thread_id, data } => Some(Update::Thread { thread_id, data }),
            Mapped::TurnEnded(end) => {
                routes.turns(&turn.job).end(turn.turn);
                Some(Update::TurnEnded(end))
            }
        };
        update.map(|u| (turn, u))
    };
    if let Some((turn, update)) = report {
        out.send(turn, update).await;
    }
}

/// The answer to an approval-like request under the server's policy, or `None` for a request we
/// do not handle.
fn approval(id: &Value, method: &str, params: Value, approve: bool) -> Option<Approval> {
    let pick = |yes: Value, no: Value| if approve { yes } else { no };
    let decision = |yes: &str, no: &str| pick(json!({"decision": yes}), json!({"decision": no}));
    let (kind, answer) = match method {
        "item/commandExecution/requestApproval" => ("command", decision("accept", "decline")),
        "item/fileChange/requestApproval" => ("file_change", decision("accept", "decline")),
        "execCommandApproval" => ("command", decision("approved", "denied")),
        "applyPatchApproval" => ("file_change", decision("approved", "denied")),
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
        "item/tool/requestUserInput" => ("user_input", json!({"answers": {}})),
        _ => return None,
    };
    let approved = approve && kind != "user_input";
    let field = |name: &str| params.get(name).cloned().unwrap_or(Value::Null);
    Some(Approval {
        id: params
            .get("itemId")
            .or_else(|| params.get("callId"))
            .and_then(Value::as_str)
            .map_or_else(|| format!("request-{id}"), str::to_owned),
        kind,
        command: field("command"),
        cwd: field("cwd"),
        reason: field("reason"),
        answer,
        decision: if approved { "approved" } else { "declined" },
        request: json!({"method": method, "params": params}),
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
    let turn = {
        let mut routes = session.routes();
        turn_of(&mut routes, &params).filter(|t| {
            routes
                .jobs
                .get_mut(&t.job)
                .is_some_and(|turns| turns.running(t.turn).is_some())
        })
    };
    // A request for no running turn of ours is refused.
    let approve = turn.is_some() && policy == ApprovalAnswer::Approve;
    match approval(&id, method, params, approve) {
        Some(approval) => approvals::answer(&session.rpc, out, turn, id, approval).await,
        None => approvals::refuse(&session.rpc, id, method).await,
    }
}
