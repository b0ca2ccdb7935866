//! Reading a stream line by line without ever buffering more than a bound, for the streams we
//! do not control: Codex's stdout and stderr, and a client's stdin.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One line of a stream, as read by [`BoundedLines`].
pub(crate) enum RawLine {
    /// The line's bytes, without its newline (and a `\r` before it).
    Bytes(Vec<u8>),
    /// A line longer than the bound, skipped; its length in bytes.
    TooLong(usize),
}

/// Reads lines of at most `max` bytes: a longer line is skipped as it arrives, and reported by
/// its length, so a peer that never sends a newline cannot grow our memory.
pub(crate) struct BoundedLines<R> {
    reader: R,
    line: Vec<u8>,
    max: usize,
    /// The length so far of a line that is being skipped.
    skipping: Option<usize>,
}

impl<R: AsyncBufRead + Unpin> BoundedLines<R> {
    pub(crate) fn new(reader: R, max: usize) -> Self {
        Self {
            reader,
            line: Vec::new(),
            max,
            skipping: None,
        }
    }

    /// The next line, or `None` at the end of the stream (or on a read error, which is logged).
    ///
    /// Cancel-safe: a partial line stays buffered for the next call.
    pub(crate) async fn next(&mut self) -> Option<RawLine> {
        loop {
            let (used, ended) = {
                let available = match self.reader.fill_buf().await {
                    Ok(available) => available,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading a stream failed");
                        return None;
                    }
                };
                if available.is_empty() {
                    let rest = std::mem::take(&mut self.line);
                    return match self.skipping.take() {
                        Some(length) => Some(RawLine::TooLong(length)),
                        None if rest.is_empty() => None,
                        None => Some(RawLine::Bytes(rest)),
                    };
                }
                let newline = available.iter().position(|b| *b == b'\n');
                let take = newline.map_or(available.len(), |i| i + 1);
                let piece = &available[..newline.unwrap_or(take)];
                match &mut self.skipping {
                    Some(length) => *length += piece.len(),
                    None if self.line.len() + piece.len() > self.max => {
                        self.skipping = Some(self.line.len() + piece.len());
                        self.line.clear();
                    }
                    None => self.line.extend_from_slice(piece),
                }
                (take, newline.is_some())
            };
            self.reader.consume(used);
            if !ended {
                continue;
            }
            if let Some(length) = self.skipping.take() {
                return Some(RawLine::TooLong(length));
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Some(RawLine::Bytes(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8], max: usize) -> Vec<String> {
        let mut lines = BoundedLines::new(input, max);
        let mut found = Vec::new();
        while let Some(line) = lines.next().await {
            found.push(match line {
                RawLine::Bytes(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                RawLine::TooLong(length) => format!("<{length} bytes>"),
            });
        }
        found
    }

    #[tokio::test]
    async fn a_line_over_the_bound_is_skipped_and_the_next_one_read() {
        let found = read_all(b"short\nthis one is far too long\nok\r\nlast", 10).await;
        assert_eq!(found, ["short", "<24 bytes>", "ok", "last"]);
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf8_do_not_end_the_stream() {
        let found = read_all(b"\xff\xfe\nafter\n", 100).await;
        assert_eq!(found.len(), 2);
        assert_eq!(found[1], "after");
    }
}
