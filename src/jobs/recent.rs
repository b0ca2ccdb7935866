//! The newest entries of a sequence, kept in memory so that a reader who follows it closely is
//! answered without a read of the store: a wait woken by a new feed entry (the common case: a
//! client waits for its job's next news), or a client paging a running job's events as Codex
//! streams them.
//!
//! It holds an unbroken run of the newest entries: a page it can answer in whole, it answers;
//! anything else goes to the store. An entry too large to keep, or a gap (a deleted job's
//! entries), starts the run over, so memory stays small and what it answers is what the store
//! would.

use std::collections::VecDeque;

use serde::Serialize;

use crate::model::{Event, Notification};

/// An entry of a sequence: its place in it, counting up without gaps.
pub(super) trait Sequenced: Clone + Serialize {
    fn seq(&self) -> u64;
}

impl Sequenced for Notification {
    fn seq(&self) -> u64 {
        self.seq
    }
}

impl Sequenced for Event {
    fn seq(&self) -> u64 {
        self.seq
    }
}

/// How much a run keeps at most, counting entries as JSON.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bounds {
    entries: usize,
    bytes: usize,
    /// The largest entry kept.
    entry_bytes: usize,
}

/// The feed's: short results and questions, not long final messages.
pub(super) const FEED: Bounds = Bounds {
    entries: 32,
    bytes: 32 * 2048,
    entry_bytes: 2048,
};

/// A running job's events: the last moments of a stream (joined pieces are at most 512 bytes
/// of text, and a streaming turn makes a few hundred a second), which is what a client following
/// it asks for. With what each event takes beyond its JSON (its `Value` map, about 600 bytes),
/// a job keeps about 40 KiB at most, so a thousand running jobs stay under 40 MiB.
pub(super) const EVENTS: Bounds = Bounds {
    entries: 32,
    bytes: 16 * 1024,
    entry_bytes: 4 * 1024,
};

pub(super) struct Recent<T> {
    /// Consecutive seqs, oldest first, each with its size as JSON.
    entries: VecDeque<(T, usize)>,
    bytes: usize,
    bounds: Bounds,
}

impl<T: Sequenced> Recent<T> {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            bounds,
        }
    }

    /// Keeps `entry`, the sequence's newest.
    pub fn push(&mut self, entry: T) {
        let follows = self
            .entries
            .back()
            .is_none_or(|(last, _)| last.seq() + 1 == entry.seq());
        let size = json_size(&entry);
        let small = size <= self.bounds.entry_bytes;
        if !follows || !small {
            self.clear();
        }
        if small {
            while self.entries.len() == self.bounds.entries || self.bytes + size > self.bounds.bytes
            {
                let Some((_, dropped)) = self.entries.pop_front() else {
                    break;
                };
                self.bytes -= dropped;
            }
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
    }

    /// Forgets everything: entries were deleted.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries after `after` that `wanted` keeps, oldest first, at most `limit`; `None` when
    /// some of them may be older than what is kept. `last` is the newest seq of the sequence.
    pub fn after(
        &self,
        after: u64,
        last: u64,
        wanted: impl Fn(&T) -> bool,
        limit: usize,
    ) -> Option<Vec<T>> {
        let newest = self.entries.back().map_or(0, |(n, _)| n.seq());
        let oldest = self.entries.front().map_or(newest + 1, |(n, _)| n.seq());
        // Kept: every entry past `after`, up to the sequence's newest.
        if after + 1 < oldest || newest != last && after < last {
            return None;
        }
        Some(
            self.entries
                .iter()
                .map(|(entry, _)| entry)
                .filter(|entry| entry.seq() > after && wanted(entry))
                .take(limit)
                .cloned()
                .collect(),
        )
    }
}

