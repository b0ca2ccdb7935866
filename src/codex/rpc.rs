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
//!
//! Nothing here waits on the child without a bound: a write that does not complete within
//! [`WRITE_TIMEOUT`] (a child that stopped reading its stdin) kills the child, which ends its
//! turns with that reason. A line is at most [`MAX_LINE`] bytes; a longer one, or one that is not
//! UTF-8, is skipped with a warning rather than ending the reader.

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::{oneshot, watch};

use super::gulps::Gulps;
use crate::lines::{BoundedLines, RawLine};

/// Reads `stream` line by line, a line at most `max` bytes.
fn bounded<S: AsyncRead + Unpin>(stream: S, max: usize) -> BoundedLines<BufReader<S>> {
    BoundedLines::new(BufReader::new(stream), max)
}

/// How many stderr lines of a child to keep for the reason when it dies.
const STDERR_TAIL_LINES: usize = 20;
/// The longest stderr line kept in the tail.
const STDERR_LINE: usize = 2000;
/// The longest line read from a child's stdout; Codex's messages stay far below it.
pub(crate) const MAX_LINE: usize = 32 * 1024 * 1024;
/// The buffer Codex's stdout is read into: a gulp of a stream (see [`Gulps`]) fits in one read.
const STDOUT_BUFFER: usize = 64 * 1024;
/// How long one write to a child's stdin may take before the child is taken for stuck.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error, Clone)]
pub(crate) enum RpcError {
    /// The child exited (or closed its stdout) before answering.
    #[error("the Codex process exited")]
    Closed,
    /// The message could not be written to the child's stdin.
    #[error("writing to the Codex process failed: {0}")]
    Write(String),
    /// No answer within the caller's bound.
    #[error("Codex did not answer `{method}` within {secs} s")]
    Timeout { method: String, secs: u64 },
    /// The child answered with a JSON-RPC error.
    #[error("Codex answered with error {code}: {message}")]
    Remote { code: i64, message: String },
}

/// Logs a line of a child's stdout that is not what its protocol sends, shortened.
pub(crate) fn ignore_garbage(child: &str, line: &str) {
    let shown: String = line.chars().take(200).collect();
    tracing::warn!(line = %shown, "{child} wrote a line that is not JSON-RPC; ignored");
}

/// One line of the child's stdout.
#[derive(Debug)]
pub(crate) enum Line {
    Json(serde_json::Map<String, Value>),
    /// A line that is not a JSON object.
    Garbage(String),
}

/// A notification's params as the child wrote them, read by the handler that knows what they
/// hold: Codex streams a turn a few characters per notification, and a typed read of those costs
/// a fraction of building a [`Value`].
#[derive(Debug)]
pub(crate) struct Params(Option<Box<RawValue>>);

impl Params {
    /// The params' JSON; `null` when there were none.
    pub(crate) fn json(&self) -> &str {
        self.0.as_deref().map_or("null", RawValue::get)
    }

    pub(crate) fn value(&self) -> Value {
        serde_json::from_str(self.json()).unwrap_or(Value::Null)
    }
}

/// A JSON-RPC message as read. `id` and `error` count as present when they are `null`.
#[derive(Deserialize)]
struct Envelope {
    method: Option<String>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    params: Option<Box<RawValue>>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    error: Option<Value>,
}

/// A field that is there, even as `null`.
fn present<'de, D: Deserializer<'de>>(field: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(field).map(Some)
}

