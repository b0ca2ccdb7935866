//! Reading a Codex child's stdout with few wake-ups while it streams.
//!
//! Codex writes every streamed piece of a message with a write of its own, 20,000 and more in a
//! turn, and each write to a pipe the runtime watches wakes a worker thread, whether or not a task
//! is ready to read. Measured on a real 20,000-delta turn, those wake-ups and the thread switches
//! behind them took a third of this server's CPU time, and that time is taken from Codex on the
//! same cores.
//!
//! So [`Gulps`] watches the pipe only while Codex is quiet. After [`STREAK`] quick, small reads
//! in a row it stops watching and reads every [`REST`] instead, taking whatever gathered in one
//! read; the first read that finds the pipe empty watches it again. A message after a pause is
//! read the moment it is written, as before; one that comes while Codex streams (the end of the
//! streaming turn, or any message of another job's) is read at most [`REST`] late, plus the
//! timer's millisecond. A read of [`SMALL`] or more is never followed by a rest, so a child
//! that writes big messages fast is read as fast as it writes.

use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::unix::pipe;
use tokio::time::{Instant, Sleep};

/// How long the pipe rests between two reads while the child streams: at most what the
/// engine already waits to gather streamed pieces (`jobs::reports`). Measured with the real
/// Codex, 2 ms saved 5 % more CPU than 1 ms, but made every other job's messages wait twice as
/// long behind a stream: in the benchmark, where 200 short jobs run beside it, 2.9 ms from
/// `job_start` to a completion seen instead of 1.8.
pub(crate) const REST: Duration = Duration::from_millis(1);
/// Reads closer together than this are quick.
const QUICK: Duration = Duration::from_millis(1);
/// How many quick, small reads in a row make a stream. Far more than the handful of messages
/// Codex writes at once when a turn ends (the last item, the token counts, the end), so a turn
/// that ends after quiet is read as it comes.
const STREAK: u32 = 32;
/// A read this big or bigger is not small: more is likely waiting, so the next read comes at
/// once. Half a pipe's default capacity: a writer fast enough to fill the pipe during rests is
/// read without them.
const SMALL: usize = 32 * 1024;

/// A child's stdout, read as its own pace asks: see the module docs.
pub(crate) struct Gulps {
    pipe: Pipe,
    /// When the last read returned bytes.
    last_read: Option<Instant>,
    /// Quick, small reads in a row, while watched.
    streak: u32,
}

enum Pipe {
    /// Registered with the runtime: a write wakes the reading task.
    Watched(pipe::Receiver),
    /// Not registered: read when `next_read` has passed (at once without one).
    Resting {
        file: File,
        next_read: Option<Pin<Box<Sleep>>>,
    },
    /// Lost while turning one state into the other; every read fails with why.
    Broken(String),
}

impl Gulps {
    /// The read end of a pipe, watched. Must be called within the runtime.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            pipe: Pipe::Watched(pipe::Receiver::from_owned_fd(fd)?),
            last_read: None,
            streak: 0,
        })
    }

    /// Notes a read of `read` bytes into `room`, and rests or watches as it says.
    fn after_read(&mut self, read: usize, room: usize) {
        let now = Instant::now();
        let small = read < SMALL.min(room);
        let quick = self.last_read.is_some_and(|at| now - at < QUICK);
        if read > 0 {
            self.last_read = Some(now);
        }
        match &mut self.pipe {
            Pipe::Watched(_) => {
                self.streak = if read > 0 && small && quick {
                    self.streak + 1
                } else {
                    0
                };
                if self.streak >= STREAK {
                    self.streak = 0;
                    self.rest(now);
                }
            }
            Pipe::Resting { next_read, .. } => {
                *next_read =
                    (read > 0 && small).then(|| Box::pin(tokio::time::sleep_until(now + REST)));
            }
            Pipe::Broken(..) => {}
        }
    }

    /// Stops watching the pipe; the next read comes after [`REST`].
    fn rest(&mut self, now: Instant) {
        let Pipe::Watched(receiver) = self.take() else {
            return;
        };
        self.pipe = match receiver.into_nonblocking_fd() {
            Ok(fd) => Pipe::Resting {
                file: File::from(fd),
                next_read: Some(Box::pin(tokio::time::sleep_until(now + REST))),
            },
            Err(e) => broken("stop watching", &e),
        };
    }

    /// The pipe, to turn it into its other state; put back right after.
    fn take(&mut self) -> Pipe {
        std::mem::replace(&mut self.pipe, Pipe::Broken(String::new()))
    }

    /// Watches the pipe again: the child went quiet.
    fn watch(&mut self) {
        let Pipe::Resting { file, .. } = self.take() else {
            return;
        };
        self.pipe = match pipe::Receiver::from_file_unchecked(file) {
            Ok(receiver) => Pipe::Watched(receiver),
            Err(e) => broken("watch", &e),
        };
    }
}

