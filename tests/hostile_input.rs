//! What a careless or hostile client can send: every request gets an answer within seconds,
//! nothing panics, the server stays up, and a job still runs to completion on the real Codex.
//! Over stdio (a raw client, since no MCP library sends such lines) and streamable HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failed test

mod support;

use serde_json::{Value, json};
use support::codex_install::codex;
use support::fake_codex;
use support::http::{HttpServer, session_headers};
use support::mock_model::MockModel;
use support::raw::{PROMPTLY, RawStdio};
use support::server::{Launch, STEP, Sandbox, within};

/// JSON nested `levels` deep, as a tool argument.
fn deep(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

/// Whether a `tools/call` answer is a tool error (not a protocol error) whose text has `needle`.
fn tool_error(answer: &Value, needle: &str) -> bool {
    answer["result"]["isError"] == true
        && answer["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains(needle))
}

/// How a call's answer must look.
type Check = fn(&Value) -> bool;

/// The hostile calls both transports get, as raw `params` JSON (some numbers have no Rust type),
/// each with how its answer must look.
fn hostile_calls() -> Vec<(String, Check)> {
    let call =
        |tool: &str, arguments: &str| format!(r#"{{"name":"{tool}","arguments":{arguments}}}"#);
    vec![
        // Numbers a client controls: answered, capped, never a panic.
        (call("job_wait", r#"{"timeout_seconds":1e20}"#), |a| {
            a["result"]["structuredContent"]["timed_out"] == true
        }),
        (call("job_wait", r#"{"timeout_seconds":1e308}"#), |a| {
            a["result"]["structuredContent"]["timed_out"] == true
        }),
        (call("job_wait", r#"{"timeout_seconds":-1}"#), |a| {
            tool_error(a, "timeout_seconds")
        }),
        (call("job_wait", r#"{"timeout_seconds":"soon"}"#), |a| {
            tool_error(a, "invalid arguments")
        }),
        (call("job_list", r#"{"limit":1e20}"#), |a| {
            tool_error(a, "invalid arguments")
        }),
        (call("job_list", r#"{"limit":18446744073709551616}"#), |a| {
            tool_error(a, "invalid arguments")
        }),
        (
            call("job_notifications", r#"{"cursor":18446744073709551615}"#),
            |a| tool_error(a, "past the end"),
        ),
        (call("job_notifications", r#"{"cursor":-1}"#), |a| {
            tool_error(a, "invalid arguments")
        }),
        // Strings: a huge one is not echoed back whole.
        (
            call(
                "job_events",
                &format!(r#"{{"job_id":"{}"}}"#, "j".repeat(1 << 20)),
            ),
            |a| tool_error(a, "job_list") && a.to_string().len() < 2000,
        ),
        (
            call(
                "job_events",
                &format!(
                    r#"{{"job_id":"x","event_types":["{}"]}}"#,
                    "y".repeat(1 << 20)
                ),
            ),
            |a| tool_error(a, "") && a.to_string().len() < 4000,
        ),
        // The argument at fault is named.
        (
            call("job_start", r#"{"prompt":"hi","effort":"max"}"#),
            |a| tool_error(a, r#"$.effort: a string "max" is not one of"#),
        ),
        (call("job_fork", r#"{"job_id":7,"prompt":"hi"}"#), |a| {
            tool_error(a, "$.job_id: expected string, got a number 7")
        }),
        (
            call("job_steer", r#"{"job_id":"nope","prompt":"hi"}"#),
            |a| tool_error(a, "job_list"),
        ),
        (
            call("job_start", r#"{"prompt":"hi","output_schema":[1]}"#),
            |a| tool_error(a, "$.output_schema: expected object, got an array"),
        ),
        (
            call(
                "job_start",
                r#"{"prompt":"hi","output_schema":{"type":"array"}}"#,
            ),
            |a| tool_error(a, "output_schema must be a JSON Schema of an object"),
        ),
        // Nesting below the parser's limit, but too deep to save with a job.
        (
            call(
                "job_start",
                &format!(r#"{{"prompt":"hi","config":{{"x":{}}}}}"#, deep(100)),
            ),
            |a| tool_error(a, "config nests"),
        ),
    ]
}

/// A `tools/call` request with raw `params`.
fn tools_call(id: u64, params: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{params}}}"#)
}

#[tokio::test]
async fn every_hostile_line_over_stdio_gets_an_answer_and_a_job_still_completes() {
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, "gpt-5.5");
    let bin = codex("0.169.0");
    let launch = Launch::new(&bin, &sandbox)
        .arg("--backend")
        .arg("app-server")
        .arg("--max-wait-seconds")
        .arg("1");
    let mut s = RawStdio::start(launch).await;

    s.send_line(b"this is not json").await;
    let answer = s.answer_to(&Value::Null, PROMPTLY).await;
    assert_eq!(answer["error"]["code"], -32700, "{answer}");

    s.send_line(br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"job_list""#)
        .await;
    let answer = s.answer_to(&Value::Null, PROMPTLY).await;
    assert_eq!(answer["error"]["code"], -32700, "truncated JSON: {answer}");

    let too_deep = format!(
        r#"{{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{{"name":"job_list","arguments":{{"x":{}}}}}}}"#,
        deep(10_000)
    );
    s.send_line(too_deep.as_bytes()).await;
    let answer = s.answer_to(&json!(4), PROMPTLY).await;
    assert_eq!(answer["error"]["code"], -32700, "{answer}");

    s.send_line(br#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}"#)
        .await;
    // The id comes back as JSON writes a number that large.
    let answer = s.answer_to(&json!(1.2345678901234568e29), PROMPTLY).await;
    assert_eq!(answer["error"]["code"], -32600, "{answer}");

    let long_id = "i".repeat(100_000);
    s.send(&json!({"jsonrpc": "2.0", "id": long_id, "method": "ping"}))
        .await;
    let answer = s.answer_to(&json!(long_id), PROMPTLY).await;
    assert!(
        answer["result"].is_object(),
        "a long string id is a fine id"
    );

    // A line longer than the server reads.
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":9,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "p".repeat(17 << 20)
    );
    s.send_line(huge.as_bytes()).await;
    let answer = s.answer_to(&Value::Null, PROMPTLY).await;
    assert_eq!(answer["error"]["code"], -32600, "{}", answer["error"]);

    for (i, (params, ok)) in hostile_calls().into_iter().enumerate() {
        let id = 100 + i as u64;
        s.send_line(tools_call(id, &params).as_bytes()).await;
        let answer = s.answer_to(&json!(id), PROMPTLY).await;
        let shown: String = answer.to_string().chars().take(300).collect();
        assert!(ok(&answer), "call {i}: {shown}");
    }

    // Still serving, and Codex still works.
    let started = s
        .call(
            200,
            "job_start",
            json!({"prompt": "SAY: still fine", "cwd": sandbox.work()}),
        )
        .await;
    let job_id = started["result"]["structuredContent"]["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let settled = loop {
        let waited = s
            .call(
                201,
                "job_wait",
                json!({"job_id": job_id, "timeout_seconds": 1}),
            )
            .await;
        if let Some(last) = waited["result"]["structuredContent"]["notifications"]
            .as_array()
            .and_then(|n| n.last())
        {
            break last.clone();
        }
    };
    assert_eq!(settled["status"], "completed");
    assert_eq!(settled["result"], "still fine");
}

/// A raw JSON-RPC POST in `session`; the status and the message that answers it (from the JSON
/// body, or from the SSE stream).
async fn post(server: &HttpServer, session: &str, body: &[u8]) -> (u16, Value) {
    let (status, body) = server
        .raw("POST", "/mcp", &session_headers(session), body)
        .await;
    let message = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|m| m.get("method").is_none())
        .or_else(|| serde_json::from_str(&body).ok())
        .unwrap_or(Value::Null);
    (status, message)
}

#[tokio::test]
async fn every_hostile_request_over_streamable_http_gets_an_answer_and_a_job_still_completes() {
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, "gpt-5.5");
    let bin = codex("0.169.0");
    let launch = Launch::new(&bin, &sandbox)
        .arg("--transport")
        .arg("streamable-http")
        .arg("--max-wait-seconds")
        .arg("1");
    let server = HttpServer::start(launch, "/mcp").await;
    let session = server.initialize().await;

    let (status, answer) = post(&server, &session, b"{not json").await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!(-32700)),
        "{answer}"
    );
    let too_deep = format!(
        r#"{{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{{"name":"job_list","arguments":{{"x":{}}}}}}}"#,
        deep(10_000)
    );
    let (status, answer) = post(&server, &session, too_deep.as_bytes()).await;
    assert_eq!(status, 400);
    assert_eq!(
        (&answer["error"]["code"], &answer["id"]),
        (&json!(-32700), &json!(4))
    );
    let (status, answer) = post(
        &server,
        &session,
        br#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}"#,
    )
    .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!(-32600)),
        "{answer}"
    );

    for (i, (params, ok)) in hostile_calls().into_iter().enumerate() {
        let request = tools_call(100 + i as u64, &params);
        let (status, answer) =
            tokio::time::timeout(PROMPTLY, post(&server, &session, request.as_bytes()))
                .await
                .expect("no answer within seconds");
        let shown: String = answer.to_string().chars().take(300).collect();
        assert!(status == 200 && ok(&answer), "call {i}: {status} {shown}");
    }

    let args = json!({"prompt": "SAY: still fine", "cwd": sandbox.work()}).to_string();
    let started = server.sdk("http", &[], &["call", "job_start", &args]).await;
    let wait = json!({"job_id": started["job_id"], "timeout_seconds": 30}).to_string();
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let waited = server.sdk("http", &[], &["call", "job_wait", &wait]).await;
        if let Some(last) = waited["notifications"].as_array().and_then(|n| n.last()) {
            assert_eq!(last["result"], "still fine");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never settled"
        );
    }
}

#[tokio::test]
async fn a_job_wait_the_client_cancels_ends_at_once() {
    let sandbox = Sandbox::new();
    let bin = fake_codex();
    let mut s = RawStdio::start(Launch::new(&bin, &sandbox)).await;
    let started = s
        .call(
            2,
            "job_start",
            json!({"prompt": "HANG", "cwd": sandbox.work()}),
        )
        .await;
    let job_id = started["result"]["structuredContent"]["job_id"].clone();
    s.send(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                   "params": {"name": "job_wait", "arguments": {"job_id": job_id, "timeout_seconds": 250}}}))
        .await;
    s.until_logged("job_wait: waiting", PROMPTLY).await;
    s.send(
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                   "params": {"requestId": 3, "reason": "the user moved on"}}),
    )
    .await;
    // A cancelled request gets no answer (MCP): the server's own word says the wait ended.
    s.until_logged("job_wait: the client left", PROMPTLY).await;
    let listed = s.call(4, "job_list", json!({})).await;
    assert_eq!(
        listed["result"]["structuredContent"]["jobs"][0]["status"],
        "running"
    );
}

