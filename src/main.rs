use clap::Parser as _;
use codex_async_mcp::Cli;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // stdout carries the MCP protocol: logs go to stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn")),
        )
        .init();
    let code = match codex_async_mcp::run(cli).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("codex-async-mcp: {e:#}");
            1
        }
    };
    // Exit here rather than return: the runtime would wait for its blocking stdin reader, which
    // only ends when the client closes stdin.
    std::process::exit(code)
}
