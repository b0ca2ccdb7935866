//! The tools over streamable HTTP and legacy SSE, driven by the official Python MCP SDK (not our
//! own code path) against the real Codex, and the HTTP security rules checked with raw requests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failed test

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::codex_install::codex;
use support::fake_codex;
use support::http::{HttpServer, read_into_until, session_headers};
use support::mock_model::MockModel;
use support::server::{Launch, STEP, Sandbox, alive, children_of, within};

/// A server on `transport` running the real Codex 0.169 (app-server) against a mock model.
struct Setup {
    sandbox: Sandbox,
    _model: MockModel,
    server: HttpServer,
}

async fn real(transport: &str, mount: &str, args: &[&str]) -> Setup {
    let bin = codex("0.169.0");
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, "gpt-5.5");
    let launch = args.iter().fold(
        Launch::new(&bin, &sandbox)
            .arg("--transport")
            .arg(transport),
        |launch, arg| launch.arg(arg),
    );
    let server = HttpServer::start(launch, mount).await;
    Setup {
        sandbox,
        _model: model,
        server,
    }
}

/// A server on `transport` running the fake Codex: for the rules that need no real turn.
async fn fake(sandbox: &Sandbox, transport: &str, args: &[&str]) -> HttpServer {
    let bin = fake_codex();
    let launch = args.iter().fold(
        Launch::new(&bin, sandbox).arg("--transport").arg(transport),
        |launch, arg| launch.arg(arg),
    );
    HttpServer::start(launch, "/mcp").await
}

fn work(sandbox: &Sandbox) -> String {
    sandbox.work().to_str().unwrap().to_owned()
}

