//! The backend for `codex mcp-server` (Codex 0.153 and earlier): one long-lived child, spoken to
//! as an MCP client over newline-delimited JSON-RPC.
//!
//! A turn is one `tools/call` of `codex` (new thread) or `codex-reply` (same thread); its progress
//! arrives as `codex/event` notifications tagged with the call's id in `_meta.requestId` and
//! Codex's turn id in `id`. One task reads the child's stdout and turns each message into a
//! [`BackendEvent`] in the order it was read. Quirks of the real binary that shape this file:
//!
//! - a cancelled call is never answered; `turn_aborted` is the last word about it;
//! - after a cancel, Codex tags later turns' events, and answers their calls, under ids of
//!   earlier calls of the thread (measured: turn 4's answer came under turn 2's id), so messages
//!   are routed to a job by any id it was sent or else by their thread, and to a turn by Codex's
//!   turn id ([`super::turns`]), never by "what the job runs now";
//! - a call whose turn fails is answered at the `error`, before the turn's `task_complete`; Codex
//!   then answers the next `codex-reply` at once with that stale `task_complete`, and runs the new
//!   prompt only when yet another call arrives. So a turn ends with its call's answer only if
//!   Codex completed *that* turn; a thread whose turn failed mid-way is not continued;
//! - approval requests are `elicitation/create` with `codex_*` fields, and only a
//!   `{"decision": ...}` answer is read;
//! - the child does not exit on stdin EOF while a call is unanswered, so it is killed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::approvals;
use super::mapping::{Mapped, command_line};
use super::mcp_events::{self, CodexEvent};
use super::rpc::{Incoming, RpcError, RpcReader, ignore_garbage};
use super::session::{self, ChildSlot, Handshake};
use super::turns::JobTurns;
use super::{
    Backend, BackendError, BackendEvent, BackendInfo, CodexSettings, Outbox, ThreadRef, TurnEnd,
    TurnInput, Update, cannot_fork, check_approval_policy, detect, refuse_profile, thread_fields,
};
use crate::model::{JobId, JobTurn, RequestKind, ThreadOptions};

/// How long `start_turn` waits for Codex to name a new thread.
const THREAD_NAMING_WAIT: Duration = Duration::from_secs(5);
/// The approval policies `codex mcp-server` accepts.
const APPROVAL_POLICIES: [&str; 2] = ["on-request", "never"];
/// How many call ids Codex never answered are kept per job: it may answer a successor under them.
const UNANSWERED_KEPT: usize = 4;

pub struct McpServerBackend {
    version: detect::Version,
    events: mpsc::Sender<BackendEvent>,
    child: ChildSlot<Routes>,
}

type Session = session::Session<Routes>;

/// Which job and turn a message belongs to.
#[derive(Default)]
struct Routes {
    /// `tools/call` ids to the job they were for: the running turn's, and calls Codex never
    /// answered.
    by_request: HashMap<i64, JobId>,
    by_thread: HashMap<String, JobId>,
    jobs: HashMap<JobId, JobRoutes>,
    /// Threads whose turn failed before Codex completed it: Codex would answer their next reply
    /// with that turn's stale result.
    off_by_one: HashSet<String>,
}

#[derive(Default)]
struct JobRoutes {
    turns: JobTurns<Call>,
    /// Ids of this job's calls that Codex never answered, newest last.
    unanswered: Vec<i64>,
}

/// The running turn's call.
struct Call {
    request_id: i64,
    thread_id: Option<String>,
    /// Codex's `task_complete` for this turn, once seen: only then does an answer end it.
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

    /// The job's routes, for a job known to this child.
    fn job(&mut self, job: &JobId) -> &mut JobRoutes {
        self.jobs.entry(job.clone()).or_default()
    }

    /// The call of `request_id` got its answer (or never will): forget it, and the calls of the
    /// job that ended with it.
    fn answered(&mut self, job: &JobId, request_id: i64, running_call: Option<i64>) {
        self.by_request.remove(&request_id);
        if let Some(own) = running_call {
            self.by_request.remove(&own);
        }
        if let Some(routes) = self.jobs.get_mut(job) {
            routes
                .unanswered
                .retain(|id| *id != request_id && Some(*id) != running_call);
        }
    }

