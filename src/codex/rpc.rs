//! A Codex child process, and a JSON-RPC 2.0 peer over its stdio, one JSON object per line.
//!
//! The process part (own process group, death with the server, the tail of stderr, how it
//! exited) serves every backend; `codex exec` reads its JSONL with [`RpcReader::next_line`]
//! instead of speaking JSON-RPC.
//!
//! [`spawn`] gives two halves: an [`RpcChild`] that any task may use to send (calls, routed
//! requests, notifications, answers) and an [`RpcReader`] that exactly one task drives. The reader
//! resolves plain calls itself and hands everything else back in the order the child wrote it, so
//! the task that drives it decides what each message means without any reordering.

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::{oneshot, watch};

/// How many stderr lines of a child to keep for the reason when it dies.
const STDERR_TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error, Clone)]
pub(crate) enum RpcError {
    #[error("the Codex process exited")]
    Closed,
    #[error("writing to the Codex process failed: {0}")]
    Write(String),
    #[error("Codex did not answer `{method}` within {secs} s")]
    Timeout { method: String, secs: u64 },
    #[error("Codex answered with error {code}: {message}")]
    Remote { code: i64, message: String },
}

/// One line of the child's stdout.
#[derive(Debug)]
pub(crate) enum Line {
    Json(serde_json::Map<String, Value>),
    /// A line that is not a JSON object.
    Garbage(String),
}

/// A message from the child that the driving task must handle.
#[derive(Debug)]
pub(crate) enum Incoming {
    Notification {
        method: String,
        params: Value,
    },
    /// A request from the child: it must be answered with [`RpcChild::respond`].
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    /// The answer to a request sent with [`RpcChild::send_routed`].
    Response {
        id: i64,
        outcome: Result<Value, RpcError>,
    },
    /// A line that is not a JSON-RPC message.
    Garbage(String),
}

enum Pending {
    Call(oneshot::Sender<Result<Value, RpcError>>),
    Routed,
}

/// How a child ended, for the reason given to the jobs it was running.
#[derive(Clone, Debug)]
pub(crate) struct ExitInfo {
    pub status: String,
    pub stderr_tail: String,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.status)?;
        if !self.stderr_tail.is_empty() {
            write!(f, "; last stderr lines:\n{}", self.stderr_tail)?;
        }
        Ok(())
    }
}

struct Shared {
    pending: Mutex<HashMap<i64, Pending>>,
    stderr_tail: Mutex<VecDeque<String>>,
}

/// The sending half, cheap to share.
pub(crate) struct RpcChild {
    pid: Option<u32>,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    next_id: AtomicI64,
    shared: Arc<Shared>,
    exited: watch::Receiver<Option<String>>,
    /// True once the child's stderr is closed and its tail complete.
    stderr_closed: watch::Receiver<bool>,
}

/// The receiving half; one task drives it.
pub(crate) struct RpcReader {
    lines: Lines<BufReader<ChildStdout>>,
    shared: Arc<Shared>,
}

/// Starts `command` with piped stdio in its own process group, so that killing the group also
/// ends whatever it started (the npm `codex` shim runs the real binary as its child).
pub(crate) fn spawn(mut command: Command) -> std::io::Result<(RpcChild, RpcReader)> {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; it asks the kernel to kill the child if we die first,
    // so a crashed server leaves no Codex behind.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let missing = |what| std::io::Error::other(format!("child {what} was not piped"));
    let stdin = child.stdin.take().ok_or_else(|| missing("stdin"))?;
    let stdout = child.stdout.take().ok_or_else(|| missing("stdout"))?;
    let stderr = child.stderr.take().ok_or_else(|| missing("stderr"))?;
    let shared = Arc::new(Shared {
        pending: Mutex::new(HashMap::new()),
        stderr_tail: Mutex::new(VecDeque::new()),
    });

    let tail = shared.clone();
    let (stderr_done, stderr_closed) = watch::channel(false);
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(target: "codex_stderr", "{line}");
            if let Ok(mut tail) = tail.stderr_tail.lock() {
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
        let _ = stderr_done.send(true);
    });

    let pid = child.id();
    let (exit_tx, exited) = watch::channel(None);
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(status) => describe_exit(status),
            Err(e) => format!("unknown exit status ({e})"),
        };
        let _ = exit_tx.send(Some(status));
    });

    Ok((
        RpcChild {
            pid,
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            next_id: AtomicI64::new(1),
            shared: shared.clone(),
            exited,
            stderr_closed,
        },
        RpcReader {
            lines: BufReader::new(stdout).lines(),
            shared,
        },
    ))
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "unknown exit status".to_owned(),
    }
}

impl RpcChild {
    pub(crate) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Sends a request and waits for its answer, at most `timeout`.
    pub(crate) async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending_insert(id, Pending::Call(tx));
        let sent = self
            .write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        if let Err(e) = sent {
            self.pending_remove(id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(RpcError::Closed),
            Err(_) => {
                self.pending_remove(id);
                Err(RpcError::Timeout {
                    method: method.to_owned(),
                    secs: timeout.as_secs(),
                })
            }
        }
    }

    /// Takes an id for [`send_routed`](Self::send_routed), so the caller can file it before the
    /// request goes out and the child can answer it.
    pub(crate) fn reserve_id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a request whose answer comes back through the reader as [`Incoming::Response`].
    pub(crate) async fn send_routed(
        &self,
        id: i64,
        method: &str,
        params: Value,
    ) -> Result<(), RpcError> {
        self.pending_insert(id, Pending::Routed);
        let sent = self
            .write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        if sent.is_err() {
            self.pending_remove(id);
        }
        sent
    }

