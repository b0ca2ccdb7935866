//! End to end with the client this is for: interactive Claude Code 2.1.332 (in a
//! pseudo-terminal, against a mock of the Anthropic API, `tests/support/claude_code.py`) with
//! our server over stdio (and once over streamable HTTP), running the real `codex app-server`
//! 0.169.0 against the mock model.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failed test

mod support;

use serde_json::{Value, json};
use support::codex_install::{claude_code, codex};
use support::http::HttpServer;
use support::mock_model::MockModel;
use support::server::{Launch, Sandbox, within};

/// What Claude Code did: every request it made of the model (the messages after the system
/// prompt), whether a task notification woke it, and the end of its screen.
struct Run {
    requests: Vec<String>,
    notified: bool,
    screen: String,
}

/// How Claude Code polls a task: often, so a test waits little.
const TASK_POLL_MS: &str = "300";

/// Runs interactive Claude Code, with our server over stdio on the sandbox's Codex, through one
/// call of `tool` with `input`; `dialog_keys` answer a dialog Claude Code shows.
async fn run_claude_code(sandbox: &Sandbox, tool: &str, input: Value, dialog_keys: &str) -> Run {
    let bin = codex("0.169.0");
    let server = json!({
        "command": env!("CARGO_BIN_EXE_codex-async-mcp"),
        "args": ["--codex-bin", bin, "--backend", "app-server", "--state-dir", sandbox.state(),
                 "--task-poll-ms", TASK_POLL_MS],
        "env": {"HOME": sandbox.home(), "CODEX_HOME": sandbox.codex_home(),
                "MOCK_KEY": "test-key"}});
    run_claude_code_with(sandbox, server, tool, input, dialog_keys).await
}

/// Runs interactive Claude Code with `server` (its `mcpServers` entry) through one call of
/// `tool` with `input`; `dialog_keys` answer a dialog Claude Code shows.
async fn run_claude_code_with(
    sandbox: &Sandbox,
    server: Value,
    tool: &str,
    input: Value,
    dialog_keys: &str,
) -> Run {
    let server = json!({"mcpServers": {"codex_async": server}});
    let config = sandbox.home().join("mcp.json");
    std::fs::write(&config, server.to_string()).unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/claude_code.py");
    let output = within(
        "Claude Code",
        tokio::process::Command::new("python3")
            .arg(script)
            .arg(claude_code("2.1.332"))
            .arg(sandbox.work())
            .arg(&config)
            .arg(tool)
            .arg(input.to_string())
            .arg("60")
            .env("DIALOG_KEYS", dialog_keys)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let run: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr)));
    Run {
        requests: run["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect(),
        notified: run["notified"] == true,
        screen: run["screen"].as_str().unwrap_or_default().to_owned(),
    }
}

impl Run {
    /// The request with which the task's end woke the model.
    fn woken_with(&self) -> &str {
        assert!(self.notified, "no task notification\n{}", self.screen);
        let woken = self
            .requests
            .iter()
            .find(|r| r.contains("<task-notification>"));
        woken.unwrap()
    }
}

#[tokio::test]
async fn claude_code_runs_job_start_in_the_background_and_is_woken_with_codex_answer() {
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, "gpt-5.5");
    let input = json!({"prompt": "SAY: hello from Codex, through Claude Code",
                       "cwd": sandbox.work()});
    let run = run_claude_code(&sandbox, "mcp__codex_async__job_start", input, "").await;
    // The call went to the background at once: Claude Code says so in the tool's result.
    assert!(
        run.requests
            .iter()
            .any(|r| r.contains("toolu_mcp") && r.contains("moved to the background")),
        "{:#?}\n{}",
        run.requests,
        run.screen
    );
    // And when the turn ended Claude Code woke the model by itself with Codex's answer.
    let woken = run.woken_with();
    assert!(woken.contains("<status>completed</status>"), "{woken}");
    assert!(
        woken.contains("hello from Codex, through Claude Code"),
        "{woken}"
    );
}

#[tokio::test]
async fn claude_code_over_streamable_http_runs_a_job_in_the_background_and_is_woken() {
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, "gpt-5.5");
    let bin = codex("0.169.0");
    let launch = Launch::new(&bin, &sandbox)
        .arg("--transport")
        .arg("streamable-http")
        .arg("--backend")
        .arg("app-server")
        .arg("--task-poll-ms")
        .arg(TASK_POLL_MS);
    let server = HttpServer::start(launch, "/mcp").await;
    let entry = json!({"type": "http", "url": server.endpoint("streamable-http")});
    let input = json!({"prompt": "SAY: hello over HTTP", "cwd": sandbox.work()});
    let run = run_claude_code_with(&sandbox, entry, "mcp__codex_async__job_start", input, "").await;
    // A task, so Claude Code spoke the sessionless (2026-07-28) handshake.
    assert!(
        run.requests
            .iter()
            .any(|r| r.contains("moved to the background")),
        "{:#?}\n{}",
        run.requests,
        run.screen
    );
    let woken = run.woken_with();
    assert!(woken.contains("<status>completed</status>"), "{woken}");
    assert!(woken.contains("hello over HTTP"), "{woken}");
}

#[tokio::test]
async fn a_request_of_codex_is_answered_in_claude_code_dialog_and_the_command_runs() {
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, "gpt-5.5");
    let input = json!({"prompt": "ESCALATE: touch from_the_dialog.txt", "cwd": sandbox.work(),
                       "approval_policy": "on-request", "sandbox": "read-only"});
    // The dialog's fields are the decision (accept) and a note; then its Accept button.
    let keys = "down,down,enter";
    let run = run_claude_code(&sandbox, "mcp__codex_async__job_start", input, keys).await;
    let woken = run.woken_with();
    assert!(woken.contains("<status>completed</status>"), "{woken}");
    assert!(
        sandbox.work().join("from_the_dialog.txt").exists(),
        "{}",
        run.screen
    );
}

#[tokio::test]
async fn claude_code_runs_a_job_in_a_worktree_of_its_own_and_hears_what_it_changed() {
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, "gpt-5.5");
    let repo = support::git::repository(&sandbox.work());
    let input = json!({"prompt": "RUN: echo isolated > made.txt", "cwd": repo,
                       "sandbox": "workspace-write", "approval_policy": "never",
                       "isolation": "worktree"});
    let run = run_claude_code(&sandbox, "mcp__codex_async__job_start", input, "").await;
    let woken = run.woken_with();
    assert!(woken.contains("<status>completed</status>"), "{woken}");
    // The model hears the job's branch and what the turn changed there.
    assert!(
        woken.contains("codex-async/job-") && woken.contains(r#"\"paths\":[\"made.txt\"]"#),
        "{woken}"
    );
    // The file is in the job's worktree, not in the checkout Claude Code named.
    assert!(!repo.join("made.txt").exists());
    let worktrees: Vec<_> = std::fs::read_dir(sandbox.state().join("worktrees"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(worktrees.len(), 1);
    assert!(worktrees[0].path().join("made.txt").exists());
}
