//! codex-async-mcp: an MCP server that runs OpenAI Codex coding tasks as background jobs.
//!
//! Data flows one way down and one way up:
//!
//! - `server` serves the `job_*` tools over MCP (stdio, streamable HTTP, legacy SSE). Its
//!   handlers validate input, call the engine and shape the answer; they know no Codex wire format
//!   and talk only to [`jobs`].
//! - [`jobs`] is the engine: jobs, turns, the status machine, the concurrency queue, cursors and
//!   waiters. It is the only place that decides a job's status.
//! - [`store`] keeps jobs, events and notifications in SQLite, behind a narrow interface.
//! - [`codex`] talks to the Codex child process and turns its messages into our
//!   [`model::EventKind`] vocabulary; it knows nothing of the tools we serve.
//! - [`model`] holds the nouns all of them share, and imports nothing of ours.
//!
//! Beside the server, `commands` holds what an operator runs from a terminal (`doctor`, `jobs`,
//! `install`, `config`, ...), reading [`config`]'s settings like the server does; `readiness`
//! holds the checks `doctor` and a running server share.
//!
//! # Embedding the engine
//!
//! Besides the server ([`run`] with a [`Cli`]), the crate exports the engine, so a program can
//! run Codex jobs without MCP: a [`store::Store`], a [`codex::Backend`] and a [`jobs::JobManager`]
//! over them. Everything else is private to the crate.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use codex_async_mcp::codex::{self, BackendKind, CodexSettings};
//! use codex_async_mcp::jobs::{Approvals, Decision, EngineSettings, JobManager, StartRequest};
//! use codex_async_mcp::store::SqliteStore;
//!
//! let (reports_tx, reports_rx) = codex::event_channel();
//! let settings = CodexSettings {
//!     bin: "codex".into(),
//!     config_overrides: Vec::new(),
//!     stop_grace: std::time::Duration::from_secs(5),
//!     idle_restart: None,
//! };
//! let backend = codex::start_backend(settings, BackendKind::Auto, reports_tx).await?;
//! let store = Arc::new(SqliteStore::open(std::path::Path::new("/tmp/jobs.sqlite"))?);
//! let engine = JobManager::open(store, backend, EngineSettings {
//!     max_concurrent_jobs: 4,
//!     cancel_grace: std::time::Duration::from_secs(5),
//!     default_cwd: std::env::current_dir()?,
//!     retention: std::time::Duration::from_secs(7 * 86_400),
//!     // No client is there to answer Codex's requests: refuse them.
//!     approvals: Approvals::Decline,
//!     approval_timeout: std::time::Duration::from_secs(600),
//!     approval_timeout_decision: Decision::Decline,
//!     max_turn: None,
//!     caps: Default::default(),
//!     isolation: Default::default(),
//!     worktrees: "/tmp/worktrees".into(),
//! }, reports_rx).await?;
//! let job = engine.start(StartRequest { prompt: "Say hello".into(), ..Default::default() }).await?;
//! let cancelled = tokio_util::sync::CancellationToken::new();
//! let settled = engine
//!     .wait(None, Some(job.job_id.as_str()), std::time::Duration::from_secs(300), &cancelled)
//!     .await?;
//! println!("{:?}", settled.notifications);
//! engine.shutdown(tokio_util::sync::CancellationToken::new()).await;
//! # Ok(()) }
//! ```

pub mod cli;
pub mod codex;
pub(crate) mod commands;
pub mod config;
pub mod jobs;
pub(crate) mod lines;
pub mod model;
pub(crate) mod paths;
pub(crate) mod readiness;
pub(crate) mod schema_check;
pub(crate) mod server;
pub mod store;
pub(crate) mod text;
mod time;
pub(crate) mod worktree;

pub use cli::Cli;
pub use commands::run as run_command;
pub use server::client_log::layer as client_log_layer;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// Runs the server on the transport the command line names until the client closes stdin (on
/// stdio) or a SIGINT/SIGTERM arrives, then stops the engine (which settles every open job and
/// stops Codex) and returns once its tasks are done. A second signal cuts the waiting short. The
/// state directory stays locked for the whole run.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};

    // Bind first: a port in use or an unsafe address fails before Codex starts.
    let listener = match cli.http_settings()? {
        Some((addr, settings)) => Some((server::http::bind(&addr, &settings).await?, settings)),
        None => None,
    };
    let state_dir = store::state_dir::StateDir::open(&cli.state_dir()?)?;
    let store: Arc<dyn store::Store> = Arc::new(store::SqliteStore::open(&state_dir.database())?);
    let (events_tx, events_rx) = codex::event_channel();
    // Clients are answered at once; Codex comes up meanwhile (and what needs it waits for it).
    // On stdio, once the client has its first answer: Codex coming up (a Node or Python process
    // starting) takes a core for a moment, which the client's `initialize` needs on a small or
    // busy machine (measured against the fake Codex on this 2-core VM, rounds of 15 starts taken
    // in turn: medians of 16 to 25 ms before and 11 to 16 ms after while the VM was slow; 10 ms
    // both ways while it was quiet). Nothing needs Codex before then. Over HTTP no client is
    // waiting yet, and Codex starts at once.
    let answered = CancellationToken::new();
    if listener.is_some() {
        answered.cancel();
    }
    let backend = Arc::new(codex::StartingBackend::spawn(
        cli.codex_settings(),
        cli.backend,
        events_tx,
        answered.clone().cancelled_owned(),
    ));
    let manager = jobs::JobManager::open(store, backend, cli.engine_settings()?, events_rx).await?;

    // The first signal stops serving and drains; the second hurries the drain.
    let shutdown = CancellationToken::new();
    let hurry = CancellationToken::new();
    // The `jobs` commands' line to this server (cancel, prune): serving goes on without it.
    if let Err(e) = server::control::listen(state_dir.path(), manager.clone(), shutdown.clone()) {
        tracing::warn!("`codex-async-mcp jobs cancel` and `prune` cannot reach this server: {e:#}");
    }
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let (first, second) = (shutdown.clone(), hurry.clone());
    tokio::spawn(async move {
        for token in [first, second] {
            tokio::select! {
                _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
                _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
            }
            token.cancel();
        }
    });
    // No turn starts once shutdown is decided, even while the transport finishes its answers.
    let (engine, decided) = (manager.clone(), shutdown.clone());
    let stop_on_signal = tokio::spawn(async move {
        decided.cancelled().await;
        engine.stop_taking_turns().await;
    });
    let served = match listener {
        Some((listener, settings)) => {
            server::http::serve(
                listener,
                manager.clone(),
                cli.server_settings(),
                settings,
                shutdown,
            )
            .await
        }
        None => {
            server::serve_stdio(manager.clone(), cli.server_settings(), shutdown, answered).await
        }
    };
    stop_on_signal.abort();
    manager.shutdown(hurry).await;
    served
}