fn broken(doing: &str, e: &io::Error) -> Pipe {
    Pipe::Broken(format!("could not {doing} the child's stdout: {e}"))
}

impl AsyncRead for Gulps {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let room = buf.remaining();
        loop {
            match &mut this.pipe {
                Pipe::Watched(receiver) => {
                    let before = buf.filled().len();
                    ready!(Pin::new(receiver).poll_read(cx, buf))?;
                    let read = buf.filled().len() - before;
                    this.after_read(read, room);
                    return Poll::Ready(Ok(()));
                }
                Pipe::Resting { file, next_read } => {
                    if let Some(sleep) = next_read {
                        ready!(sleep.as_mut().poll(cx));
                    }
                    match (&*file).read(buf.initialize_unfilled()) {
                        Ok(read) => {
                            buf.advance(read);
                            this.after_read(read, room);
                            return Poll::Ready(Ok(()));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.watch(),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Pipe::Broken(why) => return Poll::Ready(Err(io::Error::other(why.clone()))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use tokio::io::AsyncReadExt as _;

    use super::*;

    /// A pipe whose read end is read by `Gulps`; the write end stands for Codex.
    fn piped() -> (Gulps, std::io::PipeWriter) {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        (
            Gulps::new(OwnedFd::from(reader)).expect("watch the pipe"),
            writer,
        )
    }

    async fn read_some(gulps: &mut Gulps) -> String {
        let mut buf = vec![0; 64 * 1024];
        let read = gulps.read(&mut buf).await.expect("read");
        String::from_utf8_lossy(&buf[..read]).into_owned()
    }

    /// Writes lines one at a time, each read as it comes, until the reader takes them for a
    /// stream: the first read after quiet is not quick, the [`STREAK`] after it are.
    async fn stream(gulps: &mut Gulps, writer: &mut std::io::PipeWriter) {
        for i in 0..=STREAK {
            writeln!(writer, "piece {i}").expect("write");
            assert_eq!(read_some(gulps).await, format!("piece {i}\n"));
        }
    }

    // The clock is paused: it moves only when the runtime has nothing to do but wait for a
    // timer, so a read that waits for the pipe leaves it where it was, and one that rests moves
    // it by the rest.

    #[tokio::test(start_paused = true)]
    async fn a_message_after_quiet_is_read_the_moment_it_is_written() {
        let (mut gulps, mut writer) = piped();
        writeln!(writer, "hello").expect("write");
        let began = Instant::now();
        assert_eq!(read_some(&mut gulps).await, "hello\n");
        assert_eq!(began.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_messages_shorter_than_a_stream_is_read_as_it_comes() {
        let (mut gulps, mut writer) = piped();
        let began = Instant::now();
        for i in 0..STREAK {
            writeln!(writer, "message {i}").expect("write");
            assert_eq!(read_some(&mut gulps).await, format!("message {i}\n"));
        }
        assert_eq!(began.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn while_the_child_streams_what_it_writes_is_read_in_one_gulp_after_a_rest() {
        let (mut gulps, mut writer) = piped();
        stream(&mut gulps, &mut writer).await;
        for i in 0..10 {
            writeln!(writer, "more {i}").expect("write");
        }
        let began = Instant::now();
        let gulp = read_some(&mut gulps).await;
        assert_eq!(gulp.lines().count(), 10, "{gulp}");
        assert!(began.elapsed() >= REST, "read after {:?}", began.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn once_the_stream_pauses_the_next_message_is_read_at_once_again() {
        let (mut gulps, mut writer) = piped();
        stream(&mut gulps, &mut writer).await;
        // The rest ends on an empty pipe, and the pipe is watched again.
        let reading = tokio::spawn(async move {
            let text = read_some(&mut gulps).await;
            (text, Instant::now())
        });
        tokio::time::sleep(REST * 2).await;
        let written = Instant::now();
        writeln!(writer, "the end").expect("write");
        let (text, read_at) = reading.await.expect("the reader");
        assert_eq!(text, "the end\n");
        assert_eq!(read_at, written);
    }

    #[tokio::test(start_paused = true)]
    async fn a_big_read_is_followed_by_the_next_read_at_once() {
        let (mut gulps, mut writer) = piped();
        stream(&mut gulps, &mut writer).await;
        let big = format!("{}\n", "x".repeat(SMALL));
        writer.write_all(big.as_bytes()).expect("write");
        assert_eq!(read_some(&mut gulps).await.len(), big.len());
        let began = Instant::now();
        writeln!(writer, "next").expect("write");
        assert_eq!(read_some(&mut gulps).await, "next\n");
        assert_eq!(began.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_of_the_stream_is_read_as_the_end() {
        let (mut gulps, mut writer) = piped();
        stream(&mut gulps, &mut writer).await;
        drop(writer);
        assert_eq!(read_some(&mut gulps).await, "");
        assert_eq!(read_some(&mut gulps).await, "");
    }
}
