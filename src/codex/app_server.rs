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
//! turn's id are filed before the first notification about them is read. A child idle for
//! `CodexSettings::idle_restart` is stopped, as Codex never unloads a thread it has run (its
//! memory only grows); the next turn starts a new child, which resumes its thread from disk.
//! Every request the child sends is answered: its requests by what the engine decides
//! ([`super::approvals`]), anything else with an error.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::approvals;
use super::mapping::Mapped;
use super::rpc::{Incoming, Params, RpcError, RpcReader, ignore_garbage};
use super::session::{self, ChildSlot, Handshake};
use super::turns::JobTurns;
use super::{
    Backend, BackendError, BackendEvent, BackendInfo, CodexSettings, Outbox, ThreadRef, TurnInput,
    Update, app_events, check_approval_policy, detect, refuse_profile, thread_fields,
};
use crate::model::{
    Answer, CodexRequest, Decision, JobId, JobTurn, Question, RequestKind, ReviewTarget,
    ThreadOptions,
};

/// How long app-server may take to answer `thread/start`, `thread/resume`, `turn/start` or
/// `turn/interrupt` (an interrupt is bounded by the cancel grace on top of this).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The approval policies `thread/start` accepts.
const APPROVAL_POLICIES: [&str; 3] = ["untrusted", "on-request", "never"];
/// How many threads a child may hold: one holding more is replaced when a turn is to start and it
/// runs nothing (each thread costs Codex about 1 MiB it never gives back; measured with 0.169:
/// 150 one-turn threads, 319 MB).
const LOADED_THREADS_KEPT: usize = 64;
/// How many proposed patches (`fileChange` items not completed yet) are kept for the summaries
/// of their approval requests.
const PATCHES_KEPT: usize = 64;

pub struct AppServerBackend {
    version: detect::Version,
    events: mpsc::Sender<BackendEvent>,
    child: Arc<ChildSlot<Routes>>,
}

type Session = session::Session<Routes>;

#[derive(Default)]
struct Routes {
    by_thread: HashMap<String, JobId>,
    /// Threads this child has started or resumed.
    loaded: HashSet<String>,
    /// Each job's turns in this child; the running one keeps its thread, once known.
    jobs: HashMap<JobId, JobTurns<TurnState>>,
    /// Requests whose answers the reader files before passing them on.
    calls: HashMap<i64, Call>,
    /// The files each proposed patch changes (`(kind, path)`), by item id, until it completes:
    /// its approval request names only the item.
    patches: HashMap<String, Vec<(String, String)>>,
    /// When a turn last started or ended in this child.
    quiet_since: Option<Instant>,
    /// This child is being stopped for being idle: a turn must not be filed in it.
    retired: bool,
}

impl Routes {
    fn turns(&mut self, job: &JobId) -> &mut JobTurns<TurnState> {
        self.jobs.entry(job.clone()).or_default()
    }

    /// Whether this child runs nothing now (no turn, no call in flight).
    fn at_rest(&self) -> bool {
        !self.jobs.values().any(|turns| turns.running.is_some()) && self.calls.is_empty()
    }

    /// Whether this child, at rest, has run no turn for `idle` and holds threads it could give
    /// back.
    fn idle_for(&self, idle: Duration) -> bool {
        let quiet = self
            .quiet_since
            .is_some_and(|since| since.elapsed() >= idle);
        self.at_rest() && !self.loaded.is_empty() && quiet
    }

