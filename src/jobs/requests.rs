//! Codex's requests (run a command, apply a patch, grant permissions, call an MCP tool, answer a
//! question) and the turns' time limits: nothing waits forever.
//!
//! A request is answered by the job's policy at once, or waits as `input_required` for a client
//! (`job_respond`, or an elicitation the tool layer relays) until the approval timeout answers it.
//! A turn's clock stops while a request waits; when it runs out the turn is stopped and fails.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use super::api::{Relayed, RespondRequest};
use super::manager::JobManager;
use super::state::Stop;
use super::{EventKind, EventQuery, JobError, JobSnapshot};
use crate::model::{
    Answer, Approvals, CodexRequest, DecidedBy, Decision, JobId, JobTurn, PendingRequest,
    RequestKind,
};

/// The answer a job's policy gives at once; `None` when the request waits for a client.
pub(super) fn policy_answer(request: &CodexRequest, approvals: Approvals) -> Option<Answer> {
    match approvals {
        Approvals::Relay => None,
        Approvals::Decline => Some(Answer::just(Decision::Decline)),
        // Nobody is there to answer a question.
        Approvals::Approve if request.kind == RequestKind::Question => {
            Some(Answer::just(Decision::Decline))
        }
        Approvals::Approve => Some(Answer::just(Decision::Accept)),
    }
}

/// Refuses an answer the request cannot take, saying what it takes.
fn check_answer(request: &PendingRequest, answer: &Answer) -> Result<(), JobError> {
    let id = &request.request_id;
    if !request.decisions.contains(&answer.decision) {
        let allowed: Vec<&str> = request.decisions.iter().map(|d| d.as_str()).collect();
        return Err(JobError::InvalidArgument(format!(
            "request {id} ({kind:?}) does not take decision {decision}; it takes {allowed}",
            kind = request.kind,
            decision = answer.decision.as_str(),
            allowed = allowed.join(", ")
        )));
    }
    let accepted = matches!(
        answer.decision,
        Decision::Accept | Decision::AcceptForSession
    );
    match (request.kind, &answer.answers) {
        (RequestKind::Question, Some(answers)) if accepted => {
            let known: Vec<&str> = request.questions.iter().map(|q| q.id.as_str()).collect();
            if let Some(unknown) = answers.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(JobError::InvalidArgument(format!(
                    "request {id} has no question {:?}; its questions are {}",
                    crate::text::shorten(unknown, 100),
                    known.join(", ")
                )));
            }
            let missing: Vec<&str> = known
                .iter()
                .copied()
                .filter(|k| !answers.contains_key(*k))
                .collect();
            if !missing.is_empty() {
                return Err(JobError::InvalidArgument(format!(
                    "request {id}: answer every question; missing {}",
                    missing.join(", ")
                )));
            }
            let text = |v: &Value| v.is_string();
            if let Some((bad, _)) = answers.iter().find(|(_, v)| match v {
                Value::Array(texts) => texts.is_empty() || !texts.iter().all(text),
                other => !text(other),
            }) {
                return Err(JobError::InvalidArgument(format!(
                    "request {id}: the answer to {bad:?} must be a string (an option or your \
                     own words) or a list of strings"
                )));
            }
            Ok(())
        }
        (RequestKind::Question, None) if accepted => Err(JobError::InvalidArgument(format!(
            "request {id} asks questions: accept it with answers, e.g. {{\"{}\": \"{}\"}}, or \
             decline it",
            request.questions.first().map_or("id", |q| q.id.as_str()),
            request
                .questions
                .first()
                .and_then(|q| q.options.first())
                .map_or("your answer", String::as_str)
        ))),
        (RequestKind::McpTool, _) => Ok(()),
        (_, Some(_)) => Err(JobError::InvalidArgument(format!(
            "request {id} ({:?}) takes no answers, only a decision",
            request.kind
        ))),
        _ => Ok(()),
    }
}

impl JobManager {
    /// Requests that start waiting for a client from now on.
    pub fn subscribe_requests(&self) -> broadcast::Receiver<Relayed> {
        self.inner.relayed.subscribe()
    }

    /// Answers the job's waiting request as a client, and returns the job as it is then (for a
    /// `cancel`, once its turn has ended or the cancel grace ran out).
    pub async fn respond(
        &self,
        job: &str,
        respond: RespondRequest,
    ) -> Result<JobSnapshot, JobError> {
        let id = JobId::from(job);
        let request_id = respond.request_id.clone();
        match self
            .answer_request(
                &id,
                &request_id,
                respond.answer,
                DecidedBy::Client,
                respond.note,
            )
            .await
        {
            Err(JobError::NoSuchRequest { .. }) => {
                Err(self.why_not_waiting(&id, &request_id).await)
            }
            answered => answered,
        }
    }

