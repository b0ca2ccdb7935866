//! What an orchestrating model pays for: the size of each answer, measured on the real Codex
//! (printed; the bounds are generous, not exact bytes), a final message of any size read whole
//! and exactly over stdio and streamable HTTP, and tool schemas every client dialect takes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failed test

mod support;

use serde_json::{Value, json};
use support::codex_install::{codex, inspector};
use support::fake_codex;
use support::http::HttpServer;
use support::mock_model::{MockModel, many};
use support::server::{Launch, Sandbox, Server, within};

/// The default answer budget (`--max-answer-bytes`).
const BUDGET: usize = 24 * 1024;

/// A backend, its Codex and a model slug that Codex knows.
const BACKENDS: [(&str, &str, &str); 3] = [
    ("app-server", "0.169.0", "gpt-5.5"),
    ("mcp-server", "0.153.4", "gpt-5.2"),
    ("exec", "0.169.0", "gpt-5.5"),
];

struct Setup {
    sandbox: Sandbox,
    _model: MockModel,
    server: Server,
}

async fn setup(backend: &str, version: &str, slug: &str) -> Setup {
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, slug);
    let bin = codex(version);
    let server = Launch::new(&bin, &sandbox)
        .arg("--backend")
        .arg(backend)
        .start()
        .await;
    Setup {
        sandbox,
        _model: model,
        server,
    }
}

/// Calls a tool that must succeed: its structuredContent and the bytes it takes.
async fn sized(server: &Server, tool: &str, args: Value) -> (Value, usize) {
    let answer = server.ok(tool, args).await;
    let bytes = serde_json::to_vec(&answer).unwrap().len();
    (answer, bytes)
}

#[tokio::test]
async fn answers_about_a_short_job_are_small_on_every_backend() {
    for (backend, version, slug) in BACKENDS {
        let t = setup(backend, version, slug).await;
        let tools = within("tools/list", t.server.client.list_all_tools())
            .await
            .unwrap();
        let tools_bytes = serde_json::to_vec(&tools).unwrap().len();
        let (started, start_bytes) = sized(
            &t.server,
            "job_start",
            json!({"prompt": "SAY: hi", "cwd": t.sandbox.work()}),
        )
        .await;
        let job_id = started["job_id"].as_str().unwrap();
        t.server.settle(job_id).await;
        let (waited, wait_bytes) = sized(&t.server, "job_wait", json!({"job_id": job_id})).await;
        assert_eq!(waited["notifications"][0]["result"], "hi");
        let (_, events_bytes) = sized(&t.server, "job_events", json!({"job_id": job_id})).await;
        let (_, result_bytes) = sized(&t.server, "job_result", json!({"job_id": job_id})).await;
        eprintln!(
            "{backend}: tools/list {tools_bytes} B, job_start {start_bytes} B, job_wait \
             {wait_bytes} B, job_events {events_bytes} B, job_result {result_bytes} B"
        );
        // Per tool, as the tool count grows with what the server does.
        assert!(
            tools_bytes <= tools.len() * 1400,
            "{backend}: tools/list {tools_bytes} B for {} tools",
            tools.len()
        );
        assert!(
            start_bytes <= 500,
            "{backend}: job_start {start_bytes} B: {started}"
        );
        assert!(
            wait_bytes <= 300,
            "{backend}: job_wait {wait_bytes} B: {waited}"
        );
        assert!(
            events_bytes <= 1200,
            "{backend}: job_events {events_bytes} B"
        );
        assert!(
            result_bytes <= 300,
            "{backend}: job_result {result_bytes} B"
        );
    }
}

