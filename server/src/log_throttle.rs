//! Warnings a tenant's data or analyzer can cause once per flow (a malformed flow, a failed
//! topology query, a flow from an unknown capture point) are logged at most once per
//! [`EVERY`] per pipeline stage, with the count of those left out, so that a hostile stream
//! can't flood the operator's log. Texts that come from a tenant are [`truncate`]d.

use std::time::{Duration, Instant};

/// The shortest interval between two logged warnings of one kind.
pub const EVERY: Duration = Duration::from_secs(10);

/// One kind of warning of one pipeline stage.
#[derive(Debug, Default)]
pub struct LogThrottle {
    last: Option<Instant>,
    skipped: u64,
}

impl LogThrottle {
    /// `Some(n)` when this warning may be logged now, `n` being how many were left out since
    /// the last one; `None` when it must be left out (and counted).
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < EVERY) {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

/// `text` cut to at most `max` bytes on a character boundary, saying how long it was.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!("... ({total} bytes)"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_interval_and_the_rest_counted() {
        let mut t = LogThrottle::default();
        assert_eq!(t.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(t.allow(), None);
        }
        t.last = Some(Instant::now() - EVERY);
        assert_eq!(t.allow(), Some(1000));
        assert_eq!(t.allow(), None);
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("short".into(), 8), "short");
        assert_eq!(truncate("ééééé".into(), 5), "éé... (10 bytes)");
    }
}