/// A message from the child that the driving task must handle.
#[derive(Debug)]
pub(crate) enum Incoming {
    Notification {
        method: String,
        params: Params,
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

/// A call waiting for its answer.
type Pending = oneshot::Sender<Result<Value, RpcError>>;

/// How a child ended, for the reason given to the jobs it was running.
#[derive(Clone, Debug)]
pub(crate) struct ExitInfo {
    /// How it exited, and why we killed it if we did.
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
    /// Why we killed the child, when we did so because it misbehaved.
    killed_because: Mutex<Option<String>>,
}

/// The receiving half; one task drives it.
pub(crate) struct RpcReader {
    lines: BoundedLines<BufReader<Gulps>>,
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
    let stdout = Gulps::new(
        child
            .stdout
            .take()
            .ok_or_else(|| missing("stdout"))?
            .into_owned_fd()?,
    )?;
    let stderr = child.stderr.take().ok_or_else(|| missing("stderr"))?;
    let shared = Arc::new(Shared {
        pending: Mutex::new(HashMap::new()),
        stderr_tail: Mutex::new(VecDeque::new()),
    });

    let tail = shared.clone();
    let (stderr_done, stderr_closed) = watch::channel(false);
    tokio::spawn(async move {
        let mut lines = bounded(stderr, STDERR_LINE);
        while let Some(line) = lines.next().await {
            let line = match line {
                RawLine::Bytes(line) => String::from_utf8_lossy(&line).into_owned(),
                RawLine::TooLong(length) => format!("[a line of {length} bytes]"),
            };
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
            killed_because: Mutex::new(None),
        },
        RpcReader {
            lines: BoundedLines::new(BufReader::with_capacity(STDOUT_BUFFER, stdout), MAX_LINE),
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
        self.pending_insert(id, tx);
        // However this call ends (an answer, a timeout, its caller giving up), its entry goes.
        let _forget = PendingGuard { child: self, id };
        self.write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(RpcError::Closed),
            Err(_) => Err(RpcError::Timeout {
                method: method.to_owned(),
                secs: timeout.as_secs(),
            }),
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
        self.write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
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

    /// Writes one line, waiting for the writers before it, within [`WRITE_TIMEOUT`] in all. A
    /// child that takes longer has stopped reading its stdin: it is killed, so that its reader
    /// ends its turns with the reason instead of every writer hanging.
    async fn write(&self, message: &Value) -> Result<(), RpcError> {
        let mut line = message.to_string();
        line.push('\n');
        let written = async {
            let mut stdin = self.stdin.lock().await;
            let Some(stdin) = stdin.as_mut() else {
                return Err(RpcError::Write("stdin was closed".into()));
            };
            let io = async {
                stdin.write_all(line.as_bytes()).await?;
                stdin.flush().await
            };
            io.await.map_err(|e| RpcError::Write(e.to_string()))
        };
        match tokio::time::timeout(WRITE_TIMEOUT, written).await {
            Ok(written) => written,
            Err(_) => {
                let why = format!(
                    "it stopped reading its input: a write did not complete within {} s",
                    WRITE_TIMEOUT.as_secs()
                );
                tracing::warn!(pid = ?self.pid, "killing codex: {why}");
                if let Ok(mut because) = self.killed_because.lock() {
                    because.get_or_insert(why.clone());
                }
                self.kill();
                Err(RpcError::Write(why))
            }
        }
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
        let because = self.killed_because.lock().ok().and_then(|b| b.clone());
        let status = match because {
            Some(why) => format!("{status}; it was killed because {why}"),
            None => status,
        };
        ExitInfo {
            status,
            stderr_tail,
        }
    }

    /// Waits until the child has exited.
    pub(crate) async fn wait_exit(&self) {
        let mut exited = self.exited.clone();
        let _ = exited.wait_for(Option::is_some).await;
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

/// Removes a call's entry from the pending table when the call ends, however it ends.
struct PendingGuard<'a> {
    child: &'a RpcChild,
    id: i64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.child.pending_remove(self.id);
    }
}

impl RpcReader {
    /// The next line of stdout that is not blank, or what to say of one that cannot be read;
    /// `None` once the child closed it. At that point every call still waiting is answered with
    /// [`RpcError::Closed`].
    async fn next_bytes(&mut self) -> Option<Result<Vec<u8>, String>> {
        loop {
            return match self.lines.next().await {
                Some(RawLine::Bytes(line)) if line.iter().all(u8::is_ascii_whitespace) => continue,
                Some(RawLine::Bytes(line)) => Some(Ok(line)),
                Some(RawLine::TooLong(length)) => Some(Err(format!(
                    "a line of {length} bytes, longer than the {MAX_LINE} read"
                ))),
                None => {
                    self.fail_pending();
                    None
                }
            };
        }
    }

    /// The next line of stdout, or `None` once the child closed it.
    pub(crate) async fn next_line(&mut self) -> Option<Line> {
        let line = match self.next_bytes().await? {
            Ok(line) => line,
            Err(unread) => return Some(Line::Garbage(unread)),
        };
        // Parsed from the bytes: serde_json checks UTF-8 as it goes, without a copy.
        Some(match serde_json::from_slice::<Value>(&line) {
            Ok(Value::Object(object)) => Line::Json(object),
            _ => Line::Garbage(String::from_utf8_lossy(&line).into_owned()),
        })
    }

    /// The next message to handle, or `None` once the child closed its stdout.
    pub(crate) async fn next(&mut self) -> Option<Incoming> {
        loop {
            let line = match self.next_bytes().await? {
                Ok(line) => line,
                Err(unread) => return Some(Incoming::Garbage(unread)),
            };
            let garbage = || Incoming::Garbage(String::from_utf8_lossy(&line).into_owned());
            // An object: serde would also take an array for the envelope, field by field.
            let object = line.trim_ascii_start().starts_with(b"{");
            let Some(message) = object
                .then(|| serde_json::from_slice::<Envelope>(&line).ok())
                .flatten()
            else {
                return Some(garbage());
            };
            let params = Params(message.params);
            match (message.method, message.id) {
                (Some(method), Some(id)) => {
                    let params = params.value();
                    return Some(Incoming::Request { id, method, params });
                }
                (Some(method), None) => return Some(Incoming::Notification { method, params }),
                (None, Some(id)) => {
                    let outcome = match message.error {
                        Some(error) => Err(RpcError::Remote {
                            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                            message: error
                                .get("message")
                                .and_then(Value::as_str)
                                .unwrap_or("no message")
                                .to_owned(),
                        }),
                        None => Ok(message.result.unwrap_or(Value::Null)),
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
                        Some(tx) => {
                            let _ = tx.send(outcome);
                        }
                        // Answers to routed requests, and answers nobody waits for (a cancelled
                        // request, say), go to the driver: Codex answers a cancelled call's
                        // successor under its id.
                        None => return Some(Incoming::Response { id, outcome }),
                    }
                }
                (None, None) => return Some(garbage()),
            }
        }
    }

    fn fail_pending(&self) {
        let drained: Vec<Pending> = match self.shared.pending.lock() {
            Ok(mut table) => table.drain().map(|(_, p)| p).collect(),
            Err(_) => Vec::new(),
        };
        for tx in drained {
            let _ = tx.send(Err(RpcError::Closed));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::fd::OwnedFd;

    use super::*;

    /// A reader of what a child wrote, `lines`, and then closed.
    fn reader_of(lines: &str) -> RpcReader {
        let (read_end, mut write_end) = std::io::pipe().expect("a pipe");
        write_end.write_all(lines.as_bytes()).expect("write");
        drop(write_end);
        let gulps = Gulps::new(OwnedFd::from(read_end)).expect("watch the pipe");
        RpcReader {
            lines: BoundedLines::new(BufReader::new(gulps), MAX_LINE),
            shared: Arc::new(Shared {
                pending: Mutex::new(HashMap::new()),
                stderr_tail: Mutex::new(VecDeque::new()),
            }),
        }
    }

    async fn read_all(lines: &str) -> Vec<Incoming> {
        let mut reader = reader_of(lines);
        let mut read = Vec::new();
        while let Some(message) = reader.next().await {
            read.push(message);
        }
        read
    }

    #[tokio::test]
    async fn a_notification_keeps_its_params_as_written_or_null_without_them() {
        let read =
            read_all("{\"method\":\"a\",\"params\":{\"delta\":\"hi\\n\"}}\n{\"method\":\"b\"}\n")
                .await;
        let jsons: Vec<_> = read
            .iter()
            .map(|message| match message {
                Incoming::Notification { method, params } => (method.as_str(), params.json()),
                other => panic!("not a notification: {other:?}"),
            })
            .collect();
        assert_eq!(jsons, [("a", "{\"delta\":\"hi\\n\"}"), ("b", "null")]);
    }

    #[tokio::test]
    async fn a_request_with_a_null_id_is_a_request_and_an_answer_with_a_null_error_an_error() {
        let read = read_all(concat!(
            "{\"id\":null,\"method\":\"ask\",\"params\":{\"q\":1}}\n",
            "{\"id\":7,\"error\":null}\n",
            "{\"id\":8,\"result\":null}\n",
        ))
        .await;
        assert!(
            matches!(&read[0], Incoming::Request { id: Value::Null, method, params }
            if method == "ask" && params == &json!({"q": 1}))
        );
        assert!(matches!(
            &read[1],
            Incoming::Response {
                id: 7,
                outcome: Err(RpcError::Remote { .. })
            }
        ));
        assert!(matches!(
            &read[2],
            Incoming::Response {
                id: 8,
                outcome: Ok(Value::Null)
            }
        ));
    }

    #[tokio::test]
    async fn a_line_that_is_not_a_json_rpc_object_is_garbage_and_blank_lines_are_skipped() {
        let read =
            read_all("[\"ask\", 1, null]\n\n  \n\"text\"\n{\"x\":1}\n{\"method\":5}\nnot json\n")
                .await;
        let garbage: Vec<_> = read
            .iter()
            .map(|message| match message {
                Incoming::Garbage(line) => line.as_str(),
                other => panic!("not garbage: {other:?}"),
            })
            .collect();
        assert_eq!(
            garbage,
            [
                "[\"ask\", 1, null]",
                "\"text\"",
                "{\"x\":1}",
                "{\"method\":5}",
                "not json"
            ]
        );
    }
}