fn check_lifecycle(out: &Value) {
    assert_eq!(out["settled"]["status"], "completed", "{out}");
    assert_eq!(out["settled"]["result"], "over http");
    assert!(out["events"]["events"].as_array().unwrap().len() >= 4);
    assert_eq!(out["reply"]["turn"], 2);
    assert_eq!(out["replied"]["result"], "second over http");
    assert_eq!(out["cancelled"]["status"], "cancelled");
    assert_eq!(out["list"]["jobs"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn streamable_http_runs_jobs_end_to_end_for_the_python_sdk() {
    let t = real("streamable-http", "/mcp", &[]).await;
    let out = t
        .server
        .sdk("http", &[], &["lifecycle", &work(&t.sandbox)])
        .await;
    check_lifecycle(&out);
}

#[tokio::test]
async fn legacy_sse_runs_jobs_end_to_end_for_the_python_sdk_under_another_mount_path() {
    let t = real("sse", "/codex/mcp", &[]).await;
    let out = t
        .server
        .sdk("sse", &[], &["lifecycle", &work(&t.sandbox)])
        .await;
    check_lifecycle(&out);
}

#[tokio::test]
async fn the_http_alias_serves_streamable_http() {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "http", &[]).await;
    let listed = server.sdk("http", &[], &["call", "job_list", "{}"]).await;
    assert_eq!(listed["jobs"], json!([]));
}

#[tokio::test]
async fn two_clients_share_one_engine() {
    let t = real("streamable-http", "/mcp", &[]).await;
    let args = json!({"prompt": "SLEEP: 60", "cwd": work(&t.sandbox)}).to_string();
    let started = t
        .server
        .sdk("http", &[], &["call", "job_start", &args])
        .await;
    let job_id = started["job_id"].as_str().unwrap();
    // Another client sees the job, and cancels it.
    let listed = t.server.sdk("http", &[], &["call", "job_list", "{}"]).await;
    assert_eq!(listed["jobs"][0]["job_id"], job_id);
    let cancel = json!({"job_id": job_id}).to_string();
    let cancelled = t
        .server
        .sdk("http", &[], &["call", "job_cancel", &cancel])
        .await;
    assert_eq!(cancelled["status"], "cancelled");
    // And a third one reads it in the global feed.
    let feed = t
        .server
        .sdk("http", &[], &["call", "job_notifications", "{}"])
        .await;
    assert_eq!(feed["notifications"][0]["job_id"], job_id);
}

#[tokio::test]
async fn a_client_that_leaves_mid_wait_ends_its_wait_and_not_the_job_and_another_can_wait_on_it() {
    let t = real("streamable-http", "/mcp", &[]).await;
    // The job outlasts the test, so only the client's leaving can end the wait, however slow the
    // machine is to start the waiting client.
    let args = json!({"prompt": "SLEEP: 600", "cwd": work(&t.sandbox)}).to_string();
    let started = t
        .server
        .sdk("http", &[], &["call", "job_start", &args])
        .await;
    let job_id = started["job_id"].as_str().unwrap();
    let mut waiter = t
        .server
        .sdk_command("http", &[], &["wait-forever", job_id])
        .spawn()
        .unwrap();
    t.server.until_logged("job_wait: waiting").await;
    waiter.kill().await.unwrap();
    // The closed stream ends the wait on the server, long before its 300 s.
    t.server.until_logged("job_wait: the client left").await;
    let listed = t.server.sdk("http", &[], &["call", "job_list", "{}"]).await;
    assert_eq!(listed["jobs"][0]["status"], "running", "{listed}");
    let job = json!({"job_id": job_id}).to_string();
    t.server
        .sdk("http", &[], &["call", "job_cancel", &job])
        .await;
    let wait = json!({"job_id": job_id, "timeout_seconds": 60}).to_string();
    let waited = t
        .server
        .sdk("http", &[], &["call", "job_wait", &wait])
        .await;
    assert_eq!(
        waited["notifications"][0]["status"], "cancelled",
        "{waited}"
    );
}

#[tokio::test]
async fn a_job_wait_longer_than_a_minute_stays_alive_over_http() {
    let t = real("streamable-http", "/mcp", &[]).await;
    let args = json!({"prompt": "SLEEP: 65", "cwd": work(&t.sandbox)}).to_string();
    let started = t
        .server
        .sdk("http", &[], &["call", "job_start", &args])
        .await;
    let job_id = started["job_id"].as_str().unwrap();
    // The client gives up on a silent stream after 20 s: only keep-alives carry it past 60 s.
    let wait = json!({"job_id": job_id, "timeout_seconds": 120}).to_string();
    let command = t.server.sdk_command(
        "http",
        &[("MCP_READ_TIMEOUT", "20")],
        &["call", "job_wait", &wait],
    );
    let output = tokio::time::timeout(STEP, {
        let mut c = command;
        async move { c.output().await }
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let waited: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(waited["notifications"][0]["status"], "completed");
}

#[tokio::test]
async fn a_token_is_required_when_set_and_health_needs_none() {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "streamable-http", &["--auth-token", "s3cret"]).await;
    let init = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    let json_headers = [
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
    ];
    let (status, body) = server.raw("POST", "/mcp", &json_headers, init).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Bearer"));
    let mut wrong = json_headers.to_vec();
    wrong.push(("Authorization", "Bearer nope"));
    assert_eq!(server.raw("POST", "/mcp", &wrong, init).await.0, 401);
    let listed = server
        .sdk(
            "http",
            &[("MCP_TOKEN", "s3cret")],
            &["call", "job_list", "{}"],
        )
        .await;
    assert_eq!(listed["jobs"], json!([]));
    assert_eq!(server.raw("GET", "/mcp/healthz", &[], b"").await.0, 200);
}

#[tokio::test]
async fn legacy_sse_also_requires_the_token() {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "sse", &["--auth-token", "s3cret"]).await;
    assert_eq!(server.raw("GET", "/mcp/sse", &[], b"").await.0, 401);
    let listed = server
        .sdk(
            "sse",
            &[("MCP_TOKEN", "s3cret")],
            &["call", "job_list", "{}"],
        )
        .await;
    assert_eq!(listed["jobs"], json!([]));
}

#[tokio::test]
async fn foreign_hosts_and_origins_are_refused_on_every_route() {
    let sandbox = Sandbox::new();
    let server = fake(
        &sandbox,
        "streamable-http",
        &["--allowed-host", "codex.internal"],
    )
    .await;
    for path in ["/mcp", "/mcp/healthz"] {
        let (status, body) = server
            .raw("GET", path, &[("Host", "evil.example")], b"")
            .await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("--allowed-host"));
        let (status, body) = server
            .raw("GET", path, &[("Origin", "https://evil.example")], b"")
            .await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("--allowed-origin"));
    }
    let allowed = server
        .raw(
            "GET",
            "/mcp/healthz",
            &[("Host", "codex.internal:8000")],
            b"",
        )
        .await;
    assert_eq!(allowed.0, 200);
    let local_origin = server
        .raw(
            "GET",
            "/mcp/healthz",
            &[("Origin", "http://localhost:6274")],
            b"",
        )
        .await;
    assert_eq!(local_origin.0, 200);
}

