//! Faults the real Codex cannot be made to show on demand, played by a scriptable fake
//! (`tests/support/fake_codex.py`): garbage on stdout, a hang, a crash, a flood, requests we do
//! not know, and binaries that are not a usable Codex; and one fault of git's, played by a `git`
//! in front of the real one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failed test

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::fake_codex;
use support::server::{Launch, Sandbox, Server, alive, is_turn_end, within};

async fn start(sandbox: &Sandbox, args: &[&str]) -> Server {
    let bin = fake_codex();
    args.iter()
        .fold(Launch::new(&bin, sandbox), |launch, arg| launch.arg(arg))
        .start()
        .await
}

async fn job(server: &Server, sandbox: &Sandbox, prompt: &str) -> String {
    let started = server
        .ok(
            "job_start",
            json!({"prompt": prompt, "cwd": sandbox.work()}),
        )
        .await;
    started["job_id"].as_str().unwrap().to_owned()
}

/// Runs the server with this environment, whose Codex is not usable: the server answers its
/// client anyway, and `job_start` says what is wrong (as the log does). Returns that answer.
async fn codex_problem(launch: Launch<'_>) -> String {
    let server = launch.start().await;
    let args = json!({"prompt": "hi", "cwd": std::env::temp_dir()});
    let answer = server.err("job_start", args).await;
    assert!(answer.contains("Codex is not usable"), "{answer}");
    server.until_logged("Codex is not usable").await;
    answer
}

/// [`codex_problem`] for a server with this environment and Codex binary.
async fn codex_problem_with(env: &[(&str, &str)], codex_bin: &str) -> String {
    let sandbox = Sandbox::new();
    let bin = std::path::PathBuf::from(codex_bin);
    let launch = env
        .iter()
        .fold(Launch::new(&bin, &sandbox), |launch, (k, v)| {
            launch.env(k, v)
        });
    codex_problem(launch).await
}

#[tokio::test]
async fn lines_that_are_not_json_rpc_are_ignored_and_the_job_completes() {
    let sandbox = Sandbox::new();
    let server = start(&sandbox, &[]).await;
    let job_id = job(&server, &sandbox, "GARBAGE").await;
    let settled = server.settle(&job_id).await;
    assert_eq!(settled["status"], "completed");
    assert_eq!(settled["result"], "survived garbage");
}

#[tokio::test]
async fn a_codex_that_never_answers_is_settled_by_cancel_with_an_honest_reason() {
    let sandbox = Sandbox::new();
    let server = start(&sandbox, &["--cancel-grace-ms", "300"]).await;
    let hung = job(&server, &sandbox, "HANG").await;
    let other = job(&server, &sandbox, "hello").await;
    assert_eq!(server.settle(&other).await["result"], "fake: hello");
    let cancelled = server.ok("job_cancel", json!({"job_id": hung})).await;
    assert_eq!(cancelled["status"], "cancelled");
    let events = server.all_events(&hung, 100).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "turn_cancelled");
    assert!(
        last["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("did not confirm")
    );
}

#[tokio::test]
async fn a_crash_mid_turn_fails_the_job_with_exit_code_and_stderr_and_a_new_codex_serves_the_next()
{
    let sandbox = Sandbox::new();
    let server = start(&sandbox, &[]).await;
    let crashed = job(&server, &sandbox, "CRASH").await;
    let settled = server.settle(&crashed).await;
    assert_eq!(settled["status"], "failed");
    let error = settled["error"].as_str().unwrap();
    assert!(
        error.contains("Codex exited") && error.contains("exit code 3"),
        "{error}"
    );
    assert!(
        error.contains("crashing on purpose"),
        "stderr tail missing: {error}"
    );
    let next = job(&server, &sandbox, "again").await;
    assert_eq!(server.settle(&next).await["result"], "fake: again");
}