    /// Whether this child, at rest, holds more threads than it may keep.
    fn full(&self) -> bool {
        self.at_rest() && self.loaded.len() > LOADED_THREADS_KEPT
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

/// What this backend keeps about a job's running turn.
#[derive(Default)]
struct TurnState {
    /// Its thread, once known.
    thread: Option<String>,
    /// Codex said it has begun the turn (`turn/started`).
    begun: bool,
    /// An interrupt came before Codex had begun the turn, which Codex refuses ("no active
    /// turn"): it is sent again when `turn/started` says the turn has begun.
    interrupt_when_started: bool,
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
        let idle_restart = settings.idle_restart;
        let backend = Self {
            version,
            events,
            child: Arc::new(ChildSlot::new(settings, "app-server")),
        };
        backend.session().await?;
        if let Some(idle) = idle_restart {
            tokio::spawn(retire_when_idle(Arc::downgrade(&backend.child), idle));
        }
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
        let events = self.events.clone();
        self.child
            .session(&handshake, move |session, reader| {
                read_loop(session, reader, events)
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
            ThreadRef::Fork(parent) => fork(session, &input.turn, parent, &input.options).await,
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

    fn settings_per_turn(&self) -> bool {
        // `turn/start` takes `approvalPolicy`, `effort` and `summary`.
        true
    }

    fn takes_output_schema(&self) -> bool {
        // `turn/start` takes `outputSchema`.
        true
    }

    fn forks_threads(&self) -> bool {
        // `thread/fork`.
        true
    }

    fn reviews(&self) -> bool {
        // `review/start`.
        true
    }

    fn fork_thread<'a>(
        &'a self,
        job: &'a JobId,
        thread: &'a str,
        options: &'a ThreadOptions,
    ) -> BoxFuture<'a, Result<String, BackendError>> {
        async move {
            let session = self.session().await?;
            // Turn 0: no turn of the job's runs; the answer files the thread as the job's.
            fork(&session, &JobTurn::new(job.clone(), 0), thread, options).await
        }
        .boxed()
    }

    fn start_turn(&self, input: TurnInput) -> BoxFuture<'_, Result<Option<String>, BackendError>> {
        async move {
            let turn = &input.turn;
            // Filed first: `thread/started` comes right after `thread/start`'s answer. A child
            // being retired takes no turn (the next `session()` starts a new one), and one holding
            // too many threads is replaced before it takes another.
            let session = loop {
                let session = self.session().await?;
                let (filed, full) = {
                    let mut routes = session.routes();
                    if routes.retired {
                        (false, false)
                    } else if routes.full() {
                        routes.retired = true;
                        (false, true)
                    } else {
                        routes
                            .turns(&turn.job)
                            .start(turn.turn, TurnState::default());
                        routes.quiet_since = Some(Instant::now());
                        (true, false)
                    }
                };
                if filed {
                    break session;
                }
                if !full {
                    // Retired by the idle sweep, which is taking it out of the slot right now.
                    tokio::task::yield_now().await;
                } else if self.child.retire_if(|routes| routes.retired).await {
                    tracing::info!(
                        threads = LOADED_THREADS_KEPT,
                        "replaced codex app-server, which held more threads than it may keep"
                    );
                }
            };
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
                    running.state.thread = Some(thread_id.clone());
                }
            }
            // A review is a turn too: its answer names it as `turn/start`'s does.
            let (method, params) = match &input.review {
                Some(target) => (
                    "review/start",
                    json!({"threadId": thread_id, "target": review_target(target)}),
                ),
                None => ("turn/start", turn_start_params(&thread_id, &input)),
            };
            let started = session
                .routed_call(turn, CallKind::StartTurn, method, params)
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

    fn steer<'a>(
        &'a self,
        turn: &'a JobTurn,
        prompt: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            // Codex refuses a steer whose expected turn is not the one it runs, so input meant
            // for a turn that ended cannot land in another.
            let params = |thread_id: String, codex_turn: String| {
                json!({"threadId": thread_id, "expectedTurnId": codex_turn,
                       "input": [{"type": "text", "text": prompt}]})
            };
            self.call_running(turn, "turn/steer", params).await
        }
        .boxed()
    }

    fn interrupt<'a>(&'a self, turn: &'a JobTurn) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            match self.call_running(turn, "turn/interrupt", interrupt_params).await {
                // Codex answered `turn/start` but has not begun the turn: it refuses the
                // interrupt, then runs the turn anyway. Ask again once it has begun.
                Err(BackendError::Io(e)) if e.contains("no active turn") => {
                    let session = self.child.current().ok_or(BackendError::NoRunningTurn)?;
                    let begun = {
                        let mut routes = session.routes();
                        let running = routes
                            .jobs
                            .get_mut(&turn.job)
                            .and_then(|turns| turns.running(turn.turn))
                            .ok_or(BackendError::NoRunningTurn)?;
                        // Under the lock the reader sets `begun` with: one of the two sends it.
                        running.state.interrupt_when_started = !running.state.begun;
                        running.state.begun
                    };
                    if begun {
                        return self
                            .call_running(turn, "turn/interrupt", interrupt_params)
                            .await;
                    }
                    tracing::debug!(%turn, "codex has not begun the turn; interrupting it once it has");
                    Ok(())
                }
                other => other,
            }
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

impl AppServerBackend {
    /// Sends `method` about `turn`, if Codex runs it now and has named it, with the params
    /// `params` makes of its thread and Codex's turn id.
    async fn call_running(
        &self,
        turn: &JobTurn,
        method: &str,
        params: impl FnOnce(String, String) -> Value,
    ) -> Result<(), BackendError> {
        let session = self.child.current().ok_or(BackendError::NoRunningTurn)?;
        let (thread_id, codex_turn) = session
            .routes()
            .jobs
            .get_mut(&turn.job)
            .and_then(|turns| {
                let running = turns.running(turn.turn)?;
                Some((running.state.thread.clone()?, running.codex_turn.clone()?))
            })
            .ok_or(BackendError::NoRunningTurn)?;
        session
            .rpc
            .call(method, params(thread_id, codex_turn), CALL_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|e| BackendError::Io(format!("`{method}` failed: {e}")))
    }
}