    /// Codex may still answer, or tag events with, the call of a turn that ended without its
    /// answer (a cancel): keep its id, a few per job.
    fn keep_unanswered(&mut self, job: &JobId, request_id: i64) {
        let routes = self.job(job);
        routes.unanswered.push(request_id);
        if routes.unanswered.len() > UNANSWERED_KEPT {
            let dropped = routes.unanswered.remove(0);
            self.by_request.remove(&dropped);
        }
    }

    /// Every turn running in this child.
    fn running(&mut self) -> Vec<JobTurn> {
        self.jobs
            .iter_mut()
            .filter_map(|(job, routes)| {
                let running = routes.turns.running.take()?;
                Some(JobTurn::new(job.clone(), running.turn))
            })
            .collect()
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
        let events = self.events.clone();
        self.child
            .session(&handshake, move |session, reader| {
                read_loop(session, reader, events)
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
        refuse_profile(&self.info(), options)?;
        check_approval_policy(&self.info(), options, &APPROVAL_POLICIES)
    }

    fn settings_per_turn(&self) -> bool {
        // `codex-reply` takes only the prompt: the thread keeps the settings it started with.
        false
    }

    fn takes_output_schema(&self) -> bool {
        // Neither `codex` nor `codex-reply` takes one.
        false
    }

    fn start_turn(&self, input: TurnInput) -> BoxFuture<'_, Result<Option<String>, BackendError>> {
        async move {
            if input.review.is_some() {
                return Err(BackendError::Unsupported(
                    "mcp-server runs no review".to_owned(),
                ));
            }
            let session = self.session().await?;
            let id = session.rpc.reserve_id();
            let turn = input.turn;
            let (tool, arguments, thread_id) = match &input.thread {
                ThreadRef::New => (
                    "codex",
                    codex_arguments(&input.prompt, &input.options),
                    None,
                ),
                ThreadRef::Existing(thread_id) => (
                    "codex-reply",
                    json!({"threadId": thread_id, "prompt": input.prompt}),
                    Some(thread_id.clone()),
                ),
                ThreadRef::Fork(_) => {
                    return Err(BackendError::Unsupported(cannot_fork(&self.info())));
                }
            };
            let (thread_named, named) = oneshot::channel();
            // File the routes before the request goes out: Codex may answer at once.
            {
                let mut routes = session.routes();
                routes.by_request.insert(id, turn.job.clone());
                if let Some(thread_id) = &thread_id {
                    routes.by_thread.insert(thread_id.clone(), turn.job.clone());
                }
                let call = Call {
                    request_id: id,
                    thread_id: thread_id.clone(),
                    task_complete: None,
                    thread_named: Some(thread_named),
                };
                // A predecessor settled without Codex's word (a cancel's grace) still has a call.
                if let Some(before) = routes.job(&turn.job).turns.running.take() {
                    routes.keep_unanswered(&turn.job, before.state.request_id);
                }
                routes.job(&turn.job).turns.start(turn.turn, call);
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
                let mut routes = session.routes();
                routes.job(&turn.job).turns.end(turn.turn);
                routes.answered(&turn.job, id, None);
                return Err(BackendError::Io(e.to_string()));
            }
            match thread_id {
                Some(thread_id) => Ok(Some(thread_id)),
                // Codex names a new thread in its first event, within milliseconds; a turn that
                // ends first, or a slow Codex, leaves the id to the `thread_started` event.
                None => Ok(tokio::time::timeout(THREAD_NAMING_WAIT, named)
                    .await
                    .ok()
                    .and_then(Result::ok)),
            }
        }
        .boxed()
    }

    fn can_continue<'a>(&'a self, thread_id: &'a str) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let session = self.child.current().filter(|s| !s.rpc.has_exited());
            let (known, off_by_one) = session.map_or((false, false), |s| {
                let routes = s.routes();
                (
                    routes.by_thread.contains_key(thread_id),
                    routes.off_by_one.contains(thread_id),
                )
            });
            if off_by_one {
                return Err(format!(
                    "Codex thread {thread_id} cannot be continued: its last turn failed before \
                     Codex finished it, and codex mcp-server (Codex 0.153 and earlier) then \
                     answers the next reply with the failed turn's stale result. Start a new job \
                     with job_start (a Codex that has app-server continues such threads)"
                ));
            }
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

    fn interrupt<'a>(&'a self, turn: &'a JobTurn) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            let session = self.child.current().ok_or(BackendError::NoRunningTurn)?;
            let request_id = session
                .routes()
                .jobs
                .get_mut(&turn.job)
                .and_then(|r| r.turns.running(turn.turn).map(|r| r.state.request_id))
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

    fn forget(&self, job: &JobId) {
        if let Some(session) = self.child.current() {
            let mut routes = session.routes();
            let Routes {
                jobs,
                by_thread,
                off_by_one,
                ..
            } = &mut *routes;
            jobs.remove(job);
            session::forget_threads(by_thread, job, |thread| {
                off_by_one.remove(thread);
            });
            routes.by_request.retain(|_, owner| owner != job);
        }
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
) {
    let out = Outbox::new(events);
    while let Some(message) = reader.next().await {
        match message {
            Incoming::Notification { method, params } if method == "codex/event" => {
                match mcp_events::read(params.json()) {
                    Some(event) => on_codex_event(&session, &out, event).await,
                    None => tracing::warn!("codex/event without msg; ignored"),
                }
            }
            Incoming::Notification { method, .. } => {
                tracing::debug!(%method, "ignoring notification from codex");
            }
            Incoming::Request { id, method, params }
                if method == "elicitation/create" && params.get("codex_elicitation").is_some() =>
            {
                on_approval(&session, &out, id, params).await;
            }
            Incoming::Request { id, method, .. } => {
                approvals::refuse(&session, id, &method).await;
            }
            Incoming::Response { id, outcome } => on_turn_answer(&session, &out, id, outcome).await,
            Incoming::Garbage(line) => ignore_garbage("codex mcp-server", &line),
        }
    }
    session.wind_up("mcp-server", &out, Routes::running).await;
}

async fn on_codex_event(session: &Session, out: &Outbox, event: CodexEvent<'_>) {
    let CodexEvent {
        request_id,
        thread_id,
        codex_turn,
        mapped,
    } = event;
    let (thread_id, codex_turn) = (thread_id.as_deref(), codex_turn.as_deref());
    // Decide routing and turn bookkeeping under the lock, send after releasing it.
    let report = {
        let mut routes = session.routes();
        let Some(job) = routes.job_for(request_id, thread_id) else {
            tracing::debug!(?request_id, "codex/event for no known job; ignored");
            return;
        };
        let Some(turn) = routes.job(&job).turns.turn_of(codex_turn) else {
            tracing::debug!(%job, ?codex_turn, "codex/event for no turn we know; ignored");
            return;
        };
        let running = routes.job(&job).turns.running(turn).is_some();
        let update = match mapped {
            Mapped::Skip => None,
            Mapped::Record(kind, data) => Some(Update::Event { kind, data }),
            Mapped::ThreadStarted { thread_id, data } => {
                routes.by_thread.insert(thread_id.clone(), job.clone());
                if let Some(call) = routes.job(&job).turns.running(turn) {
                    call.state.thread_id = Some(thread_id.clone());
                    if let Some(named) = call.state.thread_named.take() {
                        let _ = named.send(thread_id.clone());
                    }
                }
                Some(Update::Thread { thread_id, data })
            }
            Mapped::TaskComplete(msg) => {
                if let Some(call) = routes.job(&job).turns.running(turn) {
                    call.state.task_complete = Some(msg);
                }
                None
            }
            Mapped::TurnEnded(end) => {
                // A cancelled call is never answered: Codex may answer its successor under it.
                if let Some(ended) = routes.job(&job).turns.end(turn) {
                    routes.keep_unanswered(&job, ended.state.request_id);
                }
                Some(Update::TurnEnded(end))
            }
        };
        if !running {
            tracing::debug!(%job, turn, "codex/event about a turn that is over; passed on for the record");
        }
        update.map(|u| (JobTurn::new(job, turn), u))
    };
    if let Some((turn, update)) = report {
        out.send(turn, update).await;
    }
}

/// The answer to a call ends the job's running turn, whichever call id it came under, if Codex
/// completed that turn or failed it. A success answer without the turn's `task_complete` is the
/// stale result of an earlier turn: the turn fails with that explanation rather than take it.
async fn on_turn_answer(
    session: &Session,
    out: &Outbox,
    id: i64,
    outcome: Result<Value, RpcError>,
) {
    let ended = {
        let mut routes = session.routes();
        let thread_id = outcome
            .as_ref()
            .ok()
            .and_then(|r| r.pointer("/structuredContent/threadId"))
            .and_then(Value::as_str);
        let Some(job) = routes.job_for(Some(id), thread_id) else {
            tracing::debug!(id, "answer from codex for no call we know; ignored");
            return;
        };
        let Some(running) = routes.job(&job).turns.running.take() else {
            tracing::debug!(id, %job, "late answer from codex for a settled turn; ignored");
            routes.answered(&job, id, None);
            return;
        };
        tracing::debug!(id, own = running.state.request_id, %job, turn = running.turn, "codex answered a turn's call");
        routes.answered(&job, id, Some(running.state.request_id));
        let started = running.codex_turn.is_some();
        let completed = running.state.task_complete.is_some();
        let failed = matches!(&outcome, Ok(r) if r.get("isError").and_then(Value::as_bool) == Some(true))
            || outcome.is_err();
        // Codex still owes this thread the turn's `task_complete` (it failed mid-turn, or the
        // answer was already a stale one): its next reply would be answered with it.
        if let Some(thread) = &running.state.thread_id
            && !completed
            && (started || !failed)
        {
            routes.off_by_one.insert(thread.clone());
        }
        (
            JobTurn::new(job, running.turn),
            running.state.task_complete,
            completed,
        )
    };
    let (turn, task_complete, completed) = ended;
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
            let data = json!({"codex": {"result": result, "task_complete": task_complete}});
            if result.get("isError").and_then(Value::as_bool) == Some(true) {
                TurnEnd::Failed {
                    error: content.unwrap_or_else(|| "Codex reported an error".to_owned()),
                    data,
                }
            } else if completed {
                TurnEnd::Completed {
                    result: content,
                    data,
                }
            } else {
                TurnEnd::Failed {
                    error: "codex mcp-server answered this turn with an earlier turn's result \
                            (it does so after a turn fails, Codex 0.153 and earlier); the prompt \
                            was not run. Start a new job with job_start"
                        .to_owned(),
                    data,
                }
            }
        }
        Err(e) => TurnEnd::Failed {
            error: e.to_string(),
            data: json!({}),
        },
    };
    out.send(turn, Update::TurnEnded(end)).await;
}

