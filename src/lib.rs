//! codex-async-mcp: an MCP server that runs OpenAI Codex coding tasks as background jobs.
//!
//! Data flows one way down and one way up:
//!
//! - [`server`] serves the `job_*` tools over MCP (stdio). Its handlers validate input, call the
//!   engine and shape the answer; they know no Codex wire format.
//! - [`jobs`] is the engine: jobs, turns, the status machine, the concurrency queue, cursors and
//!   waiters. It is the only place that decides a job's status.
//! - [`store`] keeps jobs, events and notifications behind a narrow interface.
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

/// Runs the server on stdio until the client closes stdin or a SIGINT/SIGTERM arrives, then
/// settles every running job and kills the Codex child. The state directory stays locked for
/// the whole run.
pub async fn run_stdio(cli: Cli) -> anyhow::Result<()> {
    let state_dir = store::state_dir::StateDir::open(&cli.state_dir()?)?;
    let store: Arc<dyn store::Store> = Arc::new(store::SqliteStore::open(&state_dir.database())?);
    let (events_tx, events_rx) = codex::event_channel();
    let backend = codex::start_backend(cli.codex_settings(), cli.backend, events_tx)
        .await
        .context("could not start Codex")?;
    let manager = jobs::JobManager::open(store, backend, cli.engine_settings(), events_rx)?;
    let result = server::serve_stdio(manager.clone(), cli.server_settings()).await;
    manager.shutdown().await;
    result
}
