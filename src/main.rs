use std::os::unix::fs::DirBuilderExt as _;
use std::process::ExitCode;

use codex_async_mcp::Cli;
use codex_async_mcp::cli::Transport;
use codex_async_mcp::config::LoadError;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// mimalloc, not glibc's malloc: under 32 HTTP clients, malloc and free took over a quarter of
/// the server's time, and this allocator's per-thread heaps brought `job_events` from about 8,000
/// to 11,000 calls/s (see `Cargo.toml` for what it costs idle).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    return_freed_memory_soon();
    let loaded = match codex_async_mcp::config::load(std::env::args_os().collect()) {
        Ok(loaded) => loaded,
        Err(LoadError::Clap(e)) => e.exit(),
        Err(LoadError::File(problem)) => {
            eprintln!("codex-async-mcp: {problem}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(command) = &loaded.cli.command {
        return match codex_async_mcp::run_command(&loaded, command) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
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
    // Kept to the end: dropping it writes out what the debug log still buffers.
    let _debug_log = match start_logging(&loaded.cli) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("codex-async-mcp: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // One worker for a client on stdio: the server waits on pipes, sockets and its SQLite
    // threads, and with two, every time Codex writes or a timer fires the idle one was woken too,
    // only to find nothing to do. On a small machine that time is taken from Codex. Measured with
    // the real Codex 0.169 (a 20,000-delta turn): 12 % less CPU time and a quarter fewer context
    // switches. Over HTTP many clients may call at once, and one worker holds them all to one
    // core: 32 HTTP clients during a flood got a quarter fewer calls/s with one (a median of
    // 5,522 against 7,375 over seven A/B runs) and two fifths fewer without sessions (4,041
    // against 6,744), so HTTP gets two.
    let workers = match loaded.cli.transport {
        Transport::Stdio => 1,
        Transport::StreamableHttp | Transport::Sse => 2,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("codex-async-mcp: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(file) = loaded.file() {
        tracing::info!(file = %file.display(), "settings from the config file, beneath env and flags");
    }
    let ran = runtime.block_on(codex_async_mcp::run(loaded.cli));
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

/// Logs go to stderr, never stdout (which carries MCP on stdio): `--log-level`, else
/// `RUST_LOG`, else info. With `--debug`, also a daily debug log in the state directory.
fn start_logging(cli: &Cli) -> anyhow::Result<Option<WorkerGuard>> {
    let stderr_filter = match (&cli.log_level, EnvFilter::try_from_default_env()) {
        (Some(level), _) => EnvFilter::new(format!("{level},rmcp=warn")),
        (None, Ok(from_env)) => from_env,
        (None, Err(_)) => EnvFilter::new("info,rmcp=warn"),
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        // When stderr is gone (a client that closed it), a log line is lost, not the server:
        // tracing would report the failed write on stderr itself, and that write panics.
        .log_internal_errors(false)
        .with_filter(stderr_filter);
    // A list of layers, not an `Option` of the debug log's: an absent `Option` layer wants every
    // span and event, so rmcp's spans (one service per sessionless request) were all built and
    // dropped for nobody, 2 % of the server's time under HTTP load.
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> =
        vec![stderr.boxed(), codex_async_mcp::client_log_layer().boxed()];
    let guard = match cli.debug {
        false => None,
        true => {
            let dir = cli.state_dir()?.join("logs");
            let cannot = |e: &dyn std::fmt::Display| {
                anyhow::anyhow!(
                    "--debug: cannot write the debug log in {} ({e}); pass another --state-dir",
                    dir.display()
                )
            };
            // The log holds prompts and Codex's output: the directories are the user's alone.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| cannot(&e))?;
            let appender = tracing_appender::rolling::Builder::new()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix("codex-async-mcp")
                .filename_suffix("log")
                .max_log_files(7)
                .build(&dir)
                .map_err(|e| cannot(&e))?;
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .with_filter(EnvFilter::new(
                    "info,codex_async_mcp=debug,codex_stderr=debug,rmcp=info",
                ));
            layers.push(layer.boxed());
            Some(guard)
        }
    };
    tracing_subscriber::registry().with(layers).init();
    Ok(guard)
}

/// mimalloc's `purge_delay` option: its index in `mi_option_e` of the `mimalloc.h` that
/// libmimalloc-sys 0.1.49 builds (mimalloc 3.3), which `Cargo.toml` pins.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc keeps memory freed for a while (by default, longer than a flood of Codex's events
/// takes) before it gives it back to the OS; a flood then grew the server by 3.1 MiB a turn and
/// 17 to 21 MiB over a 1,000,000-event job. After 1 ms instead: 2.0 and 5.4 MiB, with the same
/// speed (0 ms, given back at once, cost a sixth of the flood's speed).
fn return_freed_memory_soon() {
    // SAFETY: sets one of mimalloc's global options; it reads them as it runs.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1) }
}
