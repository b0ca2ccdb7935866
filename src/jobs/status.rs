//! A job's status as a pure function of its facts.

use crate::model::JobStatus;

/// How a job's latest turn ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Failed,
    Cancelled,
    Interrupted,
}

/// What is true of a job; its status follows from these alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// A turn waits in the queue for a slot.
    pub queued: bool,
    /// A turn holds a slot: it is being handed to Codex, or runs there, and has not ended.
    pub turn_running: bool,
    /// Codex has taken the running turn (`start_turn` returned): an interrupt can reach it.
    pub handed_over: bool,
    /// Requests of Codex's in the running turn that wait for an answer.
    pub approvals_waiting: u32,
    /// How the latest finished turn ended.
    pub outcome: Option<Outcome>,
}

pub(crate) fn derive(facts: &Facts) -> JobStatus {
    if facts.queued {
        return JobStatus::Queued;
    }
    if facts.turn_running {
        return if facts.approvals_waiting > 0 {
            JobStatus::InputRequired
        } else {
            JobStatus::Running
        };
    }
    match facts.outcome {
        Some(Outcome::Completed) => JobStatus::Completed,
        Some(Outcome::Failed) => JobStatus::Failed,
        Some(Outcome::Cancelled) => JobStatus::Cancelled,
        Some(Outcome::Interrupted) => JobStatus::Interrupted,
        // A job exists only once its first turn is queued or running; this is that instant.
        None => JobStatus::Queued,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_turn_is_queued_whatever_came_before() {
        let facts = Facts {
            queued: true,
            outcome: Some(Outcome::Completed),
            ..Facts::default()
        };
        assert_eq!(derive(&facts), JobStatus::Queued);
    }

    #[test]
    fn a_running_turn_is_running() {
        let facts = Facts {
            turn_running: true,
            outcome: Some(Outcome::Failed),
            ..Facts::default()
        };
        assert_eq!(derive(&facts), JobStatus::Running);
    }

    #[test]
    fn a_running_turn_waiting_on_a_person_requires_input() {
        let facts = Facts {
            turn_running: true,
            approvals_waiting: 1,
            ..Facts::default()
        };
        assert_eq!(derive(&facts), JobStatus::InputRequired);
    }

    #[test]
    fn a_settled_job_shows_how_its_latest_turn_ended() {
        for (outcome, status) in [
            (Outcome::Completed, JobStatus::Completed),
            (Outcome::Failed, JobStatus::Failed),
            (Outcome::Cancelled, JobStatus::Cancelled),
            (Outcome::Interrupted, JobStatus::Interrupted),
        ] {
            let facts = Facts {
                outcome: Some(outcome),
                ..Facts::default()
            };
            assert_eq!(derive(&facts), status);
        }
    }
}
