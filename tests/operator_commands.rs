//! The operator's side. The `jobs` commands on a state directory filled by a real run of the
//! server with the real Codex 0.169 (app-server) and a mock model, read while that server still
//! runs on it; `doctor` on set-ups good and bad; `install` and `uninstall` checked by the real
//! clients where they install here; `config`; the debug log.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failed test

mod support;

use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::{Value, json};
use support::codex_install::{claude_code, codex};
use support::fake_codex;
use support::http::HttpServer;
use support::mock_model::MockModel;
use support::raw::RawStdio;
use support::server::{Launch, Sandbox, Server, within};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

struct Setup {
    sandbox: Sandbox,
    _model: MockModel,
    server: Server,
    codex_bin: std::path::PathBuf,
}

async fn setup() -> Setup {
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, "gpt-5.5");
    let bin = codex("0.169.0");
    let server = Launch::new(&bin, &sandbox)
        .arg("--backend")
        .arg("app-server")
        .start()
        .await;
    Setup {
        sandbox,
        _model: model,
        server,
        codex_bin: bin,
    }
}

impl Setup {
    /// A job that runs `prompt` under `on-request` in a read-only sandbox; its id.
    async fn start(&self, prompt: &str) -> String {
        let args = json!({"prompt": prompt, "cwd": self.sandbox.work(),
                          "approval_policy": "on-request", "sandbox": "read-only"});
        let started = self.server.ok("job_start", args).await;
        started["job_id"].as_str().unwrap().to_owned()
    }

    /// A job that has completed saying `text`; its id.
    async fn completed(&self, text: &str) -> String {
        let job = self.start(&format!("SAY: {text}")).await;
        let news = self.server.turn_end(&job).await;
        assert_eq!(news["status"], "completed", "{news}");
        job
    }

    /// `codex-async-mcp jobs ARGS` on the server's state directory.
    fn jobs(&self, args: &[&str]) -> Command {
        jobs_in(&self.sandbox.state(), args)
    }

    async fn run(&self, args: &[&str]) -> Output {
        within("a jobs command", self.jobs(args).output())
            .await
            .unwrap()
    }

    /// The command's stdout; it must have succeeded.
    async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "jobs {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// The command's stderr; it must have failed.
    async fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(!output.status.success(), "jobs {args:?} succeeded");
        String::from_utf8(output.stderr).unwrap()
    }
}