    /// Answers `request_id` of `id`. A `cancel` stops the turn as cancelled.
    pub(super) async fn answer_request(
        &self,
        id: &JobId,
        request_id: &str,
        answer: Answer,
        decided_by: DecidedBy,
        note: Option<String>,
    ) -> Result<JobSnapshot, JobError> {
        let how = match decided_by {
            DecidedBy::Timeout => format!(
                "cancelled: nobody answered request {request_id} within {} s",
                self.inner.settings.approval_timeout.as_secs()
            ),
            _ => format!("cancelled by the answer `cancel` to request {request_id}"),
        };
        let mut cancel = None;
        let after = self
            .transact(|tx| {
                let Some(pending) = tx.pending(id, request_id)?.map(|p| p.request.clone()) else {
                    return Err(JobError::NoSuchRequest {
                        job: id.clone(),
                        request_id: crate::text::shorten(request_id, 100),
                    });
                };
                check_answer(&pending, &answer)?;
                let decision = answer.decision;
                tx.resolve(id, request_id, answer, decided_by, note)?;
                if decision == Decision::Cancel {
                    let entry = tx.job(id)?;
                    let stop = entry.stop.get_or_insert(Stop::Cancel(how)).clone();
                    cancel = Some((entry.record.turns, stop));
                }
                Ok(())
            })
            .await?;
        self.publish_and_dispatch(after);
        if let Some((turn, stop)) = cancel {
            match self.stop_turn(id, Some(turn), stop).await {
                Ok(_) | Err(JobError::AlreadySettled { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.inner.lock().snapshot(id)
    }

    /// Why `request_id` of `id` takes no answer: answered already, over with its turn, or never
    /// asked; and what waits instead.
    async fn why_not_waiting(&self, id: &JobId, request_id: &str) -> JobError {
        let waiting: Vec<String> = match self.inner.lock().job(id) {
            Ok(job) => job
                .pending
                .iter()
                .map(|p| p.request.request_id.clone())
                .collect(),
            Err(e) => return e,
        };
        let of = |kind| EventQuery {
            types: Some(vec![kind]),
            limit: 10_000,
            ..EventQuery::default()
        };
        let find = async |kind| -> Option<Value> {
            let page = self.inner.store.read_events(id, &of(kind)).await.ok()?;
            page.events
                .into_iter()
                .rev()
                .find(|e| e.data.get("request_id").and_then(Value::as_str) == Some(request_id))
                .map(|e| e.data)
        };
        let waiting = if waiting.is_empty() {
            "no request of this job waits for an answer".to_owned()
        } else {
            format!("waiting: {}", waiting.join(", "))
        };
        let request_id = crate::text::shorten(request_id, 100);
        if let Some(resolved) = find(EventKind::ApprovalResolved).await {
            let field = |name: &str| {
                resolved
                    .get(name)
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned()
            };
            return JobError::AlreadyAnswered {
                job: id.clone(),
                request_id,
                decision: field("decision"),
                decided_by: field("decided_by"),
                waiting,
            };
        }
        if find(EventKind::ApprovalRequested).await.is_some() {
            return JobError::RequestOver {
                job: id.clone(),
                request_id,
                waiting,
            };
        }
        JobError::UnknownRequest {
            job: id.clone(),
            request_id,
            waiting,
        }
    }

    /// Starts the approval timeout of requests that now wait for a client, and tells whoever
    /// listens about them.
    pub(super) fn relay(&self, relayed: Vec<Relayed>) {
        for request in relayed {
            // Nobody listening is fine: job_respond and the timeout remain.
            let _ = self.inner.relayed.send(request.clone());
            let weak = Arc::downgrade(&self.inner);
            let stopping = self.inner.stopping.clone();
            let timeout = self.inner.settings.approval_timeout;
            self.inner.tasks.spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(timeout) => {}
                    () = stopping.cancelled() => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                JobManager { inner }.time_out(request).await;
            });
        }
    }

    /// Answers a request nobody answered in time with the timeout's decision, if it still waits.
    async fn time_out(&self, relayed: Relayed) {
        let settings = &self.inner.settings;
        let decision = match settings.approval_timeout_decision {
            // A question cannot be accepted without answers.
            Decision::Accept | Decision::AcceptForSession
                if relayed.request.kind == RequestKind::Question =>
            {
                Decision::Decline
            }
            decision => decision,
        };
        let note = format!(
            "nobody answered within the approval timeout ({} s)",
            settings.approval_timeout.as_secs()
        );
        let id = &relayed.turn.job;
        let request_id = &relayed.request.request_id;
        let answered = self
            .answer_request(
                id,
                request_id,
                Answer::just(decision),
                DecidedBy::Timeout,
                Some(note),
            )
            .await;
        match answered {
            Ok(_) => tracing::info!(job = %id, request_id, "a request timed out unanswered"),
            Err(JobError::NoSuchRequest { .. } | JobError::UnknownJob(_)) => {}
            Err(e) => {
                tracing::warn!(job = %id, request_id, error = %e, "could not time out a request")
            }
        }
    }

    /// Watches `turn`'s time limit, if it has one, and stops the turn when it runs out.
    pub(super) fn watch_clock(&self, turn: JobTurn) {
        let weak = Arc::downgrade(&self.inner);
        let stopping = self.inner.stopping.clone();
        let mut changes = self.inner.turns_changed.subscribe();
        self.inner.tasks.spawn(async move {
            loop {
                changes.borrow_and_update();
                let clock = {
                    let Some(inner) = weak.upgrade() else { return };
                    let state = inner.lock();
                    match state.jobs.get(&turn.job) {
                        Some(job) if job.takes_reports_for(turn.turn) => job.clock,
                        _ => None,
                    }
                };
                let Some(clock) = clock else { return };
                let deadline = clock.deadline();
                tokio::select! {
                    () = async { if let Some(at) = deadline { tokio::time::sleep_until(at).await } }, if deadline.is_some() => {
                        let Some(inner) = weak.upgrade() else { return };
                        let manager = JobManager { inner };
                        let due = manager.inner.lock().jobs.get(&turn.job).is_some_and(|j| {
                            j.takes_reports_for(turn.turn)
                                && j.clock.and_then(|c| c.deadline()).is_some_and(|at| at <= tokio::time::Instant::now())
                        });
                        if due {
                            tracing::info!(%turn, "the turn ran out of its time limit");
                            let stopped = manager.stop_turn(&turn.job, Some(turn.turn), Stop::TimeLimit(clock.limit)).await;
                            if let Err(e) = stopped {
                                tracing::debug!(%turn, error = %e, "could not stop the turn");
                            }
                            return;
                        }
                    }
                    changed = changes.changed() => if changed.is_err() { return },
                    () = stopping.cancelled() => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sample_question;
    use serde_json::json;

    fn answers(value: Value) -> Answer {
        Answer {
            decision: Decision::Accept,
            answers: value.as_object().cloned(),
        }
    }

    #[test]
    fn a_question_is_accepted_only_with_an_answer_to_each_question() {
        assert!(check_answer(&sample_question(), &answers(json!({"color": "Blue"}))).is_ok());
        assert!(check_answer(&sample_question(), &answers(json!({"color": ["Blue"]}))).is_ok());
        assert!(check_answer(&sample_question(), &Answer::just(Decision::Decline)).is_ok());
        for (bad, says) in [
            (json!({}), "missing color"),
            (json!({"size": "L", "color": "Red"}), "no question \"size\""),
            (json!({"color": 3}), "must be a string"),
        ] {
            let e = check_answer(&sample_question(), &answers(bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
        }
        let e = check_answer(&sample_question(), &Answer::just(Decision::Accept))
            .unwrap_err()
            .to_string();
        assert!(e.contains(r#"{"color": "Red"}"#), "{e}");
    }

    #[test]
    fn a_decision_the_request_does_not_take_is_refused_with_what_it_takes() {
        let e = check_answer(
            &sample_question(),
            &Answer::just(Decision::AcceptForSession),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("it takes accept, decline, cancel"), "{e}");
    }

    #[test]
    fn approve_declines_questions_since_nobody_can_answer_them() {
        let request = |kind| CodexRequest {
            kind,
            summary: String::new(),
            details: serde_json::Map::new(),
            questions: Vec::new(),
            decisions: Vec::new(),
            raw: Value::Null,
        };
        let approve = |kind| policy_answer(&request(kind), Approvals::Approve);
        assert_eq!(
            approve(RequestKind::Command),
            Some(Answer::just(Decision::Accept))
        );
        assert_eq!(
            approve(RequestKind::Question),
            Some(Answer::just(Decision::Decline))
        );
        assert_eq!(
            policy_answer(&request(RequestKind::Command), Approvals::Relay),
            None
        );
    }
}