/// The length of `entry` as JSON; one that cannot be written is too large to keep (none of ours
/// is).
fn json_size(entry: &impl Serialize) -> usize {
    crate::text::json_len(entry).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{JobId, sample_notification};

    fn entry(seq: u64, job: &str, result: &str) -> Notification {
        Notification {
            result: Some(result.into()),
            ..sample_notification(seq, job)
        }
    }

    fn seqs(found: Option<Vec<Notification>>) -> Option<Vec<u64>> {
        found.map(|entries| entries.iter().map(|n| n.seq).collect())
    }

    fn any(_: &Notification) -> bool {
        true
    }

    #[test]
    fn the_entries_after_a_cursor_it_holds_are_answered_for_one_job_or_all() {
        let mut recent = Recent::new(FEED);
        for (seq, job) in [(5, "a"), (6, "b"), (7, "a")] {
            recent.push(entry(seq, job, "ok"));
        }
        assert_eq!(seqs(recent.after(4, 7, any, 10)), Some(vec![5, 6, 7]));
        assert_eq!(
            seqs(recent.after(5, 7, |n| n.job_id == JobId::from("a"), 10)),
            Some(vec![7])
        );
        assert_eq!(seqs(recent.after(4, 7, any, 2)), Some(vec![5, 6]));
        assert_eq!(seqs(recent.after(7, 7, any, 10)), Some(vec![]));
    }

    #[test]
    fn entries_older_than_what_it_holds_or_newer_are_left_to_the_store() {
        let mut recent = Recent::new(FEED);
        recent.push(entry(5, "a", "ok"));
        assert_eq!(seqs(recent.after(3, 5, any, 10)), None, "4 is not held");
        assert_eq!(seqs(recent.after(4, 6, any, 10)), None, "6 is not held");
        assert_eq!(seqs(Recent::new(FEED).after(0, 0, any, 10)), Some(vec![]));
        assert_eq!(seqs(Recent::new(FEED).after(0, 1, any, 10)), None);
    }

    #[test]
    fn a_large_entry_a_gap_or_a_deletion_starts_the_run_over() {
        let mut recent = Recent::new(FEED);
        recent.push(entry(1, "a", "ok"));
        recent.push(entry(2, "a", &"x".repeat(FEED.entry_bytes)));
        assert_eq!(
            seqs(recent.after(1, 2, any, 10)),
            None,
            "2 is too large to keep"
        );
        recent.push(entry(3, "a", "ok"));
        assert_eq!(seqs(recent.after(2, 3, any, 10)), Some(vec![3]));
        recent.push(entry(5, "a", "ok"));
        assert_eq!(
            seqs(recent.after(3, 5, any, 10)),
            None,
            "a gap: 4 was deleted"
        );
        recent.clear();
        assert_eq!(seqs(recent.after(4, 5, any, 10)), None);
    }

    #[test]
    fn it_keeps_only_the_newest_entries() {
        let mut recent = Recent::new(FEED);
        for seq in 1..=(FEED.entries as u64 + 8) {
            recent.push(entry(seq, "a", "ok"));
        }
        assert_eq!(
            seqs(recent.after(8, FEED.entries as u64 + 8, any, 1)),
            Some(vec![9])
        );
        assert_eq!(seqs(recent.after(7, FEED.entries as u64 + 8, any, 1)), None);
    }

    #[test]
    fn it_keeps_no_more_bytes_than_its_bound_dropping_the_oldest() {
        let bounds = Bounds {
            entries: 100,
            bytes: 1000,
            entry_bytes: 1000,
        };
        let mut recent = Recent::new(bounds);
        let size = json_size(&entry(1, "a", &"x".repeat(300)));
        for seq in 1..=5 {
            recent.push(entry(seq, "a", &"x".repeat(300)));
        }
        let kept = (1000 / size) as u64;
        assert_eq!(
            seqs(recent.after(5 - kept, 5, any, 10)),
            Some((6 - kept..=5).collect())
        );
        assert_eq!(seqs(recent.after(4 - kept, 5, any, 10)), None);
    }
}
