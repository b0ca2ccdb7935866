//! The server under test driven over stdio by hand, one raw line at a time: for what an MCP
//! client library would never send (malformed lines, huge ids, deep JSON).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::server::{Launch, STEP};

/// How long a request may go unanswered before the test calls it a hang.
pub const PROMPTLY: Duration = Duration::from_secs(15);

pub struct RawStdio {
    pub child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Messages read while looking for another.
    kept: Vec<Value>,
    /// What the server logged.
    log: Arc<Mutex<String>>,
}

impl RawStdio {
    /// Starts the server and completes the MCP handshake.
    pub async fn start(launch: Launch<'_>) -> Self {
        let mut child = launch.command().spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut raw = Self {
            child,
            stdin,
            lines,
            kept: Vec::new(),
            log,
        };
        raw.send(
            &json!({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}}),
        )
        .await;
        let init = raw.answer_to(&json!("init"), STEP).await;
        assert!(init["result"].is_object(), "{init}");
        raw.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        raw
    }

    pub async fn send(&mut self, message: &Value) {
        self.send_line(message.to_string().as_bytes()).await;
    }

    /// Writes `line` and a newline, as they are.
    pub async fn send_line(&mut self, line: &[u8]) {
        self.stdin.write_all(line).await.unwrap();
        self.stdin.write_all(b"\n").await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The next message that answers `id`, within `bound`.
    pub async fn answer_to(&mut self, id: &Value, bound: Duration) -> Value {
        if let Some(at) = self
            .kept
            .iter()
            .position(|m| &m["id"] == id && m.get("method").is_none())
        {
            return self.kept.remove(at);
        }
        let read = async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("the server closed stdout");
                let message: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not one JSON message per line ({e}): {line}"));
                if &message["id"] == id && message.get("method").is_none() {
                    return message;
                }
                self.kept.push(message);
            }
        };
        tokio::time::timeout(bound, read)
            .await
            .unwrap_or_else(|_| panic!("no answer to request {id} within {bound:?}"))
    }

    /// Every line the server writes from now until it closes stdout, as it wrote them.
    pub async fn rest(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        let read = async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                rest.push(line);
            }
        };
        tokio::time::timeout(STEP, read)
            .await
            .expect("the server never closed stdout");
        rest
    }

    /// Waits, without reading, until the server's stdout pipe is full: the server is then blocked
    /// in the middle of writing a line.
    pub async fn until_stdout_backs_up(&mut self) {
        use std::os::fd::AsRawFd as _;
        let fd = self.lines.get_ref().get_ref().as_raw_fd();
        // SAFETY: F_GETPIPE_SZ on our own open pipe.
        let capacity = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let mut waiting: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int.
            unsafe { libc::ioctl(fd, libc::FIONREAD, &mut waiting) };
            if waiting >= capacity {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stdout never filled"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: i32) {
        let pid = self.child.id().expect("the server runs") as i32;
        // SAFETY: a plain syscall on our own child's pid.
        unsafe { libc::kill(pid, signal) };
    }

    /// Waits until the server has logged a line containing `needle`, at most `bound`.
    pub async fn until_logged(&self, needle: &str, bound: Duration) {
        super::server::until_logged(|| self.log.lock().unwrap().clone(), needle, bound).await;
    }

    /// Calls a tool and returns the `tools/call` answer.
    pub async fn call(&mut self, id: u64, tool: &str, arguments: Value) -> Value {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                          "params": {"name": tool, "arguments": arguments}}))
            .await;
        self.answer_to(&json!(id), PROMPTLY).await
    }
}
