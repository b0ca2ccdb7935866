//! The server on an HTTP transport, and two ways to talk to it: the official Python MCP SDK
//! (installed from PyPI into a venv under `target/` on first use) and raw HTTP requests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};

use super::codex_install::target_dir;
use super::server::{Launch, STEP, within};

/// The Python SDK version the tests run.
const MCP_SDK: &str = "mcp==2.3.0";

/// A Python with the MCP SDK, installing it on first use.
pub fn sdk_python() -> PathBuf {
    let venv = target_dir().join("py-sdk");
    std::fs::create_dir_all(&venv).unwrap();
    let lock = std::fs::File::create(target_dir().join("py-sdk.lock")).unwrap();
    lock.lock().unwrap();
    let python = venv.join("bin").join("python");
    let marker = venv.join(".installed");
    if marker.exists() {
        return python;
    }
    let made = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv");
    assert!(
        made.success(),
        "could not make a venv at {}",
        venv.display()
    );
    let installed = std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            MCP_SDK,
        ])
        .status()
        .expect("pip install");
    assert!(installed.success(), "pip install {MCP_SDK} failed");
    std::fs::write(&marker, MCP_SDK).unwrap();
    python
}

/// The headers of a JSON-RPC POST in `session`, as a client on the 2025-06-18 protocol sends them.
pub fn session_headers(session: &str) -> [(&'static str, &str); 4] {
    [
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
        ("Mcp-Session-Id", session),
        ("Mcp-Protocol-Version", "2025-06-18"),
    ]
}

/// Reads `stream` into `read` until what was read holds `needle`; false if the stream ended
/// first. Unbounded: the caller bounds it.
pub async fn read_into_until(
    stream: &mut tokio::net::TcpStream,
    read: &mut Vec<u8>,
    needle: &[u8],
) -> bool {
    let mut chunk = [0u8; 4096];
    while !read.windows(needle.len()).any(|w| w == needle) {
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return false;
        }
        read.extend_from_slice(&chunk[..n]);
    }
    true
}

