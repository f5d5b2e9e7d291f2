//! A pipeline's guest log: what its WebAssembly guests say (`log` calls, stdout and stderr
//! lines) and why their batches failed, kept for the tenant to read
//! (`GET /v1/pipelines/{id}/logs`) instead of going to the operator's log.
//!
//! Bounded three ways, so a guest can't make the server hold or write more than a few hundred
//! kilobytes per pipeline: lines are cut at [`LINE_BYTES`], at most [`RATE_PER_SEC`] lines a
//! second are kept (the rest counted as dropped), and the oldest lines go past [`MAX_LINES`] or
//! [`MAX_BYTES`]. `sluice run` also prints each line kept to its own log.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// Longest line kept; the rest is cut.
pub const LINE_BYTES: usize = 1024;
/// Lines kept per pipeline.
pub const MAX_LINES: usize = 1000;
/// Bytes of text kept per pipeline.
pub const MAX_BYTES: usize = 256 << 10;
/// Lines accepted per second per pipeline.
pub const RATE_PER_SEC: u32 = 100;

/// How serious a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The guest's `log(error, ...)`, or a failed batch.
    Error,
    /// The guest's `log(warn, ...)`, or a stderr line.
    Warn,
    /// The guest's `log(info, ...)`, or a stdout line.
    Info,
    /// The guest's `log(debug, ...)`.
    Debug,
}

/// One line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GuestLine {
    /// Position in the pipeline's log, from 1; `?since=<seq>` gives the lines after it.
    pub seq: u64,
    /// RFC 3339, milliseconds.
    pub time: String,
    /// `transform` or `mangle`.
    pub stage: &'static str,
    /// Severity.
    pub level: Level,
    /// The text (at most [`LINE_BYTES`]).
    pub text: String,
}

/// One pipeline's guest log. Shared by its wasm stages and the API.
#[derive(Debug)]
pub struct GuestLog {
    inner: Mutex<Inner>,
    /// Also print each kept line to the process's log (`sluice run`).
    echo: bool,
}

#[derive(Debug)]
struct Inner {
    lines: VecDeque<GuestLine>,
    bytes: usize,
    next_seq: u64,
    dropped: u64,
    window: Instant,
    in_window: u32,
}

impl GuestLog {
    /// A log read through the API (`sluice serve`).
    pub fn new() -> Self {
        Self::with_echo(false)
    }

    /// A log whose lines also go to the process's log (`sluice run`, tests).
    pub fn echoed() -> Self {
        Self::with_echo(true)
    }

    fn with_echo(echo: bool) -> Self {
        GuestLog {
            inner: Mutex::new(Inner {
                lines: VecDeque::new(),
                bytes: 0,
                next_seq: 1,
                dropped: 0,
                window: Instant::now(),
                in_window: 0,
            }),
            echo,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a line (cut to [`LINE_BYTES`]), unless the pipeline is over its rate.
    pub fn push(&self, stage: &'static str, level: Level, text: &str) {
        let mut cut = text.len().min(LINE_BYTES);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let text = text[..cut].trim_end_matches(['\n', '\r']);
        let mut inner = self.lock();
        let now = Instant::now();
        if now.duration_since(inner.window).as_secs() >= 1 {
            inner.window = now;
            inner.in_window = 0;
        }
        if inner.in_window >= RATE_PER_SEC {
            inner.dropped += 1;
            return;
        }
        inner.in_window += 1;
        if self.echo {
            match level {
                Level::Error => tracing::error!(stage, guest = %text, "guest log"),
                Level::Warn => tracing::warn!(stage, guest = %text, "guest log"),
                Level::Info => tracing::info!(stage, guest = %text, "guest log"),
                Level::Debug => tracing::debug!(stage, guest = %text, "guest log"),
            }
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.bytes += text.len();
        inner.lines.push_back(GuestLine {
            seq,
            time: crate::rfc3339(crate::now_ms()),
            stage,
            level,
            text: text.to_string(),
        });
        while inner.lines.len() > MAX_LINES || inner.bytes > MAX_BYTES {
            if let Some(old) = inner.lines.pop_front() {
                inner.bytes -= old.text.len();
            }
        }
    }

    /// Counts lines a guest wrote but the log did not take (over a per-batch budget).
    pub fn count_dropped(&self, lines: u64) {
        self.lock().dropped += lines;
    }

    /// The lines after `since` (a `seq`; 0 for all kept), and how many were dropped so far.
    pub fn since(&self, since: u64) -> (Vec<GuestLine>, u64) {
        let inner = self.lock();
        let lines = inner
            .lines
            .iter()
            .filter(|l| l.seq > since)
            .cloned()
            .collect();
        (lines, inner.dropped)
    }
}

impl Default for GuestLog {
    fn default() -> Self {
        Self::echoed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_rate_limited_and_bounded() {
        let log = GuestLog::new();
        log.push("transform", Level::Info, &"é".repeat(2000));
        let (lines, _) = log.since(0);
        assert!(lines[0].text.len() <= LINE_BYTES);
        assert!(lines[0].text.chars().all(|c| c == 'é'));
        for i in 0..500 {
            log.push("mangle", Level::Warn, &format!("line {i}\n"));
        }
        let (lines, dropped) = log.since(0);
        assert_eq!(lines.len(), RATE_PER_SEC as usize);
        assert_eq!(dropped, 501 - u64::from(RATE_PER_SEC));
        assert_eq!(
            lines.last().unwrap().text,
            format!("line {}", RATE_PER_SEC - 2)
        );
        let after = log.since(lines[10].seq).0;
        assert_eq!(after.len(), lines.len() - 11);
        assert_eq!(after[0].seq, lines[11].seq);
    }

    #[test]
    fn the_oldest_lines_go_first() {
        let log = GuestLog::new();
        for round in 0..12 {
            log.lock().in_window = 0;
            for i in 0..100 {
                log.push("transform", Level::Info, &format!("{round}-{i}"));
            }
        }
        let (lines, dropped) = log.since(0);
        assert_eq!(dropped, 0);
        assert_eq!(lines.len(), MAX_LINES);
        assert_eq!(lines[0].text, "2-0");
        assert_eq!(lines.last().unwrap().seq, 1200);
    }
}