#[tokio::test]
async fn a_flood_of_events_is_recorded_in_order_without_gaps() {
    let sandbox = Sandbox::new();
    let server = start(&sandbox, &[]).await;
    let job_id = job(&server, &sandbox, "FLOOD: 5000").await;
    assert_eq!(server.settle(&job_id).await["status"], "completed");
    let events = server.all_events(&job_id, 1000).await;
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    // Pieces that come together are joined: their text is Codex's, in Codex's order.
    let streamed: String = events
        .iter()
        .filter(|e| e["type"] == "agent_message_delta")
        .map(|e| e["data"]["delta"].as_str().unwrap())
        .collect();
    let expected: String = (0..5000).map(|i| i.to_string()).collect();
    assert!(streamed == expected, "the deltas lost or moved a piece");
}

#[tokio::test]
async fn a_request_from_codex_we_do_not_know_gets_an_error_answer() {
    let sandbox = Sandbox::new();
    let server = start(&sandbox, &[]).await;
    let job_id = job(&server, &sandbox, "ASK_UNKNOWN").await;
    let settled = server.settle(&job_id).await;
    let result = settled["result"].as_str().unwrap();
    let reply: Value = serde_json::from_str(result.trim_start_matches("client said: ")).unwrap();
    assert_eq!(reply["error"]["code"], -32601);
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("codex/something_new")
    );
}

#[tokio::test]
async fn a_missing_codex_binary_is_reported_with_how_to_install_it() {
    let stderr = codex_problem_with(&[], "/no/such/codex").await;
    assert!(
        stderr.contains("not found") && stderr.contains("npm install"),
        "{stderr}"
    );
}

#[tokio::test]
async fn asking_for_mcp_server_of_a_codex_without_it_is_reported_with_what_to_do() {
    let sandbox = Sandbox::new();
    let bin = fake_codex();
    let launch = Launch::new(&bin, &sandbox)
        .env("FAKE_CODEX_VERSION", "0.169.0")
        .arg("--backend")
        .arg("mcp-server");
    let stderr = codex_problem(launch).await;
    assert!(
        stderr.contains("0.169.0") && stderr.contains("removed in Codex 0.154"),
        "{stderr}"
    );
    assert!(stderr.contains("--backend auto"), "{stderr}");
}

#[tokio::test]
async fn a_binary_that_is_not_codex_is_reported_and_the_server_stays_up() {
    let bin = fake_codex();
    let stderr = codex_problem_with(
        &[("FAKE_CODEX_BANNER", "Python 3.11.7")],
        bin.to_str().unwrap(),
    )
    .await;
    assert!(stderr.contains("not a Codex version"), "{stderr}");
}