/// `codex-async-mcp jobs ARGS` on the state directory `dir`.
fn jobs_in(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_codex-async-mcp"));
    command
        .arg("jobs")
        .args(args)
        .arg("--state-dir")
        .arg(dir)
        .env_remove("CODEX_ASYNC_MCP_STATE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn jobs_list_shows_each_job_with_its_status_while_the_server_runs() {
    let t = setup().await;
    let first = t.completed("the first").await;
    let second = t.completed("the second").await;
    let table = t.ok(&["list"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("JOB"), "{table}");
    // Newest first, each with its status and prompt.
    assert!(lines[1].starts_with(&second), "{table}");
    assert!(lines[2].starts_with(&first), "{table}");
    assert!(lines[1].contains("completed") && lines[1].contains("SAY: the second"));
    let listed: Value = serde_json::from_str(&t.ok(&["list", "--json"]).await).unwrap();
    assert_eq!(listed[0]["id"], second);
    assert_eq!(listed[1]["status"], "completed");
}

#[tokio::test]
async fn jobs_show_and_result_give_the_job_and_its_answer_whole() {
    let t = setup().await;
    let job = t.completed("all of it").await;
    let shown = t.ok(&["show", &job]).await;
    assert!(shown.contains("completed"), "{shown}");
    assert!(shown.contains("prompt:\n  SAY: all of it"), "{shown}");
    assert!(shown.contains("result:\n  all of it"), "{shown}");
    assert_eq!(t.ok(&["result", &job]).await, "all of it\n");
    let result: Value = serde_json::from_str(&t.ok(&["result", &job, "--json"]).await).unwrap();
    assert_eq!(result["result"], "all of it");
    assert_eq!(result["turn"], 1);
}

#[tokio::test]
async fn jobs_events_lists_the_turn_without_codexs_messages_or_streamed_pieces() {
    let t = setup().await;
    let job = t.completed("in events").await;
    let text = t.ok(&["events", &job]).await;
    assert!(text.contains("agent_message"), "{text}");
    assert!(text.contains("turn_completed"), "{text}");
    let lines: Vec<Value> = t
        .ok(&["events", &job, "--json"])
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().all(|e| e["data"].get("codex").is_none()));
    assert!(
        lines
            .iter()
            .all(|e| !e["type"].as_str().unwrap().ends_with("_delta"))
    );
    let seqs: Vec<u64> = lines.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let last = seqs[seqs.len() - 1];
    let after = t
        .ok(&["events", &job, "--after", &(last - 1).to_string()])
        .await;
    assert_eq!(after.lines().count(), 1, "{after}");
}

#[tokio::test]
async fn jobs_events_follow_tails_a_running_job_until_it_settles() {
    let t = setup().await;
    let job = t.start("ESCALATE: echo followed").await;
    let asked = t.server.settle(&job).await;
    assert_eq!(asked["status"], "input_required", "{asked}");
    // The job waits on its approval: the tail has to keep following it.
    let mut follow = t.jobs(&["events", &job, "--follow"]).spawn().unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    within("the approval request in the tail", async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("approval_requested") {
                return;
            }
        }
        panic!("the tail ended before the approval request");
    })
    .await;
    let request = asked["request"]["request_id"].clone();
    let args = json!({"job_id": job, "request_id": request, "decision": "accept"});
    t.server.ok("job_respond", args).await;
    let rest = within("the tail's end", async {
        let mut rest = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            rest.push(line);
        }
        rest
    })
    .await;
    let status = within("the tail's exit", follow.wait()).await.unwrap();
    assert!(status.success());
    assert!(
        rest.iter().any(|l| l.contains("approval_resolved")),
        "{rest:?}"
    );
    assert!(rest.last().unwrap().contains("turn_completed"), "{rest:?}");
}

#[tokio::test]
async fn jobs_commands_name_the_problem_and_the_fix() {
    let t = setup().await;
    let unknown = t.fails(&["show", "job-nope"]).await;
    assert!(unknown.contains("no job \"job-nope\""), "{unknown}");
    assert!(unknown.contains("jobs list"), "{unknown}");
    let empty = tempfile::tempdir().unwrap();
    let output = within(
        "jobs list on an empty directory",
        jobs_in(empty.path(), &["list"]).output(),
    )
    .await
    .unwrap();
    let said = String::from_utf8(output.stderr).unwrap();
    assert!(!output.status.success());
    assert!(said.contains("no job database"), "{said}");
    assert!(said.contains("--state-dir"), "{said}");
}

