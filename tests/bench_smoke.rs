//! The benchmark (`cargo bench`, `tests/support/bench.rs`) at tiny sizes, so it cannot rot. It
//! asserts that every figure was measured, never how fast.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failed test

mod support;

use support::bench::{self, Sizes};

#[tokio::test]
async fn the_benchmark_measures_every_figure() {
    let server = std::path::Path::new(env!("CARGO_BIN_EXE_codex-async-mcp"));
    let figures = bench::run(server, Sizes::smoke()).await;
    assert_eq!(figures.len(), 21);
    for figure in &figures {
        assert!(!figure.samples.is_empty(), "{}", figure.name);
        assert!(
            figure.samples.iter().all(|s| s.is_finite()),
            "{}: {:?}",
            figure.name,
            figure.samples
        );
    }
    let table = bench::table(&figures);
    assert!(table.contains("job_start round trip"), "{table}");
}

#[tokio::test]
async fn the_benchmark_measures_the_real_codex_figures() {
    let server = std::path::Path::new(env!("CARGO_BIN_EXE_codex-async-mcp"));
    let codex = support::codex_install::codex("0.169.0");
    let figures = bench::run_real_codex(server, &codex, Sizes::smoke()).await;
    assert_eq!(figures.len(), 6);
    for figure in &figures {
        assert!(
            !figure.samples.is_empty() && figure.samples.iter().all(|s| s.is_finite()),
            "{}: {:?}",
            figure.name,
            figure.samples
        );
    }
}
