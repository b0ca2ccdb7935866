//! Which of our turns a message from a long-lived Codex is about, from Codex's own turn ids.
//!
//! Codex names its turns (`turn_id`, `turnId`); a job's turns in one Codex thread follow each
//! other, and a word about an earlier one can arrive after the next has started (a cancel that
//! Codex confirms late). So each job keeps the Codex ids of its recent turns: a message naming
//! one of them is about that turn, whatever runs now. A message naming no turn is about the
//! running one, and the first unknown id seen while the running turn has none is its id.

use std::collections::VecDeque;

/// How many earlier turns of a job are remembered.
const REMEMBERED: usize = 8;

/// A job's turns in one Codex child; `T` is what a backend keeps about the running turn.
pub(crate) struct JobTurns<T> {
    pub running: Option<Running<T>>,
    /// Codex's ids of this job's recent turns, oldest first, with our turn numbers.
    seen: VecDeque<(String, u32)>,
}

impl<T> Default for JobTurns<T> {
    fn default() -> Self {
        Self {
            running: None,
            seen: VecDeque::new(),
        }
    }
}

/// The turn Codex runs for a job.
pub(crate) struct Running<T> {
    /// Our turn number.
    pub turn: u32,
    /// Codex's id for it, once Codex has said it.
    pub codex_turn: Option<String>,
    pub state: T,
}

impl<T> JobTurns<T> {
    /// `turn` goes to Codex now.
    pub fn start(&mut self, turn: u32, state: T) {
        self.running = Some(Running {
            turn,
            codex_turn: None,
            state,
        });
    }

    /// The running turn, if it is `turn`.
    pub fn running(&mut self, turn: u32) -> Option<&mut Running<T>> {
        self.running.as_mut().filter(|r| r.turn == turn)
    }

    /// Codex named the running turn `turn`.
    pub fn name(&mut self, turn: u32, codex_turn: &str) {
        if let Some(running) = self.running(turn) {
            running.codex_turn = Some(codex_turn.to_owned());
            self.remember(codex_turn, turn);
        }
    }

    /// Which turn a message about Codex's turn `codex_turn` belongs to (`None` or empty: the
    /// session, so the running turn). `None` when it is no turn we know.
    pub fn turn_of(&mut self, codex_turn: Option<&str>) -> Option<u32> {
        let Some(id) = codex_turn.filter(|id| !id.is_empty()) else {
            return self.running.as_ref().map(|r| r.turn);
        };
        if let Some((_, turn)) = self.seen.iter().find(|(seen, _)| seen == id) {
            return Some(*turn);
        }
        let running = self.running.as_mut()?;
        if running.codex_turn.is_some() {
            return None;
        }
        running.codex_turn = Some(id.to_owned());
        let turn = running.turn;
        self.remember(id, turn);
        Some(turn)
    }

    /// Ends `turn` if it is the running one, returning what was kept about it.
    pub fn end(&mut self, turn: u32) -> Option<Running<T>> {
        if self.running.as_ref().is_some_and(|r| r.turn == turn) {
            self.running.take()
        } else {
            None
        }
    }

    fn remember(&mut self, codex_turn: &str, turn: u32) {
        if self.seen.iter().any(|(seen, _)| seen == codex_turn) {
            return;
        }
        if self.seen.len() == REMEMBERED {
            self.seen.pop_front();
        }
        self.seen.push_back((codex_turn.to_owned(), turn));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_word_about_an_earlier_turn_names_that_turn() {
        let mut turns = JobTurns::default();
        turns.start(1, ());
        assert_eq!(turns.turn_of(Some("codex-a")), Some(1));
        turns.end(1);
        turns.start(2, ());
        assert_eq!(turns.turn_of(Some("codex-a")), Some(1), "turn 1's id");
        assert_eq!(turns.turn_of(Some("codex-b")), Some(2), "adopted by turn 2");
        assert_eq!(
            turns.turn_of(Some("codex-c")),
            None,
            "turn 2 has its id already"
        );
        assert_eq!(
            turns.turn_of(None),
            Some(2),
            "session-level words go to the running turn"
        );
    }

    #[test]
    fn an_id_codex_gave_when_the_turn_started_is_kept() {
        let mut turns = JobTurns::default();
        turns.start(3, ());
        turns.name(3, "codex-x");
        assert_eq!(turns.turn_of(Some("codex-y")), None);
        assert_eq!(turns.turn_of(Some("codex-x")), Some(3));
        assert!(turns.end(2).is_none(), "only the running turn ends");
        assert!(turns.end(3).is_some());
        assert_eq!(turns.turn_of(None), None);
    }
}