#[tokio::test]
async fn with_debug_the_state_directory_gets_a_log_with_codexs_stderr_and_stdout_only_mcp() {
    let sandbox = Sandbox::new();
    let bin = fake_codex();
    // RawStdio fails the test on any stdout line that is not one JSON-RPC message.
    let mut raw = RawStdio::start(Launch::new(&bin, &sandbox).arg("--debug")).await;
    let args = json!({"prompt": "CRASH", "cwd": sandbox.work()});
    let started = raw.call(2, "job_start", args).await;
    let job = started["result"]["structuredContent"]["job_id"].clone();
    let waited = raw
        .call(3, "job_wait", json!({"job_id": job, "timeout_seconds": 60}))
        .await;
    assert_eq!(
        waited["result"]["structuredContent"]["notifications"][0]["status"], "failed",
        "{waited}"
    );
    raw.signal(libc::SIGTERM);
    for line in raw.rest().await {
        serde_json::from_str::<Value>(&line).expect("only MCP on stdout");
    }
    within("the server's exit", raw.child.wait()).await.unwrap();
    let logs: Vec<_> = std::fs::read_dir(sandbox.state().join("logs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let name = logs[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.starts_with("codex-async-mcp.") && name.ends_with(".log"),
        "{name}"
    );
    let log = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(log.contains("DEBUG"), "{log}");
    assert!(log.contains("codex_stderr"), "{log}");
    assert!(log.contains("fake codex: crashing on purpose"), "{log}");
}

#[tokio::test]
async fn completions_and_the_man_page_come_from_the_command_line_definition() {
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_codex-async-mcp"))
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("complete -F"), "{bash}");
    assert!(bash.contains("--max-concurrent-jobs") && bash.contains("jobs"));
    let zsh = run(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef codex-async-mcp"), "{zsh}");
    let man = run(&["man"]);
    assert!(man.contains(".TH codex-async-mcp 1"), "{man}");
    assert!(man.contains("max\\-concurrent\\-jobs"), "{man}");
}

/// `codex-async-mcp doctor --json ARGS` with Codex `bin`, in a sandbox whose Codex reaches a mock
/// model unless `model` is false: the report and whether it exited 0.
async fn doctor(bin: &Path, model: bool, args: &[&str]) -> (Value, bool) {
    let sandbox = Sandbox::new();
    let mock = MockModel::start().await;
    if model {
        sandbox.use_model(&mock, "gpt-5.5");
    }
    // The flags the server would run with, then the command.
    let launch = args
        .iter()
        .fold(Launch::new(bin, &sandbox), |launch, arg| launch.arg(arg))
        .arg("doctor")
        .arg("--json");
    let output = within("doctor", launch.command().output()).await.unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json wrote no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(report["ok"], output.status.success(), "{report}");
    (report, output.status.success())
}

/// The check `name` of `report`.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report}"))
}

#[tokio::test]
async fn doctor_passes_a_good_set_up_on_each_codex_and_names_the_backend_it_picks() {
    for (version, backend) in [("0.153.4", "mcp-server"), ("0.169.0", "app-server")] {
        let (report, ok) = doctor(&codex(version), true, &[]).await;
        assert!(ok, "{report}");
        let codex_check = check(&report, "codex");
        assert!(
            codex_check["detail"].as_str().unwrap().contains(version),
            "{report}"
        );
        let backend_check = check(&report, "backend")["detail"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            backend_check.contains(&format!("auto picks {backend}")),
            "{report}"
        );
        assert_eq!(check(&report, "model")["status"], "ok");
    }
}

#[tokio::test]
async fn doctor_says_codex_is_missing_and_how_to_install_it() {
    let (report, ok) = doctor(Path::new("/nonexistent/codex"), true, &[]).await;
    assert!(!ok);
    let codex_check = check(&report, "codex");
    assert_eq!(codex_check["status"], "problem");
    assert!(
        codex_check["fix"]
            .as_str()
            .unwrap()
            .contains("npm install -g @openai/codex")
    );
}

#[tokio::test]
async fn doctor_says_when_codex_has_no_model_to_reach() {
    let (report, ok) = doctor(&codex("0.169.0"), false, &[]).await;
    assert!(!ok, "{report}");
    let model = check(&report, "model");
    assert_eq!(model["status"], "problem", "{report}");
    assert!(
        model["fix"].as_str().unwrap().contains("codex login"),
        "{report}"
    );
}

#[tokio::test]
async fn doctor_checks_the_http_address_as_the_server_would() {
    let bin = codex("0.169.0");
    let (report, ok) = doctor(&bin, true, &["--transport", "http", "--port", "0"]).await;
    assert!(ok, "{report}");
    let (report, ok) = doctor(
        &bin,
        true,
        &["--transport", "http", "--host", "0.0.0.0", "--port", "0"],
    )
    .await;
    assert!(!ok);
    let http = check(&report, "http");
    assert!(
        http["detail"].as_str().unwrap().contains("without a token"),
        "{report}"
    );
}