/// Stops the child once it has run no turn for `idle`, until the backend is gone: Codex keeps
/// every thread it has run loaded (`thread/unsubscribe` does not unload it; measured with 0.169),
/// so a long-lived child only grows.
async fn retire_when_idle(child: Weak<ChildSlot<Routes>>, idle: Duration) {
    let every = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let Some(child) = child.upgrade() else { return };
        let retired = child
            .retire_if(|routes| {
                routes.retired = routes.idle_for(idle);
                routes.retired
            })
            .await;
        if retired {
            tracing::info!(
                idle_secs = idle.as_secs_f32(),
                "stopped the idle codex app-server to give its memory back; the next turn starts a new one"
            );
        }
    }
}

fn interrupt_params(thread_id: String, codex_turn: String) -> Value {
    json!({"threadId": thread_id, "turnId": codex_turn})
}

/// Copies thread `parent` as a new thread of `turn`'s job, started with `options`: its id.
async fn fork(
    session: &Session,
    turn: &JobTurn,
    parent: &str,
    options: &ThreadOptions,
) -> Result<String, BackendError> {
    // The same settings as a new thread's, and only the new thread's metadata back.
    let mut params = thread_start_params(options);
    params["threadId"] = json!(parent);
    params["excludeTurns"] = json!(true);
    let forked = session
        .routed_call(turn, CallKind::OpenThread, "thread/fork", params)
        .await?;
    thread_id_of(&forked)
}

/// `turn/start`'s parameters: the prompt, and the settings a reply may change from those the
/// thread started with.
fn turn_start_params(thread_id: &str, input: &TurnInput) -> Value {
    let mut params =
        json!({"threadId": thread_id, "input": [{"type": "text", "text": input.prompt}]});
    let options = &input.options;
    if let Some(policy) = &options.approval_policy {
        params["approvalPolicy"] = json!(policy);
    }
    if let Some(effort) = options.effort {
        params["effort"] = json!(effort.as_str());
    }
    if let Some(summary) = options.summary {
        params["summary"] = json!(summary.as_str());
    }
    if let Some(schema) = &input.output_schema {
        params["outputSchema"] = schema.clone();
    }
    params
}

