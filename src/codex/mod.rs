//! Upstream: the Codex child process.
//!
//! A [`Backend`] runs turns in Codex and reports what happens as [`BackendEvent`]s on one bounded
//! channel, in the order the child wrote them. The engine ([`crate::jobs`]) decides what they
//! mean for a job's status; nothing here knows which tools we serve.
//!
//! # The turn contract
//!
//! - The engine hands over turn `n` of a job with [`Backend::start_turn`]; the turn's
//!   [`JobTurn`] travels in the [`TurnInput`]. Hand-overs of one job come one at a time, in turn
//!   order.
//! - Every report names the turn it belongs to. A backend works out which turn a message of
//!   Codex's is about from what Codex said when it started that turn (its own turn id), never from
//!   "whatever this job runs now": a late word about turn 1 is reported as turn 1.
//! - A backend reports at most one [`Update::TurnEnded`] per turn. The engine drops, with a debug
//!   log, every report for a turn that is not the job's running turn, so a late end of a cancelled
//!   turn cannot end its successor, and nothing is recorded after a turn's end.
//! - The engine may end a turn without Codex's word (the cancel grace, shutdown, a store failure,
//!   a restart); the backend need not know.
//! - [`Backend::interrupt`] names the turn to stop; it is refused for any other.
//! - After [`Backend::shutdown`] no Codex is started, and every report already read from Codex
//!   has been sent by the time it returns. Turns it stopped are not reported as ended: the engine
//!   settles them.
//!
//! - `rpc`: a JSON-RPC 2.0 peer over a child's stdio (ids, pending calls, exit and stderr).
//! - `detect`: which Codex a binary is; `locate`: the native binary behind npm's shim.
//! - `session`: the child of a long-lived backend, its restarts and its end; `turns`: which of
//!   our turns a message names; `approvals`: Codex's requests, relayed to the engine and
//!   answered with what it decides.
//! - `mcp_server`: the backend for `codex mcp-server` (Codex up to 0.153), with `mcp_events`
//!   mapping its `codex/event` messages onto our event vocabulary (`mapping` holds what the
//!   mappings share).
//! - `app_server`: the backend for `codex app-server` (Codex 0.154 on), with `app_events`.
//! - `exec`: the backend for `codex exec --json`, one process per turn, with its mapping.
//! - [`start_backend`]: which backend to use, asked of the binary when not told;
//!   [`StartingBackend`] does that in the background, so the server need not wait for Codex.

mod app_events;
mod app_server;
mod approvals;
pub(crate) mod detect;
mod exec;
mod gulps;
mod locate;
mod mapping;
mod mcp_events;
mod mcp_server;
mod rpc;
mod session;
mod starting;
mod turns;

pub use starting::StartingBackend;

use app_server::AppServerBackend;
use exec::ExecBackend;
use mcp_server::McpServerBackend;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::model::{Answer, CodexRequest, EventKind, JobId, JobTurn, ReviewTarget, ThreadOptions};

/// How to start Codex: the binary and its `-c` overrides.
#[derive(Clone, Debug)]
pub struct CodexSettings {
    pub bin: String,
    /// Passed to every Codex child as `-c KEY=VALUE`.
    pub config_overrides: Vec<String>,
    /// How long a Codex process asked to stop (SIGTERM) gets before it is killed.
    pub stop_grace: Duration,
    /// A long-lived app-server child that has run no turn for this long is stopped (it never
    /// gives back the memory of the threads it ran); `None`: never.
    pub idle_restart: Option<Duration>,
}

/// Which way of driving Codex to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// `mcp-server` when this Codex has it (0.153 and earlier), else `app-server` when it
    /// answers the handshake, else `exec`.
    Auto,
    /// A long-lived `codex mcp-server` child.
    McpServer,
    /// A long-lived `codex app-server` child.
    AppServer,
    /// A `codex exec --json` process per turn (no approvals).
    Exec,
}

/// Starts the backend of `kind` for the Codex in `settings`, asking the binary which it supports
/// when `kind` is `Auto`.
pub async fn start_backend(
    mut settings: CodexSettings,
    kind: BackendKind,
    events: mpsc::Sender<BackendEvent>,
) -> anyhow::Result<Arc<dyn Backend>> {
    let native = locate::native_binary(&settings.bin);
    if native != settings.bin {
        tracing::info!(shim = %settings.bin, %native, "running the native Codex behind the npm shim");
        settings.bin = native;
    }
    let version = detect::version(&settings.bin).await?;
    let has_mcp_server = version <= detect::LAST_WITH_MCP_SERVER;
    let backend: Arc<dyn Backend> = match kind {
        BackendKind::McpServer if !has_mcp_server => {
            return Err(detect::DetectError::NoMcpServer {
                bin: settings.bin,
                version,
            }
            .into());
        }
        BackendKind::McpServer => {
            Arc::new(McpServerBackend::start(settings, version, events).await?)
        }
        BackendKind::Auto if has_mcp_server => {
            Arc::new(McpServerBackend::start(settings, version, events).await?)
        }
        BackendKind::AppServer => {
            Arc::new(AppServerBackend::start(settings, version, events).await?)
        }
        BackendKind::Exec => Arc::new(ExecBackend::new(settings, version, events)),
        BackendKind::Auto => {
            match AppServerBackend::start(settings.clone(), version, events.clone()).await {
                Ok(backend) => Arc::new(backend),
                Err(e) => {
                    tracing::warn!(error = %e, "no usable app-server; falling back to codex exec");
                    Arc::new(ExecBackend::new(settings, version, events))
                }
            }
        }
    };
    let info = backend.info();
    tracing::info!(backend = info.name, codex_version = %info.codex_version, "Codex backend ready");
    Ok(backend)
}