#[tokio::test]
async fn doctor_shows_the_caps_in_force_and_refuses_a_cwd_root_that_does_not_exist() {
    let bin = codex("0.169.0");
    let (report, ok) = doctor(&bin, true, &[]).await;
    assert!(ok, "{report}");
    assert!(
        check(&report, "caps")["detail"]
            .as_str()
            .unwrap()
            .starts_with("none"),
        "{report}"
    );
    let caps = [
        "--allowed-sandbox",
        "read-only",
        "--allowed-model",
        "gpt-5.5",
        "--max-effort",
        "low",
        "--max-jobs-per-session",
        "3",
    ];
    let (report, ok) = doctor(&bin, true, &caps).await;
    assert!(ok, "{report}");
    assert_eq!(
        check(&report, "caps")["detail"],
        "--allowed-sandbox: read-only; --allowed-model: gpt-5.5; --max-effort: low; \
         --max-jobs-per-session: 3"
    );
    let (report, ok) = doctor(&bin, true, &["--allowed-cwd-root", "/nonexistent/src"]).await;
    assert!(!ok);
    let detail = check(&report, "caps")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains("--allowed-cwd-root /nonexistent/src"),
        "{detail}"
    );
}

#[tokio::test]
async fn doctor_sees_the_server_running_on_the_state_directory() {
    let t = setup().await;
    t.completed("seen").await;
    let launch = Launch::new(&t.codex_bin, &t.sandbox).arg("doctor");
    let output = within("doctor", launch.command().output()).await.unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{text}");
    let pid = t.server.child.id().unwrap();
    assert!(
        text.contains(&format!("pid {pid} runs on this state directory")),
        "{text}"
    );
    assert!(text.contains("1 jobs in"), "{text}");
}

#[tokio::test]
async fn a_running_server_reports_its_readiness_to_mcp_clients_as_a_resource() {
    use rmcp::model::{ReadResourceRequestParams, ResourceContents};
    let t = setup().await;
    t.completed("ready").await;
    let peer = t.server.client.peer();
    let listed = within("resources/list", peer.list_resources(None))
        .await
        .unwrap();
    let uri = "codex-async-mcp://readiness";
    assert!(listed.resources.iter().any(|r| r.uri == uri), "{listed:?}");
    let read = within(
        "resources/read",
        peer.read_resource(ReadResourceRequestParams::new(uri)),
    )
    .await
    .unwrap();
    let ResourceContents::TextResourceContents { text, .. } = &read.contents[0] else {
        panic!("not text: {read:?}")
    };
    let report: Value = serde_json::from_str(text).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let codex_check = check(&report, "codex")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        codex_check.contains("0.169.0") && codex_check.contains("app-server"),
        "{report}"
    );
    assert_eq!(check(&report, "model")["status"], "ok", "{report}");
    let unknown = peer
        .read_resource(ReadResourceRequestParams::new("codex-async-mcp://nope"))
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains(uri), "{unknown}");
}

#[tokio::test]
async fn config_says_what_each_setting_is_and_where_it_came_from() {
    let sandbox = Sandbox::new();
    // The default file, in the user's config directory.
    let dir = sandbox.home().join(".config").join("codex-async-mcp");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.toml");
    std::fs::write(
        &file,
        "max-concurrent-jobs = 9\nport = 9000\nstate-dir = \"/nowhere\"\n",
    )
    .unwrap();
    let bin = fake_codex();
    // Launch sets CODEX_ASYNC_MCP_STATE_DIR: the environment beats the file.
    let launch = Launch::new(&bin, &sandbox)
        .arg("--port")
        .arg("9001")
        .arg("config")
        .arg("--json");
    let output = within("config", launch.command().output()).await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["config_file"], file.to_str().unwrap());
    let setting = |name: &str| {
        report["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        setting("port"),
        json!({"name": "port", "value": "9001", "from": "flag"})
    );
    assert_eq!(setting("max-concurrent-jobs")["value"], "9");
    assert_eq!(
        setting("max-concurrent-jobs")["from"],
        format!("config {}", file.display())
    );
    assert_eq!(
        setting("state-dir")["from"],
        "env CODEX_ASYNC_MCP_STATE_DIR"
    );
    assert_eq!(
        setting("state-dir")["value"],
        sandbox.state().to_str().unwrap()
    );
    assert_eq!(setting("max-sessions")["from"], "default");
    // The caps are settings like the rest.
    assert_eq!(setting("allowed-sandbox")["from"], "default");
}