#[tokio::test]
async fn a_codex_that_fails_the_handshake_is_reported_with_its_stderr() {
    let bin = fake_codex();
    let stderr =
        codex_problem_with(&[("FAKE_CODEX_HANDSHAKE", "exit")], bin.to_str().unwrap()).await;
    assert!(
        stderr.contains("handshake") && stderr.contains("refusing the handshake"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_reply_goes_to_the_same_thread() {
    let sandbox = Sandbox::new();
    let server = start(&sandbox, &[]).await;
    let job_id = job(&server, &sandbox, "one").await;
    server.settle(&job_id).await;
    server
        .ok("job_reply", json!({"job_id": job_id, "prompt": "two"}))
        .await;
    let settled = server.settle(&job_id).await;
    assert_eq!(settled["result"], "fake: two");
    let threads: Vec<Value> = server
        .all_events(&job_id, 100)
        .await
        .into_iter()
        .filter(|e| e["type"] == "thread_started")
        .collect();
    assert_eq!(threads.len(), 1, "codex-reply, not a second thread");
}

#[tokio::test]
async fn every_tool_declares_its_input_and_output_schema() {
    let sandbox = Sandbox::new();
    let server = start(&sandbox, &[]).await;
    let tools = within("tools/list", server.client.list_all_tools())
        .await
        .unwrap();
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "codex",
            "job_cancel",
            "job_cleanup",
            "job_events",
            "job_fork",
            "job_list",
            "job_notifications",
            "job_reply",
            "job_respond",
            "job_result",
            "job_review",
            "job_start",
            "job_steer",
            "job_wait"
        ]
    );
    for tool in &tools {
        let output = tool
            .output_schema
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no outputSchema", tool.name));
        assert_eq!(output["type"], "object", "{}", tool.name);
        assert!(
            tool.input_schema.contains_key("properties"),
            "{}",
            tool.name
        );
    }
    let start = tools.iter().find(|t| t.name == "job_start").unwrap();
    assert_eq!(
        start.input_schema["required"],
        serde_json::json!(["prompt"])
    );
}

/// What the server answered when the fake app-server sent `method` during a turn, under
/// `--approvals approvals`; and the decision it recorded.
async fn app_server_answer(method: &str, approvals: &str) -> (Value, Option<Value>) {
    let sandbox = Sandbox::new();
    let bin = fake_codex();
    let server = Launch::new(&bin, &sandbox)
        .env("FAKE_CODEX_VERSION", "0.170.0")
        .env("FAKE_CODEX_APP_SERVER", "1")
        .arg("--backend")
        .arg("app-server")
        .arg("--approvals")
        .arg(approvals)
        .start()
        .await;
    let job_id = job(&server, &sandbox, &format!("ASK: {method}")).await;
    let settled = server.settle(&job_id).await;
    let result = settled["result"].as_str().unwrap();
    let answer = serde_json::from_str(result.trim_start_matches("client said: ")).unwrap();
    let decision = server
        .all_events(&job_id, 100)
        .await
        .into_iter()
        .find(|e| e["type"] == "approval_resolved")
        .map(|e| e["data"]["decision"].clone());
    (answer, decision)
}

/// Each approval-like request app-server sends, with what "decline" and "approve" answer.
fn approval_answers() -> Vec<(&'static str, Value, Value)> {
    let decision = |no: &str, yes: &str| (json!({"decision": no}), json!({"decision": yes}));
    let table = [
        (
            "item/commandExecution/requestApproval",
            decision("decline", "accept"),
        ),
        (
            "item/fileChange/requestApproval",
            decision("decline", "accept"),
        ),
        (
            "item/permissions/requestApproval",
            (
                json!({"permissions": {}}),
                json!({"permissions": {"network": {"enabled": true}}, "scope": "turn"}),
            ),
        ),
        (
            "mcpServer/elicitation/request",
            (
                json!({"action": "decline"}),
                json!({"action": "accept", "content": {}}),
            ),
        ),
        ("execCommandApproval", decision("denied", "approved")),
        ("applyPatchApproval", decision("denied", "approved")),
    ];
    table
        .into_iter()
        .map(|(method, (declined, granted))| (method, declined, granted))
        .collect()
}

#[tokio::test]
async fn every_request_app_server_sends_gets_an_answer_by_the_approval_policy() {
    for (method, declined, _) in approval_answers() {
        let (answer, decision) = app_server_answer(method, "decline").await;
        assert_eq!(answer["result"], declined, "{method}");
        assert_eq!(decision, Some(json!("decline")), "{method}");
    }
    // Questions get no answers either way: no person is here.
    let (answer, _) = app_server_answer("item/tool/requestUserInput", "approve").await;
    assert_eq!(answer["result"], json!({"answers": {}}));
}

#[tokio::test]
async fn with_approvals_approve_every_request_app_server_sends_is_granted() {
    for (method, _, granted) in approval_answers() {
        let (answer, decision) = app_server_answer(method, "approve").await;
        assert_eq!(answer["result"], granted, "{method}");
        assert_eq!(decision, Some(json!("accept")), "{method}");
    }
}

#[tokio::test]
async fn a_request_app_server_sends_that_we_do_not_know_gets_an_error() {
    for method in [
        "item/tool/call",
        "account/chatgptAuthTokens/refresh",
        "something/new",
    ] {
        let (answer, _) = app_server_answer(method, "decline").await;
        assert_eq!(answer["error"]["code"], -32601, "{method}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(method)
        );
    }
}

/// A server on the fake Codex driven as `backend`, with a short cancel grace.
async fn fake_backend(sandbox: &Sandbox, backend: &str) -> Server {
    let bin = fake_codex();
    let launch = Launch::new(&bin, sandbox)
        .env("FAKE_CODEX_VERSION", "0.170.0")
        .env("FAKE_CODEX_APP_SERVER", "1")
        .arg("--backend")
        .arg(backend)
        .arg("--cancel-grace-ms")
        .arg("300");
    let launch = if backend == "mcp-server" {
        Launch::new(&bin, sandbox)
            .arg("--cancel-grace-ms")
            .arg("300")
    } else {
        launch
    };
    launch.start().await
}

/// Each turn of the job ends once, with its terminal event last among its events.
fn each_turn_ends_once_and_last(events: &[Value]) {
    let terminal = |e: &Value| is_turn_end(e["type"].as_str().unwrap());
    let turns: std::collections::BTreeSet<u64> =
        events.iter().map(|e| e["turn"].as_u64().unwrap()).collect();
    for turn in turns {
        let of_turn: Vec<&Value> = events.iter().filter(|e| e["turn"] == turn).collect();
        let ends = of_turn.iter().filter(|e| terminal(e)).count();
        assert_eq!(ends, 1, "turn {turn} ended {ends} times: {of_turn:?}");
        assert!(
            terminal(of_turn.last().unwrap()),
            "turn {turn}: {of_turn:?}"
        );
    }
}

/// Cancels a turn Codex confirms only when the next turn arrives, replies, and checks the
/// reply's turn is not ended by the late confirmation.
async fn a_late_end_does_not_end_the_next_turn(backend: &str, prompt: &str) {
    let sandbox = Sandbox::new();
    let server = fake_backend(&sandbox, backend).await;
    let job_id = job(&server, &sandbox, prompt).await;
    // Cancel the turn Codex has, not one still being handed over.
    server.until_events(&job_id, "turn_started", 1).await;
    let cancelled = server.ok("job_cancel", json!({"job_id": job_id})).await;
    assert_eq!(cancelled["status"], "cancelled");
    let reply = server
        .ok("job_reply", json!({"job_id": job_id, "prompt": "after"}))
        .await;
    assert_eq!(reply["turn"], 2);
    let settled = server.settle(&job_id).await;
    assert_eq!(settled["turn"], 2);
    assert_eq!(settled["status"], "completed", "{settled}");
    assert!(
        settled["result"].as_str().unwrap().ends_with("after"),
        "{settled}"
    );
    let events = server.all_events(&job_id, 1000).await;
    each_turn_ends_once_and_last(&events);
    let feed = server
        .ok("job_notifications", json!({"job_id": job_id}))
        .await;
    assert_eq!(feed["notifications"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn mcp_server_a_late_turn_aborted_does_not_end_the_next_turn() {
    a_late_end_does_not_end_the_next_turn("mcp-server", "LATE_ABORT").await;
}

#[tokio::test]
async fn app_server_a_late_turn_completed_does_not_end_the_next_turn() {
    a_late_end_does_not_end_the_next_turn("app-server", "LATE_INTERRUPT").await;
}

#[tokio::test]
async fn exec_a_process_that_ignores_sigterm_is_killed_and_never_runs_beside_the_next_turn() {
    let sandbox = Sandbox::new();
    let server = fake_backend(&sandbox, "exec").await;
    let job_id = job(&server, &sandbox, "IGNORE_TERM").await;
    // job_start answers before Codex takes the turn: wait until its process runs it.
    server.until_events(&job_id, "turn_started", 1).await;
    let old = server.children();
    assert_eq!(old.len(), 1, "one codex exec for the turn");
    let cancelled = server.ok("job_cancel", json!({"job_id": job_id})).await;
    assert_eq!(cancelled["status"], "cancelled");
    server
        .ok("job_reply", json!({"job_id": job_id, "prompt": "after"}))
        .await;
    // The reply's process starts only once the old one is gone.
    server.until_events(&job_id, "turn_started", 2).await;
    assert!(
        !alive(old[0]),
        "the old codex exec still runs beside the new turn"
    );
    let settled = server.settle(&job_id).await;
    assert_eq!(settled["status"], "completed");
    assert_eq!(settled["result"], "fake exec: after");
    each_turn_ends_once_and_last(&server.all_events(&job_id, 1000).await);
}

#[tokio::test]
async fn a_codex_that_stops_reading_its_input_is_killed_and_the_turn_fails_with_why() {
    let sandbox = Sandbox::new();
    let bin = fake_codex();
    let server = Launch::new(&bin, &sandbox)
        .env("FAKE_CODEX_STALL", "1")
        .start()
        .await;
    // More than a pipe holds, so the write cannot finish while Codex does not read.
    let prompt = format!("big {}", "x".repeat(256 * 1024));
    let started = server
        .ok(
            "job_start",
            json!({"prompt": prompt, "cwd": sandbox.work()}),
        )
        .await;
    let failed = server.settle(started["job_id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("stopped reading its input"), "{error}");
    // The server goes on.
    assert_eq!(
        server.ok("job_list", json!({})).await["jobs"][0]["status"],
        "failed"
    );
}

#[tokio::test]
async fn app_server_a_cancel_whose_interrupt_codex_never_answers_ends_within_the_grace() {
    let sandbox = Sandbox::new();
    let server = fake_backend(&sandbox, "app-server").await;
    let job_id = job(&server, &sandbox, "HANG").await;
    // Cancel the turn Codex has, not one still being handed over.
    server.until_events(&job_id, "turn_started", 1).await;
    // app-server's own call timeout is 60 s: a cancel bound by the 300 ms grace is far below.
    let cancelled = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        server.call("job_cancel", json!({"job_id": job_id})),
    )
    .await
    .expect("job_cancel waited on Codex past its grace");
    let cancelled = cancelled.structured_content.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    let events = server.all_events(&job_id, 1000).await;
    let reason = events.last().unwrap()["data"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("did not answer the interrupt"), "{reason}");
}

#[tokio::test]
async fn sigterm_while_a_job_start_is_handed_over_leaves_no_codex_and_no_running_job() {
    let sandbox = Sandbox::new();
    let mut server = fake_backend(&sandbox, "app-server").await;
    let arguments = json!({"prompt": "SLOW_START", "cwd": sandbox.work()});
    let starting = server.client.call_tool(
        rmcp::model::CallToolRequestParams::new("job_start")
            .with_arguments(arguments.as_object().unwrap().clone()),
    );
    let stopping = async {
        // Codex has the turn/start and sits on it: the hand-over is in flight.
        server.until_logged("turn/start SLOW_START received").await;
        server.signal(libc::SIGTERM);
    };
    let (_, ()) = tokio::join!(starting, stopping);
    let status = within("server exit", server.child.wait()).await.unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        sandbox.codex_processes(),
        Vec::<u32>::new(),
        "codex outlived the server"
    );
    let jobs = sandbox.jobs_in_database();
    assert_eq!(jobs.len(), 1);
    let (_, status, kinds) = &jobs[0];
    assert_eq!(status, "interrupted", "{kinds:?}");
    assert_eq!(kinds, &["turn_interrupted"], "ended once, by the shutdown");
}

#[tokio::test]
async fn a_codex_restart_that_takes_long_does_not_hold_up_calls_about_other_jobs() {
    let sandbox = Sandbox::new();
    let pids = sandbox.dir.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let bin = fake_codex();
    let server = Launch::new(&bin, &sandbox)
        .env("FAKE_CODEX_PID_DIR", pids.to_str().unwrap())
        .env("FAKE_CODEX_SLOW_RESTART", "1")
        .start()
        .await;
    let crashed = job(&server, &sandbox, "CRASH").await;
    assert_eq!(server.settle(&crashed).await["status"], "failed");
    // The next job restarts Codex, which takes a minute to greet us; its job_start answers at
    // once all the same.
    let restarting = server
        .ok(
            "job_start",
            json!({"prompt": "hello", "cwd": sandbox.work()}),
        )
        .await;
    assert_eq!(restarting["status"], "running");
    server.until_logged("a slow restart").await;
    // Calls about other jobs are answered now, not after the handshake.
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        server.call("job_reply", json!({"job_id": crashed, "prompt": "again"})),
    )
    .await
    .expect("job_reply waited for the restart's handshake");
    assert_eq!(reply.is_error, Some(true));
    let listed = server.ok("job_list", json!({})).await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_server_answers_its_client_before_codex_is_up_and_runs_jobs_once_it_is() {
    let sandbox = Sandbox::new();
    let bin = fake_codex();
    let gate = sandbox.home().join("codex may answer");
    let server = Launch::new(&bin, &sandbox)
        .env("FAKE_CODEX_GATE", gate.to_str().unwrap())
        .start()
        .await;
    // Codex has not answered its handshake, yet the client is served.
    let listed = server.ok("job_list", json!({})).await;
    assert_eq!(listed["jobs"], json!([]));
    std::fs::write(&gate, b"").unwrap();
    let args = json!({"prompt": "after the gate", "cwd": sandbox.work()});
    let started = server.ok("job_start", args).await;
    assert_eq!(started["backend"], "mcp-server", "{started}");
    let job_id = started["job_id"].as_str().unwrap();
    assert_eq!(
        server.settle(job_id).await["result"],
        "fake: after the gate"
    );
}

/// A server on the fake app-server, with `args`; each app-server it starts leaves a file in
/// the returned directory.
async fn app_server_counting_children(sandbox: &Sandbox, args: &[&str]) -> (Server, PathBuf) {
    let bin = fake_codex();
    let pids = sandbox.home().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let launch = Launch::new(&bin, sandbox)
        .env("FAKE_CODEX_VERSION", "0.170.0")
        .env("FAKE_CODEX_APP_SERVER", "1")
        .env("FAKE_CODEX_PID_DIR", pids.to_str().unwrap())
        .arg("--backend")
        .arg("app-server");
    let server = args.iter().fold(launch, |l, a| l.arg(a)).start().await;
    (server, pids)
}

#[tokio::test]
async fn an_idle_app_server_is_stopped_and_the_next_reply_resumes_its_thread_in_a_new_one() {
    let sandbox = Sandbox::new();
    let (server, pids) =
        app_server_counting_children(&sandbox, &["--codex-idle-restart", "300ms"]).await;
    let job_id = job(&server, &sandbox, "first").await;
    assert_eq!(server.settle(&job_id).await["result"], "fake app: first");
    server
        .until_logged("stopped the idle codex app-server")
        .await;

    let reply = json!({"job_id": job_id, "prompt": "second"});
    server.ok("job_reply", reply).await;
    let settled = server.turn_end(&job_id).await;
    assert_eq!(settled["result"], "fake app: second", "{settled}");
    assert_eq!(
        std::fs::read_dir(&pids).unwrap().count(),
        2,
        "a new app-server ran the reply"
    );
}

#[tokio::test]
async fn an_app_server_holding_too_many_threads_is_replaced_before_its_next_turn() {
    let sandbox = Sandbox::new();
    let (server, pids) = app_server_counting_children(&sandbox, &[]).await;
    // One job more than a child keeps threads for (64), each a thread of its own.
    for i in 0..66 {
        let job_id = job(&server, &sandbox, &format!("job {i}")).await;
        let settled = server.settle(&job_id).await;
        assert_eq!(settled["result"], format!("fake app: job {i}"), "{settled}");
    }
    server
        .until_logged("replaced codex app-server, which held more threads")
        .await;
    assert_eq!(std::fs::read_dir(&pids).unwrap().count(), 2);
}

/// Writes `script` to `path` as an executable.
fn write_executable(path: &Path, script: &str) {
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A `PATH` whose `git` fails any `git worktree add` that starts while another is under way, and
/// holds each open for 0.3 s so that concurrent ones meet there; every other command is the real
/// git's.
fn path_with_a_git_refusing_overlapping_worktree_adds(sandbox: &Sandbox) -> String {
    let path = std::env::var_os("PATH").unwrap();
    let real_git = std::env::split_paths(&path)
        .map(|dir| dir.join("git"))
        .find(|git| git.is_file())
        .unwrap();
    let shims = sandbox.dir.path().join("shims");
    std::fs::create_dir_all(&shims).unwrap();
    let marker = sandbox.dir.path().join("worktree-add-under-way");
    let (marker, git) = (marker.display(), real_git.display());
    let script = format!(
        r#"#!/bin/sh
case " $* " in
*" worktree add "*)
  mkdir '{marker}' 2>/dev/null || {{ echo 'fatal: two worktree adds at once' >&2; exit 128; }}
  sleep 0.3
  '{git}' "$@"; rc=$?
  rmdir '{marker}'; exit $rc ;;
*) exec '{git}' "$@" ;;
esac
"#
    );
    write_executable(&shims.join("git"), &script);
    let dirs = std::iter::once(shims).chain(std::env::split_paths(&path));
    std::env::join_paths(dirs).unwrap().into_string().unwrap()
}

/// Git does not guard one `git worktree add` against another in the same repository: the second
/// can read the first's half-written files and fail (seen on a loaded CI machine).
#[tokio::test]
async fn worktree_jobs_started_at_once_on_one_repository_take_turns_adding_their_worktrees() {
    let sandbox = Sandbox::new();
    let repo = support::git::repository(&sandbox.work());
    let path = path_with_a_git_refusing_overlapping_worktree_adds(&sandbox);
    let bin = fake_codex();
    let server = Launch::new(&bin, &sandbox).env("PATH", &path).start().await;
    let start = |word: &str| json!({"prompt": word, "cwd": repo, "isolation": "worktree"});
    let (a, b) = tokio::join!(
        server.ok("job_start", start("alpha")),
        server.ok("job_start", start("beta"))
    );
    for (job, word) in [(a, "alpha"), (b, "beta")] {
        let settled = server.settle(job["job_id"].as_str().unwrap()).await;
        assert_eq!(settled["result"], format!("fake: {word}"), "{settled}");
        assert!(
            Path::new(job["worktree"].as_str().unwrap()).is_dir(),
            "{job}"
        );
    }
}

/// A `codex` that notes each run (its arguments, a line each) in the returned file, then is the
/// fake.
fn codex_noting_its_runs(sandbox: &Sandbox) -> (PathBuf, PathBuf) {
    let runs = sandbox.dir.path().join("codex-runs");
    let bin = sandbox.dir.path().join("codex");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
        runs.display(),
        fake_codex().display()
    );
    write_executable(&bin, &script);
    (bin, runs)
}

/// On stdio Codex starts once the client has its first answer, so that its start takes no core
/// from `initialize`.
#[tokio::test]
async fn a_stdio_client_that_leaves_without_a_word_starts_no_codex_and_the_server_exits() {
    let sandbox = Sandbox::new();
    let (bin, runs) = codex_noting_its_runs(&sandbox);
    let mut server = Launch::new(&bin, &sandbox).command().spawn().unwrap();
    drop(server.stdin.take());
    // It exits (saying the connection closed before `initialize`) instead of waiting for a start.
    within("server exit", server.wait()).await.unwrap();
    let ran = std::fs::read_to_string(&runs).unwrap_or_default();
    assert_eq!(ran, "", "Codex was run");
}

#[tokio::test]
async fn codex_comes_up_once_the_client_is_answered_before_any_tool_needs_it() {
    let sandbox = Sandbox::new();
    let (bin, runs) = codex_noting_its_runs(&sandbox);
    let server = Launch::new(&bin, &sandbox).start().await;
    server.until_logged("Codex backend ready").await;
    let ran = std::fs::read_to_string(&runs).unwrap();
    assert!(ran.lines().any(|run| run.ends_with("mcp-server")), "{ran}");
}