    pub(crate) async fn notify(&self, method: &str, params: Value) -> Result<(), RpcError> {
        self.write(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await
    }

    pub(crate) async fn respond(&self, id: Value, result: Value) -> Result<(), RpcError> {
        self.write(&json!({"jsonrpc": "2.0", "id": id, "result": result}))
            .await
    }

    pub(crate) async fn respond_error(
        &self,
        id: Value,
        code: i64,
        message: &str,
    ) -> Result<(), RpcError> {
        self.write(
            &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
        )
        .await
    }

    async fn write(&self, message: &Value) -> Result<(), RpcError> {
        let mut line = message.to_string();
        line.push('\n');
        let mut stdin = self.stdin.lock().await;
        let Some(stdin) = stdin.as_mut() else {
            return Err(RpcError::Write("stdin was closed".into()));
        };
        let written = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        };
        written.await.map_err(|e| RpcError::Write(e.to_string()))
    }

    /// Closes the child's stdin: it reads end-of-file.
    pub(crate) async fn close_stdin(&self) {
        self.stdin.lock().await.take();
    }

    /// Asks the child and everything it started to stop (SIGTERM).
    pub(crate) fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Kills the child and everything it started.
    pub(crate) fn kill(&self) {
        self.signal(libc::SIGKILL);
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.pid.and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: plain syscall; the group id is the child's pid (see `spawn`).
            unsafe {
                libc::killpg(pid, signal);
            }
        }
    }

    /// Waits for the child to exit, killing it if it has not within `grace`, and says how it ended.
    pub(crate) async fn exit_info(&self, grace: Duration) -> ExitInfo {
        let mut exited = self.exited.clone();
        let waited = tokio::time::timeout(grace, exited.wait_for(Option::is_some))
            .await
            .is_ok();
        if !waited {
            self.kill();
        }
        let status = exited
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|s| s.clone())
            .unwrap_or_else(|| "unknown exit status".to_owned());
        // The last lines may still be in the pipe; something the child started can hold it open,
        // so wait for them only briefly.
        let mut stderr_closed = self.stderr_closed.clone();
        let _ = tokio::time::timeout(grace, stderr_closed.wait_for(|closed| *closed)).await;
        let stderr_tail = self
            .shared
            .stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        ExitInfo {
            status,
            stderr_tail,
        }
    }

    /// True once the child process has exited.
    pub(crate) fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    fn pending_insert(&self, id: i64, pending: Pending) {
        if let Ok(mut table) = self.shared.pending.lock() {
            table.insert(id, pending);
        }
    }

    fn pending_remove(&self, id: i64) {
        if let Ok(mut table) = self.shared.pending.lock() {
            table.remove(&id);
        }
    }
}

impl RpcReader {
    /// The next line of stdout, or `None` once the child closed it. At that point every call
    /// still waiting is answered with [`RpcError::Closed`].
    pub(crate) async fn next_line(&mut self) -> Option<Line> {
        loop {
            let line = match self.lines.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) | Err(_) => {
                    self.fail_pending();
                    return None;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            return Some(match serde_json::from_str::<Value>(&line) {
                Ok(Value::Object(object)) => Line::Json(object),
                _ => Line::Garbage(line),
            });
        }
    }

    /// The next message to handle, or `None` once the child closed its stdout.
    pub(crate) async fn next(&mut self) -> Option<Incoming> {
        loop {
            let mut message = match self.next_line().await? {
                Line::Json(message) => message,
                Line::Garbage(line) => return Some(Incoming::Garbage(line)),
            };
            let method = message
                .get("method")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let params = message.remove("params").unwrap_or(Value::Null);
            match (method, message.remove("id")) {
                (Some(method), Some(id)) => return Some(Incoming::Request { id, method, params }),
                (Some(method), None) => return Some(Incoming::Notification { method, params }),
                (None, Some(id)) => {
                    let outcome = match message.remove("error") {
                        Some(error) => Err(RpcError::Remote {
                            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                            message: error
                                .get("message")
                                .and_then(Value::as_str)
                                .unwrap_or("no message")
                                .to_owned(),
                        }),
                        None => Ok(message.remove("result").unwrap_or(Value::Null)),
                    };
                    let Some(id) = id.as_i64() else {
                        return Some(Incoming::Garbage(format!("an answer with id {id}")));
                    };
                    let pending = self
                        .shared
                        .pending
                        .lock()
                        .ok()
                        .and_then(|mut t| t.remove(&id));
                    match pending {
                        Some(Pending::Call(tx)) => {
                            let _ = tx.send(outcome);
                        }
                        // An answer nobody waits for (a cancelled request, say) still goes to
                        // the driver: Codex answers a cancelled call's successor under its id.
                        Some(Pending::Routed) | None => {
                            return Some(Incoming::Response { id, outcome });
                        }
                    }
                }
                (None, None) => {
                    return Some(Incoming::Garbage(Value::Object(message).to_string()));
                }
            }
        }
    }

    fn fail_pending(&self) {
        let drained: Vec<Pending> = match self.shared.pending.lock() {
            Ok(mut table) => table.drain().map(|(_, p)| p).collect(),
            Err(_) => Vec::new(),
        };
        for pending in drained {
            if let Pending::Call(tx) = pending {
                let _ = tx.send(Err(RpcError::Closed));
            }
        }
    }
}