#[tokio::test]
async fn health_says_what_runs_without_auth() {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "sse", &["--auth-token", "s3cret"]).await;
    // Codex comes up after the server answers: health says so once it is.
    server.until_logged("Codex backend ready").await;
    let (status, body) = server.raw("GET", "/mcp/healthz", &[], b"").await;
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["backend"], "mcp-server");
    assert_eq!(health["codex_version"], "0.153.4");
    assert_eq!(health["jobs_running"], 0);
    assert!(health["version"].is_string());
}

#[tokio::test]
async fn bad_requests_get_clear_statuses_and_the_server_goes_on() {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "sse", &["--max-body-bytes", "1000"]).await;
    let big = vec![b'x'; 5000];
    assert_eq!(
        server
            .raw("POST", "/mcp/messages?sessionId=x", &[], &big)
            .await
            .0,
        413
    );
    let ping = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let (status, body) = server
        .raw("POST", "/mcp/messages?sessionId=unknown", &[], ping)
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        server
            .raw("POST", "/mcp/messages?sessionId=x", &[], b"{not json")
            .await
            .0,
        400
    );
    assert_eq!(server.raw("POST", "/mcp/messages", &[], ping).await.0, 400);
    let listed = server.sdk("sse", &[], &["call", "job_list", "{}"]).await;
    assert_eq!(listed["jobs"], json!([]));
}

#[tokio::test]
async fn sessions_beyond_the_cap_are_refused() {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "sse", &["--max-sessions", "1"]).await;
    let held = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let (mut read, mut write) = held.into_split();
    let open = format!(
        "GET /mcp/sse HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        server.port
    );
    tokio::io::AsyncWriteExt::write_all(&mut write, open.as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 64];
    within(
        "the first stream",
        tokio::io::AsyncReadExt::read(&mut read, &mut first),
    )
    .await
    .unwrap();
    let (status, body) = server.raw("GET", "/mcp/sse", &[], b"").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("--max-sessions"));
}

#[tokio::test]
async fn a_sessionless_job_wait_holds_up_no_other_call() {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "streamable-http", &[]).await;
    let args = json!({"prompt": "TIME_AFTER: 600", "cwd": work(&sandbox)});
    let job = server.call_sessionless("job_start", args).await["job_id"].clone();
    let wait = json!({"job_id": job, "timeout_seconds": 600});
    let _waiting = server
        .send(server.sessionless_call("job_wait", wait, Value::Null))
        .await;
    server.until_logged("job_wait: waiting").await;
    let listed = server.call_sessionless("job_list", json!({})).await;
    assert_eq!(listed["jobs"][0]["job_id"], job, "{listed}");
    let (status, _) = server.open_session().await;
    assert_eq!(status, 200, "a new session is admitted meanwhile");
}

/// What `stream` brings until it has brought `needle` (within a step's bound).
async fn read_until(stream: &mut tokio::net::TcpStream, needle: &str) -> String {
    let mut read = Vec::new();
    let found = within(
        needle,
        read_into_until(stream, &mut read, needle.as_bytes()),
    )
    .await;
    assert!(found, "the stream ended before {needle}");
    String::from_utf8_lossy(&read).into_owned()
}

/// A head that says the body was sent whole: its length, not chunks.
fn sent_whole(head: &str) -> bool {
    head.contains("content-length:") && !head.contains("transfer-encoding: chunked")
}

