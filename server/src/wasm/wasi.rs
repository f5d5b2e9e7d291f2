//! WASI 0.2 for guests, with no capability: what a guest written with its language's standard
//! library needs to start and run (guest-sdk/README.md has the table).
//!
//! Each batch's store gets a fresh context: no preopened directory, no environment variable, no
//! argument, no socket or name lookup, no stdin. File and environment calls answer with errors,
//! not traps. Random numbers and the clocks work (the clocks at millisecond resolution, so a
//! guest can't time its neighbours). Stdout and stderr are captured line by line into the
//! pipeline's guest log, within the batch's line budget, and never reach the server's output.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

use crate::guest_log::{GuestLog, LINE_BYTES, Level};

/// Bytes a guest may hand over per write (what `check-write` grants).
const WRITE_PERMIT: usize = 64 << 10;
/// The clocks' resolution.
const RESOLUTION: Duration = Duration::from_millis(1);

/// One batch's output toward the guest log: the line budget shared by `log` calls and both
/// streams, and the stream's unfinished lines.
#[derive(Debug)]
pub struct BatchLog {
    log: Arc<GuestLog>,
    stage: &'static str,
    /// Lines each call may write.
    lines: u32,
    state: Mutex<BatchState>,
}

#[derive(Debug)]
struct BatchState {
    lines_left: u32,
    dropped: u64,
    /// Unfinished lines of stdout and stderr (at most [`LINE_BYTES`] each).
    partial: [Vec<u8>; 2],
    /// A line past [`LINE_BYTES`] is cut: the rest of it is skipped up to its end.
    skipping: [bool; 2],
}

impl BatchLog {
    /// A batch of `stage` that may write `lines` lines to `log`.
    pub fn new(log: Arc<GuestLog>, stage: &'static str, lines: u32) -> Arc<BatchLog> {
        Arc::new(BatchLog {
            log,
            stage,
            lines,
            state: Mutex::new(BatchState {
                lines_left: lines,
                dropped: 0,
                partial: [Vec::new(), Vec::new()],
                skipping: [false, false],
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A line from the guest (its `log` import, or a stream).
    pub fn line(&self, level: Level, text: &str) {
        let mut state = self.lock();
        Self::take(&mut state, &self.log, self.stage, level, text);
    }

    fn take(state: &mut BatchState, log: &GuestLog, stage: &'static str, level: Level, text: &str) {
        if state.lines_left == 0 {
            state.dropped += 1;
            return;
        }
        state.lines_left -= 1;
        log.push(stage, level, text);
    }

    /// Bytes written to stdout (`stream` 0) or stderr (1).
    fn write(&self, stream: usize, mut bytes: &[u8]) {
        let level = if stream == 0 {
            Level::Info
        } else {
            Level::Warn
        };
        let mut state = self.lock();
        while !bytes.is_empty() {
            let end = bytes.iter().position(|b| *b == b'\n');
            let (chunk, rest) = match end {
                Some(i) => (&bytes[..i], &bytes[i + 1..]),
                None => (bytes, &[][..]),
            };
            if !state.skipping[stream] {
                let room = LINE_BYTES.saturating_sub(state.partial[stream].len());
                state.partial[stream].extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            let full = state.partial[stream].len() >= LINE_BYTES;
            if end.is_some() || full {
                if !state.skipping[stream] {
                    let line = std::mem::take(&mut state.partial[stream]);
                    let text = String::from_utf8_lossy(&line);
                    Self::take(&mut state, &self.log, self.stage, level, &text);
                }
                // A line cut at LINE_BYTES: skip the rest of it.
                state.skipping[stream] = end.is_none();
            }
            bytes = rest;
        }
    }

    /// After the call: the unfinished lines are written, what was over the budget counted, and
    /// the budget given back for the instance's next call.
    pub fn finish(&self) -> u64 {
        let mut state = self.lock();
        for stream in 0..2 {
            let line = std::mem::take(&mut state.partial[stream]);
            if !line.is_empty() {
                let level = if stream == 0 {
                    Level::Info
                } else {
                    Level::Warn
                };
                let text = String::from_utf8_lossy(&line);
                Self::take(&mut state, &self.log, self.stage, level, &text);
            }
        }
        state.lines_left = self.lines;
        state.skipping = [false, false];
        let dropped = std::mem::take(&mut state.dropped);
        if dropped > 0 {
            self.log.count_dropped(dropped);
        }
        dropped
    }
}

/// A guest's stdout or stderr.
#[derive(Debug, Clone)]
struct LogStream {
    batch: Arc<BatchLog>,
    stream: usize,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.batch.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl AsyncWrite for LogStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.batch.write(self.stream, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The wall clock, to the millisecond.
struct CoarseWallClock;

impl HostWallClock for CoarseWallClock {
    fn resolution(&self) -> Duration {
        RESOLUTION
    }

    fn now(&self) -> Duration {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Duration::from_millis(now.as_millis() as u64)
    }
}

/// A monotonic clock, to the millisecond, from the batch's start.
struct CoarseMonotonicClock(std::time::Instant);

impl HostMonotonicClock for CoarseMonotonicClock {
    fn resolution(&self) -> u64 {
        RESOLUTION.as_nanos() as u64
    }

    fn now(&self) -> u64 {
        let ms = self.0.elapsed().as_millis() as u64;
        ms * RESOLUTION.as_nanos() as u64
    }
}

/// A batch's WASI context: nothing granted, output to `batch`.
pub fn context(batch: &Arc<BatchLog>) -> WasiCtx {
    WasiCtxBuilder::new()
        .stdout(LogStream {
            batch: batch.clone(),
            stream: 0,
        })
        .stderr(LogStream {
            batch: batch.clone(),
            stream: 1,
        })
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .wall_clock(CoarseWallClock)
        .monotonic_clock(CoarseMonotonicClock(std::time::Instant::now()))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_lines_are_split_cut_and_budgeted() {
        let log = Arc::new(GuestLog::new());
        let batch = BatchLog::new(log.clone(), "transform", 4);
        batch.write(0, b"hello ");
        batch.write(0, b"world\nsecond");
        batch.write(1, format!("{}\nafter\n", "x".repeat(3000)).as_bytes());
        batch.line(Level::Error, "from log()");
        batch.write(0, b"\nover the budget\n");
        assert_eq!(batch.finish(), 2);
        let (lines, dropped) = log.since(0);
        let texts: Vec<(&str, Level)> = lines.iter().map(|l| (l.text.as_str(), l.level)).collect();
        assert_eq!(texts[0], ("hello world", Level::Info));
        assert_eq!(texts[1].0.len(), LINE_BYTES);
        assert_eq!(texts[1].1, Level::Warn);
        assert_eq!(texts[2], ("after", Level::Warn));
        assert_eq!(texts[3], ("from log()", Level::Error));
        assert_eq!(lines.len(), 4);
        assert_eq!(dropped, 2, "'second' and 'over the budget'");
    }
}
