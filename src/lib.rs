//! codex-async-mcp: an MCP server that runs OpenAI Codex coding tasks as background jobs.
//!
//! Data flows one way down and one way up:
//!
//! - [`server`] serves the `job_*` tools over MCP (stdio, streamable HTTP, legacy SSE). Its
//!   handlers validate input, call the engine and shape the answer; they know no Codex wire format.
//! - [`jobs`] is the engine: jobs, turns, the status machine, the concurrency queue, cursors and
//!   waiters. It is the only place that decides a job's status.
//! - [`store`] keeps jobs, events and notifications in SQLite, behind a narrow interface.
//! - [`codex`] talks to the Codex child process and turns its messages into our [`jobs::EventKind`]
//!   vocabulary; it knows nothing of the tools we serve.

pub mod cli;
pub mod codex;
pub mod jobs;
pub mod server;
pub mod store;
mod time;

pub use cli::Cli;

use std::sync::Arc;

use anyhow::Context as _;

/// Runs the server on the transport the command line names until the client closes stdin (on
/// stdio) or a SIGINT/SIGTERM arrives, then settles every running job and stops Codex. The state
/// directory stays locked for the whole run.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Bind first: a port in use or an unsafe address fails before Codex starts.
    let listener = match cli.http_settings()? {
        Some((addr, settings)) => Some((server::http::bind(&addr, &settings).await?, settings)),
        None => None,
    };
    let state_dir = store::state_dir::StateDir::open(&cli.state_dir()?)?;
    let store: Arc<dyn store::Store> = Arc::new(store::SqliteStore::open(&state_dir.database())?);
    let (events_tx, events_rx) = codex::event_channel();
    let backend = codex::start_backend(cli.codex_settings(), cli.backend, events_tx)
        .await
        .context("could not start Codex")?;
    let manager = jobs::JobManager::open(store, backend, cli.engine_settings(), events_rx)?;

    let shutdown = tokio_util::sync::CancellationToken::new();
    let signals = shutdown.clone();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        signals.cancel();
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
        None => server::serve_stdio(manager.clone(), cli.server_settings(), shutdown).await,
    };
    manager.shutdown().await;
    served
}