#[tokio::test]
async fn a_quick_sessionless_call_is_sent_whole() {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "streamable-http", &[]).await;
    let (headers, body) = server.sessionless_call("job_list", json!({}), Value::Null);
    let headers: Vec<(&str, &str)> = headers.iter().filter_map(|h| h.split_once(": ")).collect();
    let (status, head, body) = server
        .raw_full("POST", &server.endpoint_path(), &headers, body.as_bytes())
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(sent_whole(&head), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(body.contains(r#""jobs":[]"#), "{body}");
}

#[tokio::test]
async fn a_quick_call_in_a_session_is_sent_whole_with_its_priming_event() {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "streamable-http", &[]).await;
    let session = server.initialize().await;
    let call = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"job_list","arguments":{}}}"#;
    let (status, head, body) = server
        .raw_full(
            "POST",
            &server.endpoint_path(),
            &session_headers(&session),
            call,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(sent_whole(&head), "{head}");
    // The priming event (its id and retry let a client resume) comes first, then the answer.
    let priming = body.find("retry:").expect("a priming event");
    let answer = body.find(r#""jobs":[]"#).expect("the answer");
    assert!(priming < answer, "{body}");
}

#[tokio::test]
async fn a_job_wait_in_a_session_sends_its_head_and_priming_event_while_it_waits() {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "streamable-http", &[]).await;
    let args = json!({"prompt": "TIME_AFTER: 600", "cwd": work(&sandbox)});
    let job = server.call_sessionless("job_start", args).await["job_id"].clone();
    let session = server.initialize().await;
    let wait = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "job_wait", "arguments": {"job_id": job, "timeout_seconds": 600}}});
    let headers = session_headers(&session)
        .iter()
        .map(|(name, value)| format!("{name}: {value}"))
        .collect();
    let mut stream = server.send((headers, wait.to_string())).await;
    // A client whose HTTP library times out a head that does not come would fail this wait.
    let start = read_until(&mut stream, "retry:").await.to_ascii_lowercase();
    assert!(start.contains("transfer-encoding: chunked"), "{start}");
}

#[tokio::test]
async fn a_sessionless_job_wait_with_a_progress_token_streams_its_progress_then_its_answer() {
    let sandbox = Sandbox::new();
    let server = fake(
        &sandbox,
        "streamable-http",
        &["--progress-interval-ms", "50"],
    )
    .await;
    let args = json!({"prompt": "TIME_AFTER: 1", "cwd": work(&sandbox)});
    let job = server.call_sessionless("job_start", args).await["job_id"].clone();
    let wait = json!({"job_id": job, "timeout_seconds": 60});
    let (headers, body) = server.sessionless_call("job_wait", wait, json!({"progressToken": 7}));
    let mut stream = server.send((headers, body)).await;
    let response = read_until(&mut stream, r#""result""#).await;
    assert!(response.contains("text/event-stream"), "{response}");
    let progress = response.find("notifications/progress").expect("progress");
    let answer = response.find(r#""notifications":[{"#).expect("the answer");
    assert!(progress < answer, "{response}");
}

#[tokio::test]
async fn a_sessionless_caller_that_leaves_mid_wait_ends_its_wait() {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "streamable-http", &[]).await;
    let args = json!({"prompt": "TIME_AFTER: 600", "cwd": work(&sandbox)});
    let job = server.call_sessionless("job_start", args).await["job_id"].clone();
    let wait = json!({"job_id": job, "timeout_seconds": 600});
    let waiting = server
        .send(server.sessionless_call("job_wait", wait, Value::Null))
        .await;
    server.until_logged("job_wait: waiting").await;
    drop(waiting);
    server.until_logged("job_wait: the client left").await;
}

#[tokio::test]
async fn sessionless_calls_are_not_sessions_and_pass_a_full_session_cap() {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "streamable-http", &["--max-sessions", "1"]).await;
    server.initialize().await;
    let listed = server.call_sessionless("job_list", json!({})).await;
    assert_eq!(listed["jobs"], json!([]), "{listed}");
}

/// The official Python SDK's client sets `level` with `logging/setLevel` and runs a job whose
/// Codex writes lines that are not JSON-RPC; what it got, up to the server's warning of them.
async fn logged_at(level: &str) -> Value {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "streamable-http", &[]).await;
    let args = ["log", level, &work(&sandbox), "GARBAGE", "not JSON-RPC"];
    let out = server.sdk("http", &[], &args).await;
    // As the conformance suite's logging-set-level scenario asks: an empty result.
    assert_eq!(out["set_level"], json!({}), "{out}");
    assert_eq!(out["settled"]["status"], "completed", "{out}");
    out
}

