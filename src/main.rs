use std::process::ExitCode;

use clap::Parser as _;
use codex_async_mcp::Cli;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    one_malloc_arena();
    let cli = Cli::parse();
    if let Some(command) = &cli.command {
        return match codex_async_mcp::run_command(&cli, command) {
            Ok(()) => ExitCode::SUCCESS,
            // Read by `head` or `less`, which stopped reading: that is the reader's choice.
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
            {
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("codex-async-mcp: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // stdout carries the MCP protocol: logs go to stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        // When stderr is gone (a client that closed it), a log line is lost, not the server:
        // tracing would report the failed write on stderr itself, and that write panics.
        .log_internal_errors(false)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("codex-async-mcp: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ran = runtime.block_on(codex_async_mcp::run(cli));
    // `run` returns once the engine's tasks are done and the last answer is written. The one
    // thing left may be the blocking read of a stdin that is not a pipe, which ends only when the
    // client closes it: do not wait for it.
    runtime.shutdown_background();
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("codex-async-mcp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives each thread that allocates its own heap (an arena) and keeps what it frees there.
/// Our threads (tokio's workers, the blocking pool) each touched one, and a flood of Codex's
/// events with a client paging through it left several megabytes resident in them. One arena:
/// measured on a 20,000-event flood read in 1,000-event pages, the server grew by about 4 MiB
/// instead of 6, with no loss of speed (two cores contend little for its lock).
/// An operator's own `MALLOC_ARENA_MAX` stands.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a malloc parameter; it is called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
