//! A mock of the OpenAI Responses API that Codex can use as its model provider.
//!
//! It answers `POST /v1/responses` with a server-sent event stream, scripted by the last user
//! message of the request:
//!
//! | prompt | answer |
//! |---|---|
//! | `SAY: text` | the agent message `text` |
//! | `RUN: cmd` | an `exec_command` call of `cmd`; once Codex sends a tool's output, `done: <output>` |
//! | `ESCALATE: cmd` | the same with `sandbox_permissions: "require_escalated"` (asks for approval under `on-request`) |
//! | `ESCALATE2: cmd1 \|\| cmd2` | two such calls in one response (Codex asks for both at once) |
//! | `PATCH: file text` | an `apply_patch` call adding `file` with the line `text` (asks under `read-only`) |
//! | `PERMS: path` | a `request_permissions` call for write access to `path` (feature `request_permissions_tool`) |
//! | `ASK: question` | a `request_user_input` call asking `question` (id `choice`, options `Red`, `Blue`; feature `default_mode_request_user_input`) |
//! | `SLEEP: n` | `tick0 tick1 …` deltas every 0.5 s for `n` seconds, then `slept n` |
//! | `WAIT: n` | nothing at all for `n` seconds (not even headers), then `waited n` |
//! | `MANY: n` | a message of about `n` KiB ([`many`]), streamed in deltas of about 1 KiB |
//! | `DELTAS: n` | a message streamed as `n` deltas `w0 `, `w1 `, … (the benchmark's flood) |
//! | `HTTP400: text` | HTTP 400 with `text` in an error body |
//! | `HTTP500: text` | HTTP 500 |
//! | `FAILSTREAM: text` | a `response.failed` event |
//! | anything else | `hello` |
//!
//! A request of Codex's review (it carries Codex's review guidelines) gets a review with no
//! findings whose explanation is `mock review: nothing to flag`.
//!
//! Every request body is recorded so a test can assert what Codex sent. Every response reports
//! the same token usage, [`USAGE`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub struct MockModel {
    base_url: String,
    requests: Arc<Mutex<Vec<Value>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for MockModel {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl MockModel {
    pub async fn start() -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/responses", post(respond))
            .with_state(requests.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base_url: format!("http://{addr}/v1"),
            requests,
            server,
        }
    }

    /// The provider `base_url` for Codex's config.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Every request body received so far, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

/// The text of the newest user message of a request, or the output of a tool call that ends it.
enum LastInput {
    UserText(String),
    ToolOutput(String),
}

fn last_input(body: &Value) -> LastInput {
    let items = body["input"].as_array().cloned().unwrap_or_default();
    let tool_output =
        |l: &&Value| l["type"] == "function_call_output" || l["type"] == "custom_tool_call_output";
    if let Some(last) = items.last().filter(tool_output) {
        let output = match &last["output"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return LastInput::ToolOutput(output);
    }
    let text = items
        .iter()
        .rev()
        .find(|item| item["type"] == "message" && item["role"] == "user")
        .and_then(|item| item["content"].as_array())
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    LastInput::UserText(text)
}

async fn respond(State(requests): State<Arc<Mutex<Vec<Value>>>>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    requests.lock().unwrap().push(body.clone());
    // Codex's review asks with its guidelines and wants its findings as JSON.
    if body.to_string().contains("# Review guidelines") {
        let review = json!({"findings": [], "overall_correctness": "patch is correct",
            "overall_explanation": "mock review: nothing to flag", "overall_confidence_score": 0.9});
        return sse(message(&review.to_string()));
    }
    let text = match last_input(&body) {
        LastInput::ToolOutput(output) => return sse(message(&format!("done: {output}"))),
        LastInput::UserText(text) => text,
    };
    let (verb, arg) = text
        .split_once(':')
        .map(|(v, a)| (v.trim(), a.trim().to_owned()))
        .unwrap_or(("", String::new()));
    match verb {
        "SAY" => sse(message(&arg)),
        "RUN" => sse(exec_call(&arg, false)),
        "ESCALATE" => sse(exec_call(&arg, true)),
        "ESCALATE2" => {
            let calls: Vec<Value> = arg
                .split("||")
                .map(|cmd| escalated_args(cmd.trim()))
                .map(|args| json!(["exec_command", args]))
                .collect();
            sse(tool_calls(&calls))
        }
        "PATCH" => {
            let (file, text) = arg.split_once(' ').unwrap_or((&arg, ""));
            let patch = format!("*** Begin Patch\n*** Add File: {file}\n+{text}\n*** End Patch\n");
            sse(tool_calls(&[json!(["apply_patch", patch])]))
        }
        "PERMS" => {
            let args = json!({"permissions": {"file_system": {"write": [arg]}}, "reason": format!("mock wants to write {arg}")});
            sse(tool_calls(&[json!(["request_permissions", args])]))
        }
        "ASK" => {
            let args = json!({"questions": [{"id": "choice", "header": "Choice", "question": arg,
                "options": [{"label": "Red", "description": "warm"}, {"label": "Blue", "description": "cool"}]}]});
            sse(tool_calls(&[json!(["request_user_input", args])]))
        }
        "SLEEP" => slow(arg.parse::<f64>().unwrap_or(1.0)),
        "MANY" => {
            let text = many(arg.parse().unwrap_or(1));
            let mut chunks = vec![created(), message_added()];
            let mut piece = String::new();
            for c in text.chars() {
                piece.push(c);
                if piece.len() >= 1024 {
                    chunks.push(delta(&std::mem::take(&mut piece)));
                }
            }
            if !piece.is_empty() {
                chunks.push(delta(&piece));
            }
            chunks.push(message_done(&text));
            chunks.push(completed());
            sse(chunks)
        }
        "DELTAS" => {
            let pieces: Vec<String> = (0..arg.parse().unwrap_or(1))
                .map(|i| format!("w{i} "))
                .collect();
            let mut chunks = vec![created(), message_added()];
            chunks.extend(pieces.iter().map(|p| delta(p)));
            chunks.push(message_done(&pieces.concat()));
            chunks.push(completed());
            sse(chunks)
        }
        "WAIT" => {
            let seconds = arg.parse::<f64>().unwrap_or(1.0);
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            sse(message(&format!("waited {seconds}")))
        }
        "HTTP400" => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": {"message": arg, "type": "invalid_request_error"}}).to_string(),
        )
            .into_response(),
        "HTTP500" => (StatusCode::INTERNAL_SERVER_ERROR, arg).into_response(),
        "FAILSTREAM" => sse(vec![
            created(),
            event(
                json!({"type": "response.failed", "response": {"id": "resp_mock", "error": {"code": "server_error", "message": arg}}}),
            ),
        ]),
        _ => sse(message("hello")),
    }
}

/// The text `MANY: kib` answers: about `kib` KiB of numbered lines with characters a JSON writer
/// must escape (quotes, backslashes, tabs) and some that take several bytes.
pub fn many(kib: usize) -> String {
    let mut text = String::new();
    let mut line = 0;
    while text.len() < kib * 1024 {
        line += 1;
        text.push_str(&format!(
            "line {line:05}: \"quoted\" back\\slash\ttab — été ✓ 🦀 end\n"
        ));
    }
    text
}

fn event(data: Value) -> String {
    format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap_or("message")
    )
}