#[tokio::test]
async fn a_client_that_sets_a_log_level_gets_the_servers_warnings_and_nothing_below() {
    let out = logged_at("warning").await;
    let messages = out["messages"].as_array().unwrap();
    let warned = messages.iter().any(|m| {
        m["level"] == "warning" && m["data"]["message"].to_string().contains("not JSON-RPC")
    });
    assert!(warned, "{out}");
    // The server logged at debug before that warning (job_start, job_wait): none of it came.
    assert!(messages.iter().all(|m| m["level"] == "warning"), "{out}");
}

#[tokio::test]
async fn the_mcp_conformance_suites_logging_set_level_scenario_passes() {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "streamable-http", &[]).await;
    let suite = support::codex_install::conformance("0.1.12");
    let output = within(
        "the conformance suite",
        tokio::process::Command::new(suite)
            .args(["server", "--url", &server.endpoint("streamable-http")])
            .args(["--scenario", "logging-set-level"])
            .arg("--output-dir")
            .arg(sandbox.home().join("conformance"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("Passed: 1/1"), "{said}");
}

#[tokio::test]
async fn a_client_at_debug_gets_the_servers_debug_lines_too() {
    let out = logged_at("debug").await;
    let messages = out["messages"].as_array().unwrap();
    assert!(messages.iter().any(|m| m["level"] == "debug"), "{out}");
}

#[tokio::test]
async fn listening_off_loopback_without_a_token_is_refused() {
    let sandbox = Sandbox::new();
    let bin = fake_codex();
    let launch = Launch::new(&bin, &sandbox)
        .arg("--transport")
        .arg("streamable-http")
        .arg("--host")
        .arg("0.0.0.0")
        .arg("--port")
        .arg("0");
    let stderr = launch.refused().await;
    assert!(
        stderr.contains("without a token") && stderr.contains("--auth-token"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sigterm_settles_running_jobs_stops_codex_and_exits_cleanly() {
    let mut t = real("streamable-http", "/mcp", &[]).await;
    let args = json!({"prompt": "SLEEP: 60", "cwd": work(&t.sandbox)}).to_string();
    let started = t
        .server
        .sdk("http", &[], &["call", "job_start", &args])
        .await;
    let job_id = started["job_id"].as_str().unwrap().to_owned();
    let pid = t.server.child.id().unwrap();
    let children = children_of(pid);
    assert!(!children.is_empty());
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = within("server exit", t.server.child.wait()).await.unwrap();
    assert!(status.success(), "{status}\n{}", t.server.log());
    for child in children {
        assert!(!alive(child), "codex {child} outlived the server");
    }
    // The job was settled honestly before the exit.
    let bin = codex("0.169.0");
    let again = HttpServer::start(
        Launch::new(&bin, &t.sandbox).arg("--transport").arg("http"),
        "/mcp",
    )
    .await;
    let events = json!({"job_id": job_id}).to_string();
    let read = again
        .sdk("http", &[], &["call", "job_events", &events])
        .await;
    assert_eq!(read["status"], "interrupted");
}

#[tokio::test]
async fn streamable_sessions_beyond_the_cap_are_refused() {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "streamable-http", &["--max-sessions", "1"]).await;
    let (status, session) = server.open_session().await;
    assert_eq!(status, 200);
    assert!(session.is_some());
    let (status, _) = server.open_session().await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn idle_streamable_sessions_expire() {
    let sandbox = Sandbox::new();
    let server = fake(
        &sandbox,
        "streamable-http",
        &["--session-idle-seconds", "1", "--max-sessions", "1"],
    )
    .await;
    let (status, _) = server.open_session().await;
    assert_eq!(status, 200);
    // Once the idle session is gone, its slot is free again.
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let (status, _) = server.open_session().await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle session never expired"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn cors_answers_only_for_configured_origins() {
    let sandbox = Sandbox::new();
    let plain = fake(&sandbox, "streamable-http", &[]).await;
    let preflight = [
        ("Origin", "http://localhost:6274"),
        ("Access-Control-Request-Method", "POST"),
    ];
    let (_, headers, _) = plain.raw_full("OPTIONS", "/mcp", &preflight, b"").await;
    assert!(
        !headers.contains("access-control-allow-origin"),
        "CORS is off by default"
    );
    drop(plain);

    let other = Sandbox::new();
    let server = fake(
        &other,
        "streamable-http",
        &["--allowed-origin", "https://app.example"],
    )
    .await;
    let preflight = [
        ("Origin", "https://app.example"),
        ("Access-Control-Request-Method", "POST"),
        (
            "Access-Control-Request-Headers",
            "authorization, mcp-session-id",
        ),
    ];
    let (_, headers, _) = server.raw_full("OPTIONS", "/mcp", &preflight, b"").await;
    assert!(
        headers.contains("access-control-allow-origin: https://app.example"),
        "{headers}"
    );
    let (status, _) = server
        .raw(
            "GET",
            "/mcp/healthz",
            &[("Origin", "https://app.example")],
            b"",
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_on_streamable_http_too() {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "streamable-http", &["--max-body-bytes", "1000"]).await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(5000)
    );
    let headers = [
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
    ];
    let (status, body) = server.raw("POST", "/mcp", &headers, big.as_bytes()).await;
    assert_eq!(status, 413, "{body}");
    let (status, _) = server.open_session().await;
    assert_eq!(status, 200, "the server goes on");
}

#[tokio::test]
async fn a_legacy_sse_session_whose_stream_ended_answers_404() {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "sse", &[]).await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let open = format!(
        "GET /mcp/sse HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        server.port
    );
    tokio::io::AsyncWriteExt::write_all(&mut write, open.as_bytes())
        .await
        .unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(read));
    let endpoint = within("the endpoint event", async {
        loop {
            let line = lines.next_line().await.unwrap().unwrap();
            if let Some(url) = line.strip_prefix("data: ") {
                return url.to_owned();
            }
        }
    })
    .await;
    let ping = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    // The stream ends: the client goes away.
    drop(lines);
    drop(write);
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let (status, body) = server.raw("POST", &endpoint, &[], ping).await;
        if status == 404 {
            assert!(body.contains("ended or never existed"), "{body}");
            break;
        }
        assert_eq!(status, 202, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ended session still answers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn concurrent_new_sessions_never_exceed_the_cap() {
    let sandbox = Sandbox::new();
    let server = fake(&sandbox, "streamable-http", &["--max-sessions", "1"]).await;
    let opened = futures::future::join_all((0..8).map(|_| server.open_session())).await;
    let admitted = opened.iter().filter(|(status, _)| *status == 200).count();
    let refused = opened.iter().filter(|(status, _)| *status == 503).count();
    assert_eq!((admitted, refused), (1, 7), "{opened:?}");
}

#[tokio::test]
async fn health_says_codex_is_starting_then_ok_and_names_the_problem_of_an_unusable_one() {
    let sandbox = Sandbox::new();
    let bin = fake_codex();
    let gate = sandbox.home().join("codex may answer");
    let launch = Launch::new(&bin, &sandbox)
        .env("FAKE_CODEX_GATE", gate.to_str().unwrap())
        .arg("--transport")
        .arg("streamable-http");
    let server = HttpServer::start(launch, "/mcp").await;
    let (status, body) = server.raw("GET", "/mcp/healthz", &[], b"").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"starting\""), "{body}");
    std::fs::write(&gate, b"").unwrap();
    server.until_logged("Codex backend ready").await;
    let (status, body) = server.raw("GET", "/mcp/healthz", &[], b"").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"ok\"") && body.contains("mcp-server"),
        "{body}"
    );

    let sandbox = Sandbox::new();
    let missing = std::path::PathBuf::from("/no/such/codex");
    let launch = Launch::new(&missing, &sandbox)
        .arg("--transport")
        .arg("streamable-http");
    let server = HttpServer::start(launch, "/mcp").await;
    server.until_logged("Codex is not usable").await;
    let (status, body) = server.raw("GET", "/mcp/healthz", &[], b"").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("codex_unavailable") && body.contains("npm install"),
        "{body}"
    );
}