#[tokio::test]
async fn a_long_final_message_is_read_whole_and_exactly_and_no_answer_leaves_its_budget() {
    let t = setup("app-server", "0.169.0", "gpt-5.5").await;
    let expected = many(200);
    let (started, _) = sized(
        &t.server,
        "job_start",
        json!({"prompt": "MANY: 200", "cwd": t.sandbox.work()}),
    )
    .await;
    let job_id = started["job_id"].as_str().unwrap().to_owned();
    let mut largest = 0;
    let mut note = |bytes: usize| largest = largest.max(bytes);

    // The settlement carries the result cut, and says its whole length.
    let settled = t.server.settle(&job_id).await;
    assert_eq!(settled["result_chars"], expected.chars().count());
    let (_, bytes) = sized(&t.server, "job_wait", json!({"job_id": job_id})).await;
    note(bytes);

    // job_result reads it whole, piece by piece.
    let (mut text, mut offset) = (String::new(), 0);
    loop {
        let (page, bytes) = sized(
            &t.server,
            "job_result",
            json!({"job_id": job_id, "offset": offset}),
        )
        .await;
        note(bytes);
        assert_eq!(page["total_chars"], expected.chars().count());
        text.push_str(page["text"].as_str().unwrap());
        match page["next_offset"].as_u64() {
            Some(next) => offset = next,
            None => break,
        }
    }
    assert!(
        text == expected,
        "job_result read {} of {} bytes",
        text.len(),
        expected.len()
    );

    // So does paging its deltas; and every default, raw and long page stays in the budget.
    let mut deltas = String::new();
    for view in [
        json!({"include_deltas": true, "limit": 1000}),
        json!({}),
        json!({"raw": true, "limit": 1000}),
    ] {
        let mut cursor = 0;
        loop {
            let mut args = view.clone();
            args["job_id"] = json!(job_id);
            args["cursor"] = json!(cursor);
            let (page, bytes) = sized(&t.server, "job_events", args).await;
            note(bytes);
            if view.get("include_deltas").is_some() {
                for event in page["events"].as_array().unwrap() {
                    if event["type"] == "agent_message_delta" {
                        deltas.push_str(event["data"]["delta"].as_str().unwrap());
                    }
                }
            }
            cursor = page["cursor"].as_u64().unwrap();
            if !page["has_more"].as_bool().unwrap() {
                break;
            }
        }
    }
    assert!(
        deltas == expected,
        "the deltas made {} of {} bytes",
        deltas.len(),
        expected.len()
    );
    for (tool, args) in [
        ("job_notifications", json!({"limit": 1000})),
        ("job_list", json!({})),
        ("job_wait", json!({"cursor": 0})),
    ] {
        let (_, bytes) = sized(&t.server, tool, args).await;
        note(bytes);
    }
    eprintln!("largest answer about a 200 KiB message: {largest} B");
    assert!(largest <= BUDGET, "an answer of {largest} B");
}

#[tokio::test]
async fn a_long_final_message_is_read_whole_over_streamable_http_by_the_python_sdk() {
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, "gpt-5.5");
    let bin = codex("0.169.0");
    let launch = Launch::new(&bin, &sandbox)
        .arg("--transport")
        .arg("streamable-http");
    let server = HttpServer::start(launch, "/mcp").await;
    let args = json!({"prompt": "MANY: 200", "cwd": sandbox.work()}).to_string();
    let started = server.sdk("http", &[], &["call", "job_start", &args]).await;
    let job_id = started["job_id"].as_str().unwrap();
    let wait = json!({"job_id": job_id, "timeout_seconds": 60}).to_string();
    let settled = server.sdk("http", &[], &["call", "job_wait", &wait]).await;
    assert_eq!(settled["notifications"][0]["status"], "completed");
    // The SDK refuses any server-sent event over 1 MiB: reading it all is the proof.
    let read = server.sdk("http", &[], &["read-whole", job_id]).await;
    let expected = many(200);
    assert!(
        read["text"] == expected.as_str(),
        "job_result over HTTP differs"
    );
    assert!(
        read["deltas"] == expected.as_str(),
        "the deltas over HTTP differ"
    );
    assert!(
        read["largest"].as_u64().unwrap() <= BUDGET as u64,
        "{}",
        read["largest"]
    );
}

#[tokio::test]
async fn the_mcp_inspector_finds_nothing_to_warn_about_in_the_tool_schemas() {
    let sandbox = Sandbox::new();
    let inspector = inspector("2.12.0");
    let output = within(
        "the inspector",
        tokio::process::Command::new(&inspector)
            .args(["--cli", "--method", "tools/list", "--strict"])
            .arg(env!("CARGO_BIN_EXE_codex-async-mcp"))
            .arg("--codex-bin")
            .arg(fake_codex())
            .arg("--state-dir")
            .arg(sandbox.state())
            .env("HOME", sandbox.home())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let findings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("Warning:") || l.starts_with("Error:"))
        .collect();
    assert!(findings.is_empty(), "{stderr}");
    assert!(output.status.success(), "{}\n{stderr}", output.status);
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed["tools"].as_array().unwrap().len(), 14);
}
