//! The operator's line to a running server: a Unix socket in the state directory, for the
//! `jobs` commands that must act through the engine that owns the jobs (a cancel stops a turn in
//! Codex; a prune must not delete jobs behind the engine's back). The directory is the user's
//! alone (0700), and so is the socket.
//!
//! One JSON line asks (`{"cancel": "JOB_ID"}` or `{"prune_older_than_seconds": N}`), one JSON
//! line answers (`{"ok": …}` or `{"error": "what went wrong and what to do"}`). Both ends are
//! here: `listen` for the server, `ask` for the commands.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::jobs::JobManager;

/// The socket's name in the state directory.
pub const SOCKET: &str = "control.sock";

/// The longest request line read.
const MAX_LINE: u64 = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ask {
    cancel: Option<String>,
    prune_older_than_seconds: Option<u64>,
}

/// Listens on `dir`'s socket until `shutdown`. The caller holds the state directory's lock, so a
/// socket file left there is a dead server's and is replaced.
pub fn listen(
    dir: &Path,
    manager: JobManager,
    shutdown: CancellationToken,
) -> anyhow::Result<PathBuf> {
    let path = dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| {
        anyhow::anyhow!(
            "could not listen on {} ({e}); pass another --state-dir",
            path.display()
        )
    })?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.cancelled() => break,
            };
            let Ok((stream, _)) = accepted else { continue };
            let manager = manager.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_LINE));
                let answer = match reader.read_line(&mut line).await {
                    Ok(_) => answer(&manager, &line).await,
                    Err(e) => json!({"error": format!("could not read the request ({e})")}),
                };
                let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
            });
        }
    });
    Ok(path)
}

async fn answer(manager: &JobManager, line: &str) -> Value {
    let ask: Ask = match serde_json::from_str(line) {
        Ok(ask) => ask,
        Err(e) => {
            return json!({"error": format!(
                "not a request this server takes ({e}); send {{\"cancel\": \"JOB_ID\"}} or \
                 {{\"prune_older_than_seconds\": N}}"
            )});
        }
    };
    match (ask.cancel, ask.prune_older_than_seconds) {
        (Some(job), None) => match manager.cancel(&job).await {
            Ok(job) => json!({"ok": job}),
            Err(e) => json!({"error": e.to_string()}),
        },
        (None, Some(seconds)) => {
            let cutoff = SystemTime::now()
                .checked_sub(Duration::from_secs(seconds))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            match manager.purge_updated_before(cutoff).await {
                Ok(deleted) => json!({"ok": {"deleted": deleted}}),
                Err(e) => json!({"error": e.to_string()}),
            }
        }
        _ => json!({"error": "ask for one thing: cancel or prune_older_than_seconds"}),
    }
}

/// Asks the server running on `dir` (the client's end, for the `jobs` commands); its `ok`
/// answer, or its error.
pub fn ask(dir: &Path, request: &Value) -> anyhow::Result<Value> {
    use std::io::{BufRead as _, Write as _};
    let path = dir.join(SOCKET);
    let fail = |e: std::io::Error| {
        anyhow::anyhow!(
            "could not reach the server through {} ({e})",
            path.display()
        )
    };
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(fail)?;
    // A cancel waits for Codex's word, within the server's cancel grace.
    stream
        .set_read_timeout(Some(Duration::from_secs(600)))
        .map_err(fail)?;
    writeln!(stream, "{request}").map_err(fail)?;
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .map_err(fail)?;
    let answer: Value = serde_json::from_str(&line)
        .map_err(|e| anyhow::anyhow!("the server answered what is not JSON ({e}): {line}"))?;
    match answer.get("error").and_then(Value::as_str) {
        Some(error) => anyhow::bail!("{error}"),
        None => Ok(answer["ok"].clone()),
    }
}