#[tokio::test]
async fn sigterm_while_a_large_answer_is_written_leaves_no_half_line() {
    let sandbox = Sandbox::new();
    let bin = fake_codex();
    let mut s = RawStdio::start(Launch::new(&bin, &sandbox)).await;
    // A job whose final message is megabytes long: job_result answers with a quarter of one.
    let prompt = format!("big {}", "x".repeat(1 << 20));
    let started = s
        .call(
            2,
            "job_start",
            json!({"prompt": prompt, "cwd": sandbox.work()}),
        )
        .await;
    let job_id = started["result"]["structuredContent"]["job_id"].clone();
    let waited = s
        .call(
            3,
            "job_wait",
            json!({"job_id": job_id, "timeout_seconds": 60}),
        )
        .await;
    assert_eq!(
        waited["result"]["structuredContent"]["notifications"][0]["status"],
        "completed"
    );
    s.send(&json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                   "params": {"name": "job_result", "arguments": {"job_id": job_id, "max_bytes": 262_144}}}))
        .await;
    // The answer is larger than the pipe: unread, it leaves the server in the middle of the line.
    s.until_stdout_backs_up().await;
    s.signal(libc::SIGTERM);
    // Whatever the server wrote is whole.
    for line in s.rest().await {
        serde_json::from_str::<Value>(&line)
            .unwrap_or_else(|e| panic!("half a line ({e}), {} bytes", line.len()));
    }
    let status = within("server exit", s.child.wait()).await.unwrap();
    assert!(status.success(), "{status}");
}

