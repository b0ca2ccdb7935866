//! The newest entries of the feed, kept in memory so that a wait woken by a new entry (the
//! common case: a client waits for its job's next news) answers without a read of the store.
//!
//! It holds an unbroken run of the newest entries: a page it can answer in whole, it answers;
//! anything else goes to the store. An entry too large to keep, or a deleted job, starts the run
//! over, so memory stays small and what it answers is what the store would.

use std::collections::VecDeque;

use crate::model::{JobId, Notification};

/// How many entries are kept at most.
const KEPT: usize = 32;
/// The largest entry kept, as JSON: a short result or question, not a long final message.
const KEPT_BYTES: usize = 2048;

#[derive(Default)]
pub(super) struct RecentFeed {
    /// Consecutive seqs, oldest first.
    entries: VecDeque<Notification>,
}

impl RecentFeed {
    /// Keeps `entry`, the feed's newest.
    pub fn push(&mut self, entry: Notification) {
        let follows = self
            .entries
            .back()
            .is_none_or(|last| last.seq + 1 == entry.seq);
        let small = serde_json::to_vec(&entry).is_ok_and(|json| json.len() <= KEPT_BYTES);
        if !follows || !small {
            self.entries.clear();
        }
        if small {
            if self.entries.len() == KEPT {
                self.entries.pop_front();
            }
            self.entries.push_back(entry);
        }
    }

    /// Forgets everything: jobs were deleted, and with them their entries.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The entries after `after`, for `job` or all, oldest first, at most `limit`; `None` when
    /// some of them may be older than what is kept. `last` is the newest seq of the feed.
    pub fn after(
        &self,
        after: u64,
        last: u64,
        job: Option<&JobId>,
        limit: usize,
    ) -> Option<Vec<Notification>> {
        let newest = self.entries.back().map_or(0, |n| n.seq);
        let oldest = self.entries.front().map_or(newest + 1, |n| n.seq);
        // Kept: every entry past `after`, up to the feed's newest.
        if after + 1 < oldest || newest != last && after < last {
            return None;
        }
        Some(
            self.entries
                .iter()
                .filter(|n| n.seq > after && job.is_none_or(|j| n.job_id == *j))
                .take(limit)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sample_notification;

    fn entry(seq: u64, job: &str, result: &str) -> Notification {
        Notification {
            result: Some(result.into()),
            ..sample_notification(seq, job)
        }
    }

    fn seqs(found: Option<Vec<Notification>>) -> Option<Vec<u64>> {
        found.map(|entries| entries.iter().map(|n| n.seq).collect())
    }

    #[test]
    fn the_entries_after_a_cursor_it_holds_are_answered_for_one_job_or_all() {
        let mut recent = RecentFeed::default();
        for (seq, job) in [(5, "a"), (6, "b"), (7, "a")] {
            recent.push(entry(seq, job, "ok"));
        }
        assert_eq!(seqs(recent.after(4, 7, None, 10)), Some(vec![5, 6, 7]));
        assert_eq!(
            seqs(recent.after(5, 7, Some(&JobId::from("a")), 10)),
            Some(vec![7])
        );
        assert_eq!(seqs(recent.after(4, 7, None, 2)), Some(vec![5, 6]));
        assert_eq!(seqs(recent.after(7, 7, None, 10)), Some(vec![]));
    }

    #[test]
    fn entries_older_than_what_it_holds_or_newer_are_left_to_the_store() {
        let mut recent = RecentFeed::default();
        recent.push(entry(5, "a", "ok"));
        assert_eq!(seqs(recent.after(3, 5, None, 10)), None, "4 is not held");
        assert_eq!(seqs(recent.after(4, 6, None, 10)), None, "6 is not held");
        assert_eq!(
            seqs(RecentFeed::default().after(0, 0, None, 10)),
            Some(vec![])
        );
        assert_eq!(seqs(RecentFeed::default().after(0, 1, None, 10)), None);
    }

    #[test]
    fn a_large_entry_a_gap_or_a_deletion_starts_the_run_over() {
        let mut recent = RecentFeed::default();
        recent.push(entry(1, "a", "ok"));
        recent.push(entry(2, "a", &"x".repeat(KEPT_BYTES)));
        assert_eq!(
            seqs(recent.after(1, 2, None, 10)),
            None,
            "2 is too large to keep"
        );
        recent.push(entry(3, "a", "ok"));
        assert_eq!(seqs(recent.after(2, 3, None, 10)), Some(vec![3]));
        recent.push(entry(5, "a", "ok"));
        assert_eq!(
            seqs(recent.after(3, 5, None, 10)),
            None,
            "a gap: 4 was deleted"
        );
        recent.clear();
        assert_eq!(seqs(recent.after(4, 5, None, 10)), None);
    }

    #[test]
    fn it_keeps_only_the_newest_entries() {
        let mut recent = RecentFeed::default();
        for seq in 1..=(KEPT as u64 + 8) {
            recent.push(entry(seq, "a", "ok"));
        }
        assert_eq!(
            seqs(recent.after(8, KEPT as u64 + 8, None, 1)),
            Some(vec![9])
        );
        assert_eq!(seqs(recent.after(7, KEPT as u64 + 8, None, 1)), None);
    }
}