/// A review's target in app-server's words (`ReviewTarget`).
fn review_target(target: &ReviewTarget) -> Value {
    match target {
        ReviewTarget::Uncommitted => json!({"type": "uncommittedChanges"}),
        ReviewTarget::BaseBranch(branch) => json!({"type": "baseBranch", "branch": branch}),
        ReviewTarget::Commit(sha) => json!({"type": "commit", "sha": sha}),
        ReviewTarget::Custom(instructions) => {
            json!({"type": "custom", "instructions": instructions})
        }
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
) {
    let out = Outbox::new(events);
    while let Some(message) = reader.next().await {
        match message {
            Incoming::Notification { method, params } => {
                on_notification(&session, &out, &method, params).await;
            }
            Incoming::Request { id, method, params } => {
                on_request(&session, &out, id, &method, params).await;
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
    let codex_turn = params
        .get("turnId")
        .or_else(|| params.pointer("/turn/id"))
        .and_then(Value::as_str);
    turn_named(routes, thread_id, codex_turn)
}

/// The job of Codex's `thread_id`, and our turn of its `codex_turn`.
fn turn_named(routes: &mut Routes, thread_id: &str, codex_turn: Option<&str>) -> Option<JobTurn> {
    let job = routes.by_thread.get(thread_id)?.clone();
    let turn = routes.turns(&job).turn_of(codex_turn)?;
    Some(JobTurn::new(job, turn))
}

async fn on_notification(session: &Arc<Session>, out: &Outbox, method: &str, params: Params) {
    if let Some(piece) = app_events::streamed_piece(method, params.json()) {
        let turn = turn_named(
            &mut session.routes(),
            &piece.thread_id,
            Some(&piece.turn_id),
        );
        match turn {
            Some(turn) => out.send(turn, piece.update).await,
            None => tracing::debug!(%method, "a streamed piece of no turn we know; ignored"),
        }
        return;
    }
    let params = params.value();
    let mapped = app_events::map(method, &params);
    let report = {
        let mut routes = session.routes();
        file_patch(&mut routes, method, &params);
        let Some(turn) = turn_of(&mut routes, &params) else {
            tracing::debug!(%method, "notification for no turn we know; ignored");
            return;
        };
        if method == "turn/started" {
            turn_begun(session, &mut routes, &turn);
        }
        let update = match mapped {
            Mapped::Skip | Mapped::TaskComplete(_) => None,
            Mapped::Record(kind, data) => Some(Update::Event { kind, data }),
            Mapped::ThreadStarted { thread_id, data } => Some(Update::Thread { thread_id, data }),
            Mapped::TurnEnded(end) => {
                routes.turns(&turn.job).end(turn.turn);
                routes.quiet_since = Some(Instant::now());
                Some(Update::TurnEnded(end))
            }
        };
        update.map(|u| (turn, u))
    };
    if let Some((turn, update)) = report {
        out.send(turn, update).await;
    }
}

/// Notes that Codex has begun `turn`, and sends the interrupt Codex refused before it had, if
/// one came (without holding up the reader: its answer comes through it).
fn turn_begun(session: &Arc<Session>, routes: &mut Routes, turn: &JobTurn) {
    let Some(running) = routes
        .jobs
        .get_mut(&turn.job)
        .and_then(|turns| turns.running(turn.turn))
    else {
        return;
    };
    running.state.begun = true;
    if !std::mem::take(&mut running.state.interrupt_when_started) {
        return;
    }
    let (Some(thread_id), Some(codex_turn)) =
        (running.state.thread.clone(), running.codex_turn.clone())
    else {
        return;
    };
    let (session, turn) = (session.clone(), turn.clone());
    tokio::spawn(async move {
        let params = interrupt_params(thread_id, codex_turn);
        if let Err(e) = session
            .rpc
            .call("turn/interrupt", params, CALL_TIMEOUT)
            .await
        {
            tracing::warn!(%turn, error = %e, "codex did not take the interrupt of the turn it began");
        }
    });
}

/// Keeps the files a proposed patch changes until the patch completes: an approval request for it
/// names only its item.
fn file_patch(routes: &mut Routes, method: &str, params: &Value) {
    let Some(item) = params.get("item").filter(|i| i["type"] == "fileChange") else {
        return;
    };
    let Some(id) = item.get("id").and_then(Value::as_str) else {
        return;
    };
    match method {
        "item/started" => {
            if routes.patches.len() >= PATCHES_KEPT {
                routes.patches.clear();
            }
            let changes = item
                .get("changes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| {
                    let kind = c.pointer("/kind/type").and_then(Value::as_str);
                    let path = c.get("path").and_then(Value::as_str);
                    (
                        kind.unwrap_or("change").to_owned(),
                        path.unwrap_or("?").to_owned(),
                    )
                })
                .collect();
            routes.patches.insert(id.to_owned(), changes);
        }
        "item/completed" => {
            routes.patches.remove(id);
        }
        _ => {}
    }
}

/// How an answer is written back for a request of app-server's.
type Encode = Box<dyn FnOnce(&Answer) -> Value + Send>;

/// `{"decision": ...}` in app-server's words (`accept`, `acceptForSession`, `decline`, `cancel`).
fn decision_v2(answer: &Answer) -> Value {
    let decision = match answer.decision {
        Decision::Accept => "accept",
        Decision::AcceptForSession => "acceptForSession",
        Decision::Decline => "decline",
        Decision::Cancel => "cancel",
    };
    json!({ "decision": decision })
}

/// How a command or patch approval is answered: the legacy requests (`execCommandApproval`,
/// `applyPatchApproval`) take mcp-server's words.
fn decision_in(method: &str) -> Encode {
    if matches!(method, "execCommandApproval" | "applyPatchApproval") {
        Box::new(approvals::decision_v1)
    } else {
        Box::new(decision_v2)
    }
}

/// A request of app-server's read into ours, with how its answer is written; `None` for a
/// request we do not handle.
fn read_request(routes: &Routes, method: &str, params: &Value) -> Option<(CodexRequest, Encode)> {
    let field = |name: &str| params.get(name).cloned().unwrap_or(Value::Null);
    let raw = json!({"method": method, "params": params});
    let (request, encode): (CodexRequest, Encode) = match method {
        "item/commandExecution/requestApproval" | "execCommandApproval" => {
            // The legacy request has the command as an argv.
            let command = match field("command") {
                Value::Array(argv) => super::mapping::command_line(&Value::Array(argv)),
                command => command,
            };
            let (cwd, reason) = (field("cwd"), field("reason"));
            let summary = approvals::command_summary(&command, &cwd, &reason);
            let details = [("command", command), ("cwd", cwd), ("reason", reason)];
            let request =
                approvals::request(RequestKind::Command, summary, details, Vec::new(), raw);
            (request, decision_in(method))
        }
        "item/fileChange/requestApproval" | "applyPatchApproval" => {
            // The legacy request carries the patch; the current one names only its item.
            let changes = match params.get("fileChanges") {
                Some(files) => approvals::patch_files(Some(files)),
                None => params
                    .get("itemId")
                    .and_then(Value::as_str)
                    .and_then(|item| routes.patches.get(item))
                    .cloned()
                    .unwrap_or_default(),
            };
            let reason = field("reason");
            let summary = approvals::patch_summary(&changes, &reason);
            let details = [
                ("changes", approvals::changes_value(&changes)),
                ("reason", reason),
                ("grant_root", field("grantRoot")),
            ];
            let request =
                approvals::request(RequestKind::FileChange, summary, details, Vec::new(), raw);
            (request, decision_in(method))
        }
        "item/permissions/requestApproval" => {
            let (permissions, reason) = (field("permissions"), field("reason"));
            let summary = approvals::permissions_summary(&permissions, &reason);
            let details = [
                ("permissions", permissions.clone()),
                ("cwd", field("cwd")),
                ("reason", reason),
            ];
            let request =
                approvals::request(RequestKind::Permissions, summary, details, Vec::new(), raw);
            // Grant what was asked, for the turn or the thread, or nothing.
            let encode: Encode = Box::new(move |a: &Answer| match a.decision {
                Decision::Accept => json!({"permissions": permissions, "scope": "turn"}),
                Decision::AcceptForSession => {
                    json!({"permissions": permissions, "scope": "session"})
                }
                Decision::Decline | Decision::Cancel => json!({"permissions": {}}),
            });
            (request, encode)
        }
        "item/tool/requestUserInput" => {
            let questions: Vec<Question> = params
                .get("questions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|q| {
                    Some(Question {
                        id: q.get("id")?.as_str()?.to_owned(),
                        question: q.get("question")?.as_str()?.to_owned(),
                        options: q
                            .get("options")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(|o| o.get("label")?.as_str().map(str::to_owned))
                            .collect(),
                    })
                })
                .collect();
            let summary = approvals::questions_summary(&questions);
            let request = approvals::request(RequestKind::Question, summary, [], questions, raw);
            // `{"answers": {id: {"answers": [text, ...]}}}`; a refusal answers nothing.
            let encode: Encode = Box::new(|a: &Answer| {
                let answers: serde_json::Map<String, Value> = match (&a.decision, &a.answers) {
                    (Decision::Accept | Decision::AcceptForSession, Some(answers)) => answers
                        .iter()
                        .map(|(id, given)| {
                            let texts = match given {
                                Value::Array(texts) => Value::Array(texts.clone()),
                                text => Value::Array(vec![text.clone()]),
                            };
                            (id.clone(), json!({ "answers": texts }))
                        })
                        .collect(),
                    _ => serde_json::Map::new(),
                };
                json!({ "answers": answers })
            });
            (request, encode)
        }
        "mcpServer/elicitation/request" => {
            let (server, message) = (field("serverName"), field("message"));
            let summary = format!(
                "{}: {}",
                server.as_str().unwrap_or("an MCP server"),
                crate::text::shorten(message.as_str().unwrap_or("asks for input"), 300)
            );
            let details = [
                ("server", server),
                ("message", message),
                ("schema", field("requestedSchema")),
            ];
            let request =
                approvals::request(RequestKind::McpTool, summary, details, Vec::new(), raw);
            let encode: Encode = Box::new(|a: &Answer| match a.decision {
                Decision::Accept | Decision::AcceptForSession => json!({
                    "action": "accept",
                    "content": a.answers.clone().unwrap_or_default(),
                }),
                Decision::Decline => json!({"action": "decline"}),
                Decision::Cancel => json!({"action": "cancel"}),
            });
            (request, encode)
        }
        _ => return None,
    };
    Some((request, encode))
}

async fn on_request(session: &Arc<Session>, out: &Outbox, id: Value, method: &str, params: Value) {
    let (turn, read) = {
        let mut routes = session.routes();
        let turn = turn_of(&mut routes, &params).filter(|t| {
            routes
                .jobs
                .get_mut(&t.job)
                .is_some_and(|turns| turns.running(t.turn).is_some())
        });
        (turn, read_request(&routes, method, &params))
    };
    match read {
        Some((request, encode)) => {
            approvals::relay(session, out, turn, id, request, encode).await;
        }
        None => approvals::refuse(session, id, method).await,
    }
}