/// `codex-async-mcp ARGS` with the sandbox's HOME and CODEX_HOME: its stdout, stderr and
/// whether it succeeded.
async fn ours_at(sandbox: &Sandbox, args: &[&str]) -> (String, String, bool) {
    let home = sandbox.home();
    let output = within(
        "codex-async-mcp",
        Command::new(env!("CARGO_BIN_EXE_codex-async-mcp"))
            .args(args)
            .env("HOME", &home)
            .env("CODEX_HOME", sandbox.codex_home())
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("MOCK_KEY", "test-key")
            .env("CLAUDE_BIN", claude_code("2.1.332"))
            .env_remove("OPENAI_API_KEY")
            .output(),
    )
    .await
    .unwrap();
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
        output.status.success(),
    )
}

/// A client's own command, run with the sandbox's HOME and CODEX_HOME (Claude Code offline: no
/// updates, no telemetry); its stdout and stderr.
async fn client_at(sandbox: &Sandbox, bin: &Path, args: &[&str]) -> String {
    let output = within(
        "the client",
        Command::new(bin)
            .args(args)
            .env("HOME", sandbox.home())
            .env("CODEX_HOME", sandbox.codex_home())
            .env("DISABLE_AUTOUPDATER", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_ERROR_REPORTING", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

#[tokio::test]
async fn install_codex_adds_an_entry_codex_lists_keeps_the_rest_and_uninstall_restores_the_file() {
    let sandbox = Sandbox::new();
    let mock = MockModel::start().await;
    sandbox.use_model(&mock, "gpt-5.5");
    let file = sandbox.codex_home().join("config.toml");
    let mut before = std::fs::read_to_string(&file).unwrap();
    before.push_str("\n# mine\n[mcp_servers.other]\ncommand = \"/bin/true\" # keep me\n");
    std::fs::write(&file, &before).unwrap();
    let codex_bin = codex("0.171.0");

    let (said, _, ok) = ours_at(&sandbox, &["install", "codex", "--dry-run"]).await;
    assert!(ok && said.starts_with("would add to"), "{said}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        before,
        "a dry run changes nothing"
    );

    let (said, err, ok) = ours_at(
        &sandbox,
        &["install", "codex", "--", "--max-concurrent-jobs", "2"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(said.contains("[mcp_servers.codex_async]"), "{said}");
    let listed = client_at(&sandbox, &codex_bin, &["mcp", "list"]).await;
    let ours = listed
        .lines()
        .find(|l| l.starts_with("codex_async"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        ours.contains("codex-async-mcp") && ours.contains("enabled"),
        "{listed}"
    );
    // The worker Codex gets its home, and its provider's key by name.
    assert!(
        ours.contains("CODEX_HOME=") && ours.contains("MOCK_KEY="),
        "{listed}"
    );
    assert!(listed.lines().any(|l| l.starts_with("other")), "{listed}");
    let installed = std::fs::read_to_string(&file).unwrap();
    assert!(
        installed.starts_with(&before),
        "the rest of the file is kept as it was"
    );
    assert!(!installed.contains("test-key"), "no secret is written");

    let (_, err, ok) = ours_at(&sandbox, &["install", "codex"]).await;
    assert!(
        !ok && err.contains("already has [mcp_servers.codex_async]"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        installed,
        "nothing overwritten"
    );

    let (_, err, ok) = ours_at(&sandbox, &["uninstall", "codex"]).await;
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    let listed = client_at(&sandbox, &codex_bin, &["mcp", "list"]).await;
    assert!(!listed.contains("codex_async"), "{listed}");
}

#[tokio::test]
async fn install_claude_code_registers_a_server_claude_connects_to_and_uninstall_removes_it() {
    let sandbox = Sandbox::new();
    let claude = claude_code("2.1.332");
    let fake = fake_codex();
    let state = sandbox.state();
    let args = [
        "install",
        "claude-code",
        "--",
        "--codex-bin",
        fake.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let (said, err, ok) = ours_at(&sandbox, &args).await;
    assert!(ok, "{said}{err}");
    assert!(
        said.contains("claude") && said.contains("mcp add -s user codex_async"),
        "{said}"
    );
    let listed = client_at(&sandbox, &claude, &["mcp", "list"]).await;
    let ours = listed
        .lines()
        .find(|l| l.starts_with("codex_async:"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(ours.contains("Connected"), "{listed}");

    let (_, err, ok) = ours_at(&sandbox, &args).await;
    assert!(!ok && err.contains("already exists"), "{err}");

    let (said, err, ok) = ours_at(&sandbox, &["uninstall", "claude-code"]).await;
    assert!(ok, "{said}{err}");
    let listed = client_at(&sandbox, &claude, &["mcp", "list"]).await;
    assert!(!listed.contains("codex_async"), "{listed}");
}

#[tokio::test]
async fn install_cursor_and_claude_desktop_edit_their_json_and_leave_other_servers_alone() {
    let sandbox = Sandbox::new();
    let home = sandbox.home();
    let cursor = home.join(".cursor").join("mcp.json");
    let desktop = home
        .join(".config")
        .join("Claude")
        .join("claude_desktop_config.json");
    for (client, file) in [("cursor", &cursor), ("claude-desktop", &desktop)] {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let other = json!({"mcpServers": {"other": {"command": "/bin/true"}}, "theme": "dark"});
        std::fs::write(file, other.to_string()).unwrap();
        let (said, err, ok) = ours_at(
            &sandbox,
            &["install", client, "--", "--max-concurrent-jobs", "2"],
        )
        .await;
        assert!(ok, "{client}: {said}{err}");
        let config: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let ours = &config["mcpServers"]["codex_async"];
        assert!(
            ours["command"]
                .as_str()
                .unwrap()
                .ends_with("codex-async-mcp"),
            "{config}"
        );
        assert_eq!(ours["args"], json!(["--max-concurrent-jobs", "2"]));
        assert_eq!(config["mcpServers"]["other"], other["mcpServers"]["other"]);
        assert_eq!(config["theme"], "dark");
        let (_, err, ok) = ours_at(&sandbox, &["install", client]).await;
        assert!(
            !ok && err.contains("already has the server"),
            "{client}: {err}"
        );
        let (_, err, ok) = ours_at(&sandbox, &["uninstall", client]).await;
        assert!(ok, "{client}: {err}");
        let config: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        assert_eq!(config["mcpServers"], other["mcpServers"], "{client}");
        // Another program's entry under our name is not ours to remove.
        let (_, err, ok) = ours_at(&sandbox, &["uninstall", client, "--name", "other"]).await;
        assert!(
            !ok && err.contains("is not codex-async-mcp"),
            "{client}: {err}"
        );
    }
    let (_, err, ok) = ours_at(
        &sandbox,
        &["install", "claude-desktop", "--transport", "http"],
    )
    .await;
    assert!(!ok && err.contains("--transport stdio"), "{err}");
}

#[tokio::test]
async fn jobs_cancel_stops_a_running_turn_through_the_server() {
    let t = setup().await;
    let job = t.start("ESCALATE: echo never").await;
    let asked = t.server.settle(&job).await;
    assert_eq!(asked["status"], "input_required", "{asked}");
    let said = t.ok(&["cancel", &job]).await;
    assert_eq!(said, format!("{job}: cancelled\n"));
    let listed = t.server.ok("job_list", json!({})).await;
    assert_eq!(listed["jobs"][0]["status"], "cancelled", "{listed}");
}

#[tokio::test]
async fn jobs_prune_deletes_settled_jobs_through_the_server_or_on_its_own_when_none_runs() {
    let t = setup().await;
    t.completed("first").await;
    let kept = t.start("ESCALATE: echo waits").await;
    t.server.settle(&kept).await;
    let said = t.ok(&["prune", "--older-than", "0s"]).await;
    assert!(said.starts_with("deleted 1 settled jobs"), "{said}");
    // The server's own view agrees: the waiting job stays, the settled one is gone.
    let listed = t.server.ok("job_list", json!({})).await;
    let ids: Vec<&str> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![kept.as_str()], "{listed}");
    t.server.ok("job_cancel", json!({"job_id": kept})).await;
    let dir = t.sandbox.state();
    let Setup { server, .. } = t;
    server.stop().await;
    let output = within(
        "prune",
        jobs_in(&dir, &["prune", "--older-than", "0s", "--json"]).output(),
    )
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(said["deleted"], 1);
}

#[tokio::test]
async fn jobs_cancel_without_a_server_says_nothing_runs_there() {
    let t = setup().await;
    let job = t.completed("done").await;
    let dir = t.sandbox.state();
    let Setup { server, .. } = t;
    server.stop().await;
    let output = within("cancel", jobs_in(&dir, &["cancel", &job]).output())
        .await
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8(output.stderr).unwrap();
    assert!(said.contains("no server runs on"), "{said}");
}

#[tokio::test]
async fn log_level_beats_rust_log_on_stderr() {
    let sandbox = Sandbox::new();
    let bin = fake_codex();
    // Launch sets RUST_LOG=codex_async_mcp=debug; the flag says warn.
    let server = Launch::new(&bin, &sandbox)
        .arg("--log-level")
        .arg("warn")
        .start()
        .await;
    let job = server.start_job(&sandbox, "GARBAGE").await;
    let job = job["job_id"].as_str().unwrap().to_owned();
    server.turn_end(&job).await;
    server.until_logged("not JSON-RPC").await;
    let logged = server.stderr();
    assert!(logged.contains(" WARN "), "{logged}");
    assert!(
        !logged.contains(" INFO ") && !logged.contains(" DEBUG "),
        "{logged}"
    );
}

#[tokio::test]
async fn install_over_http_registers_a_running_servers_url_claude_connects_to() {
    let sandbox = Sandbox::new();
    let bin = fake_codex();
    let launch = Launch::new(&bin, &sandbox)
        .arg("--transport")
        .arg("http")
        .arg("--auth-token")
        .arg("s3cret");
    let server = HttpServer::start(launch, "/mcp").await;
    let port = server.port.to_string();
    let top = ["--port", port.as_str(), "--auth-token", "s3cret"];
    let install = |client: &'static str| {
        let mut args = top.to_vec();
        args.extend(["install", client, "--transport", "http"]);
        args
    };
    let (said, err, ok) = ours_at(&sandbox, &install("claude-code")).await;
    assert!(ok, "{said}{err}");
    let listed = client_at(&sandbox, &claude_code("2.1.332"), &["mcp", "list"]).await;
    let ours = listed
        .lines()
        .find(|l| l.starts_with("codex_async:"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        ours.contains(&format!("http://127.0.0.1:{port}/mcp")),
        "{listed}"
    );
    assert!(ours.contains("Connected"), "{listed}");
    // Codex and Cursor get the URL, and the token by the name of the variable that holds it.
    let (said, err, ok) = ours_at(&sandbox, &install("codex")).await;
    assert!(ok, "{err}");
    assert!(
        said.contains(&format!("url = \"http://127.0.0.1:{port}/mcp\"")),
        "{said}"
    );
    assert!(
        said.contains("bearer_token_env_var = \"CODEX_ASYNC_MCP_TOKEN\""),
        "{said}"
    );
    let (_, err, ok) = ours_at(&sandbox, &install("cursor")).await;
    assert!(ok, "{err}");
    let cursor = std::fs::read_to_string(sandbox.home().join(".cursor/mcp.json")).unwrap();
    assert!(cursor.contains("${env:CODEX_ASYNC_MCP_TOKEN}") && !cursor.contains("s3cret"));
    let mut sse = top.to_vec();
    sse.extend(["install", "codex", "--transport", "sse", "--name", "other"]);
    let (_, err, ok) = ours_at(&sandbox, &sse).await;
    assert!(!ok && err.contains("not legacy SSE"), "{err}");
}