pub struct HttpServer {
    pub child: Child,
    pub port: u16,
    pub mount: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl HttpServer {
    /// Starts the server from `launch` (which names the transport) on a free port and waits
    /// until it listens.
    pub async fn start(launch: Launch<'_>, mount: &str) -> Self {
        let launch = launch.arg("--port").arg("0").arg("--mount-path").arg(mount);
        let mut child = launch.command().stdin(Stdio::null()).spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let port = within("the server to listen", async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(rest) = line.split("serving MCP over HTTP address=").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap();
                    return addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();
                }
            }
            panic!(
                "the server exited before listening:\n{}",
                log.lock().unwrap()
            );
        })
        .await;
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Self {
            child,
            port,
            mount: mount.trim_end_matches('/').to_owned(),
            log,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the server has logged a line containing `needle`.
    pub async fn until_logged(&self, needle: &str) {
        super::server::until_logged(|| self.log(), needle, STEP).await;
    }

    /// The URL of `path` under the mount path.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}{path}", self.port, self.mount)
    }

    /// The URL an SDK client connects to for `transport` (`http` or `sse`).
    pub fn endpoint(&self, transport: &str) -> String {
        match transport {
            "sse" => self.url("/sse"),
            _ => self.url(""),
        }
    }

    /// Runs a scenario of `sdk_client.py` and returns the JSON it printed.
    pub async fn sdk(&self, transport: &str, env: &[(&str, &str)], args: &[&str]) -> Value {
        let output = within(
            "the SDK client",
            self.sdk_command(transport, env, args).output(),
        )
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "sdk_client {args:?} failed: {}\n{stdout}\nserver:\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap()
    }

    pub fn sdk_command(&self, transport: &str, env: &[(&str, &str)], args: &[&str]) -> Command {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/sdk_client.py");
        let mut command = Command::new(sdk_python());
        command
            .arg(script)
            .arg(self.endpoint(transport))
            .arg(transport)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// One raw HTTP/1.1 request; the status and the body.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let (status, _, body) = self.raw_full(method, path, headers, body).await;
        (status, body)
    }

    /// One raw HTTP/1.1 request; the status, the header lines (lowercased) and the body.
    pub async fn raw_full(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, String) {
        let request = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .unwrap();
            let mut head = format!(
                "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
                body.len()
            );
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
                head.push_str(&format!("Host: 127.0.0.1:{}\r\n", self.port));
            }
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(body).await.unwrap();
            let mut response = Vec::new();
            // The head comes however slow the machine is; then, as a streaming answer (SSE) may
            // never end, what comes within a moment.
            read_into_until(&mut stream, &mut response, b"\r\n\r\n").await;
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut response))
                .await;
            let text = String::from_utf8_lossy(&response).into_owned();
            let status = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            (status, head.to_ascii_lowercase(), body.to_owned())
        };
        tokio::time::timeout(STEP, request)
            .await
            .expect("raw HTTP request timed out")
    }

    /// Opens a streamable HTTP session with a raw `initialize`; the status and the session id.
    pub async fn open_session(&self) -> (u16, Option<String>) {
        let init = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
        let request = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .unwrap();
            let head = format!(
                "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n",
                self.endpoint_path(),
                init.len()
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(init).await.unwrap();
            let mut response = vec![0u8; 4096];
            let n = stream.read(&mut response).await.unwrap();
            String::from_utf8_lossy(&response[..n]).into_owned()
        };
        let text = within("initialize", request).await;
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let session = text.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("mcp-session-id:")
                .map(|_| l[15..].trim().to_owned())
        });
        (status, session)
    }

    /// A streamable HTTP session, initialized; its id.
    pub async fn initialize(&self) -> String {
        let (status, session) = self.open_session().await;
        assert_eq!(status, 200);
        let session = session.expect("a session id");
        let (status, _) = self
            .raw(
                "POST",
                &self.endpoint_path(),
                &session_headers(&session),
                br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            )
            .await;
        assert_eq!(status, 202);
        session
    }

    /// A sessionless `tools/call` as Claude Code sends it (the 2026-07-28 handshake): no
    /// session; the protocol version in the headers and in `_meta`, beside what `meta` adds.
    /// The raw request, to send with `raw` or `stream`.
    pub fn sessionless_call(&self, tool: &str, args: Value, meta: Value) -> (Vec<String>, String) {
        let mut meta_object = serde_json::json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {}
        });
        if let (Some(all), Value::Object(more)) = (meta_object.as_object_mut(), meta) {
            all.extend(more);
        }
        let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": args, "_meta": meta_object}});
        let headers = vec![
            "Content-Type: application/json".to_owned(),
            "Accept: application/json, text/event-stream".to_owned(),
            "MCP-Protocol-Version: 2026-07-28".to_owned(),
            "Mcp-Method: tools/call".to_owned(),
            format!("Mcp-Name: {tool}"),
        ];
        (headers, body.to_string())
    }

    /// Calls `tool` sessionless and returns its structured answer.
    pub async fn call_sessionless(&self, tool: &str, args: Value) -> Value {
        let result = self.sessionless_result(tool, args).await;
        assert_ne!(result["isError"], true, "{tool}: {result}");
        result["structuredContent"].clone()
    }

    /// Calls `tool` sessionless and returns the text of the error it must answer with.
    pub async fn sessionless_error(&self, tool: &str, args: Value) -> String {
        let result = self.sessionless_result(tool, args).await;
        assert_eq!(result["isError"], true, "{tool}: {result}");
        result["content"][0]["text"].as_str().unwrap().to_owned()
    }

    /// Calls `tool` sessionless and returns the whole `CallToolResult`.
    pub async fn sessionless_result(&self, tool: &str, args: Value) -> Value {
        let (headers, body) = self.sessionless_call(tool, args, Value::Null);
        let headers: Vec<(&str, &str)> =
            headers.iter().filter_map(|h| h.split_once(": ")).collect();
        let (status, answer) = self
            .raw("POST", &self.endpoint_path(), &headers, body.as_bytes())
            .await;
        assert_eq!(status, 200, "{tool}: {answer}");
        answer
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
            .find(|m| m.get("id").is_some())
            .map(|m| m["result"].clone())
            .unwrap_or_else(|| panic!("{tool} answered no result: {answer}"))
    }

    /// Sends a request of `sessionless_call` on a connection of its own, which stays open (the
    /// request goes on) until the stream is dropped.
    pub async fn send(&self, (headers, body): (Vec<String>, String)) -> tokio::net::TcpStream {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n{}\r\n\r\n",
            self.endpoint_path(),
            self.port,
            body.len(),
            headers.join("\r\n")
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        stream
    }

    /// The path of the streamable HTTP endpoint.
    pub fn endpoint_path(&self) -> String {
        if self.mount.is_empty() {
            "/".to_owned()
        } else {
            self.mount.clone()
        }
    }
}
