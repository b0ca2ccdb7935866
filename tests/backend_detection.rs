//! `--backend auto` asks the binary: `mcp-server` when this Codex has it, else `app-server`, else
//! `exec`; a binary that is not Codex is refused. The answer of `job_start` says which it chose.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failed test

mod support;

use serde_json::{Value, json};
use support::codex_install::codex;
use support::fake_codex;
use support::mock_model::MockModel;
use support::server::{Launch, Sandbox};

/// Starts a server on `bin` with `--backend auto`, runs one job to its end and returns the
/// `job_start` answer and the job's result.
async fn run_one_job(
    bin: &std::path::Path,
    sandbox: &Sandbox,
    env: &[(&str, &str)],
) -> (Value, Value) {
    let launch = env
        .iter()
        .fold(Launch::new(bin, sandbox), |launch, (k, v)| launch.env(k, v));
    let server = launch.start().await;
    let started = server
        .ok(
            "job_start",
            json!({"prompt": "SAY: detected", "cwd": sandbox.work()}),
        )
        .await;
    let settled = server.settle(started["job_id"].as_str().unwrap()).await;
    (started, settled["result"].clone())
}

#[tokio::test]
async fn codex_0_153_is_driven_through_mcp_server() {
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, "gpt-5.2");
    let (started, result) = run_one_job(&codex("0.153.4"), &sandbox, &[]).await;
    assert_eq!(started["backend"], "mcp-server");
    assert_eq!(started["codex_version"], "0.153.4");
    assert_eq!(result, "detected");
}

#[tokio::test]
async fn codex_0_169_is_driven_through_app_server() {
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, "gpt-5.5");
    let (started, result) = run_one_job(&codex("0.169.0"), &sandbox, &[]).await;
    assert_eq!(started["backend"], "app-server");
    assert_eq!(started["codex_version"], "0.169.0");
    assert_eq!(result, "detected");
}

#[tokio::test]
async fn a_codex_with_neither_mcp_server_nor_app_server_is_driven_through_exec() {
    let sandbox = Sandbox::new();
    let (started, result) = run_one_job(
        &fake_codex(),
        &sandbox,
        &[("FAKE_CODEX_VERSION", "0.170.0")],
    )
    .await;
    assert_eq!(started["backend"], "exec");
    assert_eq!(result, "fake exec: SAY: detected");
}

#[tokio::test]
async fn a_binary_that_is_not_codex_is_reported_with_what_to_do() {
    let sandbox = Sandbox::new();
    let not_codex = std::path::PathBuf::from("/bin/echo");
    let server = Launch::new(&not_codex, &sandbox).start().await;
    let args = serde_json::json!({"prompt": "hi", "cwd": sandbox.work()});
    let answer = server.err("job_start", args).await;
    assert!(
        answer.contains("not a Codex version") && answer.contains("--codex-bin"),
        "{answer}"
    );
}