/// What a backend reports about a turn. Sent in the order Codex produced it.
#[derive(Debug)]
pub struct BackendEvent {
    pub turn: JobTurn,
    pub update: Update,
}

#[derive(Debug)]
pub enum Update {
    /// An event to record as it is.
    Event { kind: EventKind, data: Value },
    /// Codex created the job's thread; recorded as `thread_started`.
    Thread { thread_id: String, data: Value },
    /// Codex asks something (run a command, apply a patch, ...) and waits for the answer. Codex
    /// gets what is sent on `reply`; if it is dropped unanswered (the turn ended, the engine is
    /// gone), Codex gets a refusal: every request is answered.
    Request {
        request: CodexRequest,
        reply: oneshot::Sender<Answer>,
    },
    /// The turn ended.
    TurnEnded(TurnEnd),
}

#[derive(Debug, PartialEq)]
pub enum TurnEnd {
    Completed {
        result: Option<String>,
        data: Value,
    },
    Failed {
        error: String,
        data: Value,
    },
    /// Codex stopped the turn before it finished (after an interrupt, or on its own).
    Interrupted {
        reason: String,
        data: Value,
    },
}

/// Where a backend's reader sends its reports.
pub(crate) struct Outbox {
    events: mpsc::Sender<BackendEvent>,
}

impl Outbox {
    pub(crate) fn new(events: mpsc::Sender<BackendEvent>) -> Self {
        Self { events }
    }

    pub(crate) async fn send(&self, turn: JobTurn, update: Update) {
        if self
            .events
            .send(BackendEvent { turn, update })
            .await
            .is_err()
        {
            tracing::debug!("the engine is gone; dropping a codex event");
        }
    }
}

/// The channel a backend reports on. Bounded, so a flood from Codex slows the reader down
/// instead of growing memory.
pub fn event_channel() -> (mpsc::Sender<BackendEvent>, mpsc::Receiver<BackendEvent>) {
    mpsc::channel(1024)
}