/// Relays an approval request (`elicitation/create` with `codex_*` fields) to the engine.
async fn on_approval(session: &Arc<Session>, out: &Outbox, id: Value, params: Value) {
    let call_id = params
        .get("codex_mcp_tool_call_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<i64>().ok());
    let thread_id = params.get("threadId").and_then(Value::as_str);
    let codex_turn = params.get("codex_event_id").and_then(Value::as_str);
    let turn = {
        let mut routes = session.routes();
        routes.job_for(call_id, thread_id).and_then(|job| {
            let turn = routes.job(&job).turns.turn_of(codex_turn)?;
            routes
                .job(&job)
                .turns
                .running(turn)
                .is_some()
                .then(|| JobTurn::new(job, turn))
        })
    };
    let field = |name: &str| params.get(name).cloned().unwrap_or(Value::Null);
    let reason = field("codex_reason");
    let request =
        if params.get("codex_elicitation").and_then(Value::as_str) == Some("patch-approval") {
            let changes = approvals::patch_files(params.get("codex_changes"));
            let summary = approvals::patch_summary(&changes, &reason);
            let details = [
                ("changes", approvals::changes_value(&changes)),
                ("reason", reason),
                ("grant_root", field("codex_grant_root")),
            ];
            approvals::request(
                RequestKind::FileChange,
                summary,
                details,
                Vec::new(),
                params,
            )
        } else {
            let command = params
                .get("codex_command")
                .map(command_line)
                .unwrap_or(Value::Null);
            let cwd = field("codex_cwd");
            let summary = approvals::command_summary(&command, &cwd, &reason);
            let details = [("command", command), ("cwd", cwd), ("reason", reason)];
            approvals::request(RequestKind::Command, summary, details, Vec::new(), params)
        };
    // Only `{"decision": ...}` is read (an MCP `action` counts as a denial).
    approvals::relay(session, out, turn, id, request, approvals::decision_v1).await;
}