/// Runs the server with stdin read from a file of an MCP handshake and `tools/list`, stdout
/// written to a file, and stderr as `stderr` makes it; returns its exit status and the
/// `tools/list` answer, if it wrote one.
async fn run_on_files(stderr: std::process::Stdio, drop_stderr: bool) -> (String, Option<Value>) {
    let sandbox = Sandbox::new();
    let requests = sandbox.work().join("requests.jsonl");
    let answers = sandbox.work().join("answers.jsonl");
    let lines = [
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "files", "version": "0"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&requests, text).unwrap();
    let fake = fake_codex();
    let mut command = Launch::new(&fake, &sandbox).command();
    command
        .stdin(std::fs::File::open(&requests).unwrap())
        .stdout(std::fs::File::create(&answers).unwrap())
        .stderr(stderr);
    let mut child = command.spawn().unwrap();
    if drop_stderr {
        drop(child.stderr.take());
    }
    let ended = within("the server to end with its input", child.wait())
        .await
        .unwrap();
    let written = std::fs::read_to_string(&answers).unwrap();
    let tools = written
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|m| m["id"] == 1);
    (ended.to_string(), tools)
}

#[tokio::test]
async fn stdio_that_is_a_file_and_not_a_pipe_is_served_too() {
    // The server reads and writes pipes without tokio's blocking pool; anything else (here
    // files, as in `codex-async-mcp < requests > answers`) goes through tokio's stdio.
    let (ended, tools) = run_on_files(std::process::Stdio::null(), false).await;
    assert_eq!(ended, "exit status: 0");
    let tools = tools.expect("a tools/list answer");
    assert!(tools.to_string().contains("job_start"), "{tools}");
}

#[tokio::test]
async fn a_closed_stderr_loses_log_lines_not_the_server() {
    let (ended, tools) = run_on_files(std::process::Stdio::piped(), true).await;
    assert_eq!(ended, "exit status: 0", "the server did not panic");
    let tools = tools.expect("a tools/list answer");
    assert!(tools.to_string().contains("job_start"), "{tools}");
}
