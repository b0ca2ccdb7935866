//! `cargo bench`: what this server costs beside Codex, measured on the release binary against
//! the fake Codex (see `tests/support/bench.rs`). Prints a table and writes the same figures as
//! JSON to `target/bench.json` (or the path in `BENCH_JSON`). `BENCH_SERVER=path` measures that
//! server binary instead of this build's; `BENCH_REAL_CODEX=version` adds the real Codex's
//! figures; `BENCH_ONLY=group` measures one group of figures (`start`, `turns`, `floods`, `http`,
//! `many`).

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code
)] // a report, not a library

#[path = "../tests/support/bench.rs"]
mod bench;
#[path = "../tests/support/codex_install.rs"]
mod codex_install;
#[path = "../tests/support/mock_model.rs"]
mod mock_model;

use std::path::{Path, PathBuf};

#[tokio::main]
async fn main() {
    // BENCH_SERVER measures another build (say, the last release) with this same benchmark.
    let server = std::env::var_os("BENCH_SERVER").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_codex-async-mcp")),
        PathBuf::from,
    );
    // BENCH_ONLY=group measures one group of figures (bench::GROUPS): a short run to profile.
    let mut figures = match std::env::var("BENCH_ONLY") {
        Ok(group) => {
            assert!(
                bench::GROUPS.contains(&group.as_str()),
                "BENCH_ONLY={group}: the groups are {:?}",
                bench::GROUPS
            );
            bench::run_group(&server, bench::Sizes::full(), &group).await
        }
        Err(_) => bench::run(&server, bench::Sizes::full()).await,
    };
    // BENCH_REAL_CODEX=0.169.0 adds the figures that need the real Codex (installed from npm on
    // first use), with a mock model.
    if let Some(version) = std::env::var_os("BENCH_REAL_CODEX") {
        let codex = codex_install::codex(&version.to_string_lossy());
        figures.extend(bench::run_real_codex(&server, &codex, bench::Sizes::full()).await);
    }
    println!("{}", bench::table(&figures));
    let json: Vec<_> = figures.iter().map(bench::Figure::to_json).collect();
    let out = std::env::var_os("BENCH_JSON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench.json"),
        PathBuf::from,
    );
    let machine = serde_json::json!({
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "os": std::env::consts::OS,
    });
    let report = serde_json::json!({"machine": machine, "figures": json});
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("written to {}", out.display());
}