fn created() -> String {
    event(json!({"type": "response.created", "response": {"id": "resp_mock"}}))
}

/// The tokens every response reports using: four different numbers, so a test can tell each
/// count from the others.
pub const USAGE: [u64; 4] = [100, 40, 7, 3];

fn completed() -> String {
    let [input, cached, output, reasoning] = USAGE;
    event(
        json!({"type": "response.completed", "response": {"id": "resp_mock", "usage": {
        "input_tokens": input, "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output, "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input + output}}}),
    )
}

fn message_done(text: &str) -> String {
    event(
        json!({"type": "response.output_item.done", "output_index": 0, "item": {
        "type": "message", "role": "assistant", "id": "msg_mock",
        "content": [{"type": "output_text", "text": text, "annotations": []}]}}),
    )
}

fn message_added() -> String {
    event(
        json!({"type": "response.output_item.added", "output_index": 0, "item": {
        "type": "message", "role": "assistant", "id": "msg_mock", "content": []}}),
    )
}

fn delta(text: &str) -> String {
    event(
        json!({"type": "response.output_text.delta", "item_id": "msg_mock", "output_index": 0,
        "content_index": 0, "delta": text}),
    )
}

fn message(text: &str) -> Vec<String> {
    vec![
        created(),
        message_added(),
        delta(text),
        message_done(text),
        completed(),
    ]
}

fn exec_call(cmd: &str, escalate: bool) -> Vec<String> {
    let args = if escalate {
        escalated_args(cmd)
    } else {
        json!({"cmd": cmd})
    };
    tool_calls(&[json!(["exec_command", args])])
}

fn escalated_args(cmd: &str) -> Value {
    json!({"cmd": cmd, "sandbox_permissions": "require_escalated",
           "justification": format!("mock wants to run: {cmd}")})
}

/// A response of tool calls, each `[name, arguments]`: a JSON object makes a function call, a
/// string a freeform (custom) tool call such as `apply_patch`.
fn tool_calls(calls: &[Value]) -> Vec<String> {
    let mut chunks = vec![created()];
    for (index, call) in calls.iter().enumerate() {
        let call_id = format!("call_{:x}", rand_id());
        let item = match &call[1] {
            Value::String(input) => {
                json!({"type": "custom_tool_call", "id": format!("ct_{call_id}"),
                "call_id": call_id, "name": call[0], "input": input})
            }
            args => json!({"type": "function_call", "id": format!("fc_{call_id}"),
                "call_id": call_id, "name": call[0], "arguments": args.to_string()}),
        };
        chunks.push(event(
            json!({"type": "response.output_item.done", "output_index": index, "item": item}),
        ));
    }
    chunks.push(completed());
    chunks
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0xc0de00);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn sse(chunks: Vec<String>) -> Response {
    stream(chunks.into_iter().map(|c| (Duration::ZERO, c)).collect())
}

/// Streams `tickN ` deltas every half second for `seconds`, then completes.
fn slow(seconds: f64) -> Response {
    let ticks = (seconds * 2.0).ceil() as usize;
    let mut chunks = vec![
        (Duration::ZERO, created()),
        (Duration::ZERO, message_added()),
    ];
    let mut text = String::new();
    for i in 0..ticks {
        let piece = format!("tick{i} ");
        text.push_str(&piece);
        chunks.push((Duration::from_millis(500), delta(&piece)));
    }
    let done = format!("slept {seconds}");
    chunks.push((Duration::ZERO, delta(&done)));
    chunks.push((Duration::ZERO, message_done(&format!("{text}{done}"))));
    chunks.push((Duration::ZERO, completed()));
    stream(chunks)
}

fn stream(chunks: Vec<(Duration, String)>) -> Response {
    let body = futures::stream::unfold(chunks.into_iter(), |mut rest| async move {
        let (pause, chunk) = rest.next()?;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), rest))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap()
}
