//! MCP over stdin and stdout, one JSON-RPC message per line, in front of rmcp's service.
//!
//! Our own rather than rmcp's `stdio()` for three reasons:
//! - a line that cannot be decoded gets a JSON-RPC error ([`super::jsonrpc`]) instead of silence;
//! - a line is at most [`MAX_MESSAGE`] bytes, and a longer one is answered too;
//! - one task writes stdout, a whole line at a time, and is awaited before the server exits, so a
//!   client never reads half an answer (an answer is written whole, or not at all).

use std::time::Duration;

use futures::SinkExt as _;
use rmcp::ServiceExt as _;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::jsonrpc::{self, Decoded};
use super::{JobServer, ServerSettings};
use crate::jobs::JobManager;
use crate::lines::{BoundedLines, RawLine};

/// The longest message read from stdin (as rmcp's own stdio transport).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Lines waiting for stdout.
const OUTBOX: usize = 64;
/// How long the answers already queued get to reach stdout when the server stops.
const FLUSH_PATIENCE: Duration = Duration::from_secs(2);

/// Serves the tools on stdin/stdout until the client closes stdin or `shutdown` is cancelled,
/// then finishes writing what was queued for stdout. `answered` is cancelled once the first line
/// has reached stdout.
pub(crate) async fn serve_stdio(
    manager: JobManager,
    settings: ServerSettings,
    shutdown: CancellationToken,
    answered: CancellationToken,
) -> anyhow::Result<()> {
    let (lines_out, lines) = mpsc::channel::<String>(OUTBOX);
    let writer = tokio::spawn(write_lines(stdout(), lines, answered));
    let (to_service, from_client) = futures::channel::mpsc::channel::<ClientJsonRpcMessage>(OUTBOX);
    let reader = tokio::spawn(read_lines(
        BufReader::new(stdin()),
        to_service,
        lines_out.clone(),
    ));
    let to_client = Box::pin(futures::sink::unfold(
        lines_out,
        |lines_out, message: ServerJsonRpcMessage| async move {
            let line = serde_json::to_string(&message).map_err(std::io::Error::other)?;
            lines_out
                .send(line)
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
            Ok::<_, std::io::Error>(lines_out)
        },
    ));
    let served = async {
        let running = JobServer::new(manager, settings)
            .serve((to_client, from_client))
            .await?;
        let ended = tokio::select! {
            ended = running.waiting() => ended.map(drop),
            () = shutdown.cancelled() => Ok(()),
        };
        anyhow::Ok(ended?)
    };
    let served = served.await;
    // The service is gone, and with it its sender; the reader holds the last one.
    reader.abort();
    match tokio::time::timeout(FLUSH_PATIENCE, writer).await {
        Ok(_) => {}
        Err(_) => tracing::warn!("the client did not read our last answers; stopping anyway"),
    }
    served
}

/// stdout as the runtime's own non-blocking pipe when it is one (as an MCP client starts us), else
/// tokio's stdout. tokio's stdout hands every write to a thread of its blocking pool and waits
/// for it: two thread wake-ups an answer.
fn stdout() -> Box<dyn AsyncWrite + Send + Unpin> {
    match as_pipe(
        std::io::stdout(),
        tokio::net::unix::pipe::Sender::from_owned_fd,
    ) {
        Some(pipe) => Box::new(pipe),
        None => Box::new(tokio::io::stdout()),
    }
}

/// stdin as the runtime's own non-blocking pipe when it is one, else tokio's stdin (which reads
/// on a thread of its blocking pool).
fn stdin() -> Box<dyn tokio::io::AsyncRead + Send + Unpin> {
    match as_pipe(
        std::io::stdin(),
        tokio::net::unix::pipe::Receiver::from_owned_fd,
    ) {
        Some(pipe) => Box::new(pipe),
        None => Box::new(tokio::io::stdin()),
    }
}

/// A copy of `stream`'s descriptor made a pipe end of the runtime's, if it is a pipe.
fn as_pipe<T>(
    stream: impl std::os::fd::AsFd,
    pipe: impl FnOnce(std::os::fd::OwnedFd) -> std::io::Result<T>,
) -> Option<T> {
    let fd = stream.as_fd().try_clone_to_owned().ok()?;
    pipe(fd).ok()
}

/// Reads stdin line by line: messages go to the service, undecodable ones are answered.
async fn read_lines<R: tokio::io::AsyncBufRead + Unpin>(
    input: R,
    mut to_service: futures::channel::mpsc::Sender<ClientJsonRpcMessage>,
    to_client: mpsc::Sender<String>,
) {
    let mut lines = BoundedLines::new(input, MAX_MESSAGE);
    while let Some(line) = lines.next().await {
        let answer: Option<Value> = match line {
            RawLine::TooLong(length) => Some(jsonrpc::too_large(length, MAX_MESSAGE)),
            RawLine::Bytes(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => None,
            RawLine::Bytes(bytes) => match jsonrpc::decode(&bytes) {
                Decoded::Message(message) => {
                    if to_service.send(*message).await.is_err() {
                        break;
                    }
                    None
                }
                Decoded::Refused(answer) => Some(answer),
                Decoded::Ignored => None,
            },
        };
        if let Some(answer) = answer
            && to_client.send(answer.to_string()).await.is_err()
        {
            break;
        }
    }
    tracing::debug!("stdin closed");
}

/// Writes each line whole, then flushes: ends when every sender is gone and the queue is empty.
async fn write_lines<W: AsyncWrite + Unpin>(
    mut out: W,
    mut lines: mpsc::Receiver<String>,
    answered: CancellationToken,
) {
    while let Some(mut line) = lines.recv().await {
        line.push('\n');
        let written = async {
            out.write_all(line.as_bytes()).await?;
            out.flush().await
        };
        if let Err(e) = written.await {
            tracing::debug!(error = %e, "stdout closed");
            break;
        }
        answered.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_undecodable_line_is_answered_and_the_next_message_still_served() {
        let input: &[u8] = b"not json\n\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}\n";
        let (to_service, mut service) = futures::channel::mpsc::channel(4);
        let (to_client, mut client) = mpsc::channel(4);
        read_lines(input, to_service, to_client).await;
        let answer: Value = serde_json::from_str(&client.recv().await.unwrap()).unwrap();
        assert_eq!(answer["error"]["code"], -32700);
        assert!(
            client.recv().await.is_none(),
            "one answer, for the one bad line"
        );
        let message = futures::StreamExt::next(&mut service).await.unwrap();
        assert_eq!(serde_json::to_value(message).unwrap()["id"], 2);
    }
}