/// A new thread's settings as a wire format names them: `cwd`, then the model, approval policy,
/// sandbox, base instructions and developer instructions under `names` (when set), then `config`
/// (when any), which carries the reasoning effort and summary as Codex's config keys. The
/// profile is not among them: Codex takes it per process (see [`refuse_profile`]).
pub(crate) fn thread_fields(
    options: &ThreadOptions,
    names: [&'static str; 5],
) -> serde_json::Map<String, Value> {
    let mut fields = serde_json::Map::new();
    fields.insert("cwd".into(), Value::String(options.cwd.clone()));
    let values = [
        &options.model,
        &options.approval_policy,
        &options.sandbox,
        &options.base_instructions,
        &options.developer_instructions,
    ];
    for (name, value) in names.into_iter().zip(values) {
        if let Some(value) = value {
            fields.insert(name.into(), Value::String(value.clone()));
        }
    }
    let mut config = options.config.clone().unwrap_or_default();
    // Named settings win over the same keys in `config`.
    if let Some(effort) = options.effort {
        config.insert("model_reasoning_effort".into(), effort.as_str().into());
    }
    if let Some(summary) = options.summary {
        config.insert("model_reasoning_summary".into(), summary.as_str().into());
    }
    if !config.is_empty() {
        fields.insert("config".into(), Value::Object(config));
    }
    fields
}

/// Refuses a profile on a backend whose one Codex process serves every job: Codex selects a
/// profile (`$CODEX_HOME/<name>.config.toml`) with `--profile` when a process starts, and refuses
/// the old `profile` config override, so a per-job profile cannot reach it.
pub(crate) fn refuse_profile(info: &BackendInfo, options: &ThreadOptions) -> Result<(), String> {
    match &options.profile {
        Some(profile) => Err(format!(
            "profile {profile:?} cannot be used with codex {} {}: Codex selects a profile \
             ($CODEX_HOME/<name>.config.toml) per process, and this one Codex process serves \
             every job. Pass the profile's settings as `config` instead (e.g. {{\"model\": \"...\"}})",
            info.name, info.codex_version
        )),
        None => Ok(()),
    }
}

/// Why a backend without [`Backend::forks_threads`] refuses a [`ThreadRef::Fork`].
pub fn cannot_fork(info: &BackendInfo) -> String {
    format!(
        "forking a thread is not supported by codex {} {}; it needs the app-server backend \
         (Codex 0.154 or later)",
        info.name, info.codex_version
    )
}

/// Refuses an approval policy this backend does not take, naming the ones it does.
pub(crate) fn check_approval_policy(
    info: &BackendInfo,
    options: &ThreadOptions,
    accepted: &[&str],
) -> Result<(), String> {
    match options.approval_policy.as_deref() {
        Some(policy) if !accepted.contains(&policy) => Err(format!(
            "approval_policy {policy:?} is not supported by codex {} {}; use one of: {}",
            info.name,
            info.codex_version,
            accepted.join(", ")
        )),
        _ => Ok(()),
    }
}

/// Which conversation a turn belongs to.
#[derive(Clone, Debug)]
pub enum ThreadRef {
    /// Start a new Codex thread.
    New,
    /// Continue the Codex thread with this id.
    Existing(String),
    /// Start a new thread as a copy of the Codex thread with this id (its history, not its
    /// later turns), where [`Backend::forks_threads`].
    Fork(String),
}

#[derive(Clone, Debug)]
pub struct TurnInput {
    /// Which turn this is; every report about it names it.
    pub turn: JobTurn,
    pub prompt: String,
    pub thread: ThreadRef,
    /// The job's options: a new thread is started with them; a backend that starts a process
    /// per turn needs them for every turn.
    pub options: ThreadOptions,
    /// A JSON Schema the turn's final message must follow.
    pub output_schema: Option<Value>,
    /// The turn is Codex's review of this (where [`Backend::reviews`]), not `prompt`.
    pub review: Option<ReviewTarget>,
}

/// Why a backend could not do what was asked.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BackendError {
    /// Codex could not be started (or restarted); the turn never reached it.
    #[error("Codex is not running and could not be restarted: {0}")]
    Unavailable(String),
    /// Codex was running but the request did not get through or was refused.
    #[error("could not talk to Codex: {0}")]
    Io(String),
    /// The turn named is not the one Codex runs for the job (it ended, or never started).
    #[error("this turn is not running in Codex")]
    NoRunningTurn,
    /// This backend cannot do what was asked; the message says what to do instead.
    #[error("{0}")]
    Unsupported(String),
    /// The backend is shutting down and takes no more turns; the engine settles them.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// What the backend is, for logs and answers.
#[derive(Clone, Debug)]
pub struct BackendInfo {
    pub name: &'static str,
    pub codex_version: String,
}

/// A way of running turns in Codex.
pub trait Backend: Send + Sync + 'static {
    fn info(&self) -> BackendInfo;
    /// Waits until Codex can take turns; if it cannot, why and what to do.
    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        async { Ok(()) }.boxed()
    }
    /// Checks options against what this backend can do, before a job is accepted.
    fn validate(&self, options: &ThreadOptions) -> Result<(), String>;
    /// Whether a turn can run under other settings (approval policy, reasoning effort and
    /// summary) than its thread started with.
    fn settings_per_turn(&self) -> bool;
    /// Whether a turn can carry an `output_schema`.
    fn takes_output_schema(&self) -> bool;
    /// Whether a job's first turn can start on a fork of another thread ([`ThreadRef::Fork`]).
    fn forks_threads(&self) -> bool {
        false
    }
    /// Copies `thread` as a new thread of `job` now, without a turn, started with `options`;
    /// its id. Where [`Backend::forks_threads`].
    fn fork_thread<'a>(
        &'a self,
        job: &'a JobId,
        thread: &'a str,
        options: &'a ThreadOptions,
    ) -> BoxFuture<'a, Result<String, BackendError>> {
        let _ = (job, thread, options);
        let why = cannot_fork(&self.info());
        async move { Err(BackendError::Unsupported(why)) }.boxed()
    }
    /// Whether a turn can be Codex's review ([`TurnInput::review`]).
    fn reviews(&self) -> bool {
        false
    }
    /// Hands a turn to Codex and returns once Codex has it, with the thread's id when Codex
    /// named it in time; progress arrives as reports naming `input.turn`.
    fn start_turn(&self, input: TurnInput) -> BoxFuture<'_, Result<Option<String>, BackendError>>;
    /// Whether a new turn can go to this existing thread; if not, why, and what to do instead.
    fn can_continue<'a>(&'a self, thread_id: &'a str) -> BoxFuture<'a, Result<(), String>>;
    /// Adds `prompt` to `turn` while Codex runs it, if it is the turn Codex runs for its job.
    fn steer<'a>(
        &'a self,
        turn: &'a JobTurn,
        prompt: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let _ = (turn, prompt);
        let info = self.info();
        let why = format!(
            "codex {} {} cannot add input to a running turn (app-server can, Codex 0.154 or \
             later); cancel the turn with job_cancel and send the input with job_reply",
            info.name, info.codex_version
        );
        async move { Err(BackendError::Unsupported(why)) }.boxed()
    }
    /// Asks Codex to stop `turn`, if it is the turn Codex runs for its job. Its end arrives as a
    /// report.
    fn interrupt<'a>(&'a self, turn: &'a JobTurn) -> BoxFuture<'a, Result<(), BackendError>>;
    /// The job is gone (deleted): forget what is kept about it.
    fn forget(&self, job: &JobId);
    /// Stops every Codex child for good: nothing is started afterwards, and every report already
    /// read from Codex has been sent when this returns.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}
