//! The upward path: Codex's reports, applied in the order the backend sent them, a batch per
//! transaction, so a job's events get their `seq` in the order Codex wrote them.
//!
//! A report counts only for the turn it names, and only while that turn runs: anything about a
//! turn that ended (settled after a cancel's grace, at shutdown, or ended by Codex already) or
//! about an earlier turn is dropped with a debug log. So a late end cannot end the next turn and
//! nothing is recorded after a turn's terminal event.

use std::collections::HashMap;
use std::sync::Weak;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::JobError;
use super::manager::{Inner, JobManager};
use super::state::{Announce, Reply, Stop, Tx};
use super::status::Outcome;
use super::{output, requests};
use crate::codex::{BackendEvent, TurnEnd, Update};
use crate::model::{Answer, Changes, DecidedBy, Decision, EventKind, JobTurn, Worktree};
use crate::worktree;

/// How many backend reports are saved in one transaction at most.
const APPLY_BATCH: usize = 256;
/// How long streaming pieces (`*_delta` events) may wait for the ones that follow them, so that
/// one transaction saves many: Codex streams them one at a time, and a commit for every one or
/// two of them cost more than relaying them. Measured with the real Codex 0.169, a 20,000-delta
/// turn in the client's hands took 1.15 times bare app-server's time instead of 1.21 to 1.25
/// (two A/B runs); 5 ms instead of 2 then took a tenth off the server's CPU time in that turn
/// (85 vs 93 ms), and 20 instead of 5 a sixth more (median 198 vs 244 ms on a slower VM, three
/// A/B runs of 8 turns, a client following with `wait_seconds`): time taken from Codex on a
/// small machine, for text that reaches a client 15 ms later. 50 ms saved no more: a batch
/// holds [`APPLY_BATCH`] reports, and Codex streams about 200 in 20 ms. Any other report is
/// saved at once, with the pieces before it.
const DELTA_GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// Applies the backend's reports until the engine is gone, or until `drained` is cancelled (the
/// backend has sent its last report) and what is left in the channel has been applied.
pub(super) async fn apply_loop(
    engine: Weak<Inner>,
    mut events: mpsc::Receiver<BackendEvent>,
    drained: CancellationToken,
) {
    let mut batch = Vec::with_capacity(APPLY_BATCH);
    loop {
        let last = tokio::select! {
            biased;
            received = events.recv_many(&mut batch, APPLY_BATCH) => received == 0,
            () = drained.cancelled() => {
                while batch.len() < APPLY_BATCH && let Ok(report) = events.try_recv() {
                    batch.push(report);
                }
                batch.is_empty()
            }
        };
        if last {
            break;
        }
        gather_deltas(&mut events, &mut batch).await;
        let Some(inner) = engine.upgrade() else { break };
        let manager = JobManager { inner };
        #[cfg(test)]
        let taken = batch.len();
        let changes = manager.worktree_changes(&batch).await;
        manager.apply(std::mem::take(&mut batch), changes).await;
        manager.retry_unsaved_failures().await;
        #[cfg(test)]
        manager.inner.reports_taken.send_modify(|n| *n += taken);
    }
}

/// While `batch` holds only streaming pieces, takes the reports that follow for up to
/// [`DELTA_GATHER`], until the batch is full or holds something else.
async fn gather_deltas(events: &mut mpsc::Receiver<BackendEvent>, batch: &mut Vec<BackendEvent>) {
    let is_delta = |report: &BackendEvent| matches!(&report.update, Update::Event { kind, .. } if kind.is_delta());
    let until = tokio::time::Instant::now() + DELTA_GATHER;
    let mut checked = 0;
    while batch.len() < APPLY_BATCH && batch[checked..].iter().all(is_delta) {
        checked = batch.len();
        let room = APPLY_BATCH - batch.len();
        match tokio::time::timeout_at(until, events.recv_many(batch, room)).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

impl JobManager {
    /// What each turn `batch` ends left changed in its job's worktree. Read before the batch is
    /// applied, so git never runs under the state lock.
    async fn worktree_changes(&self, batch: &[BackendEvent]) -> HashMap<JobTurn, Changes> {
        let ends = |report: &&BackendEvent| matches!(report.update, Update::TurnEnded(_));
        // Most batches end no turn (a flood's are all deltas): they take no lock here.
        if !batch.iter().any(|report| ends(&report)) {
            return HashMap::new();
        }
        let ended: Vec<(JobTurn, Worktree)> = {
            let state = self.inner.lock();
            batch
                .iter()
                .filter(ends)
                .filter_map(|report| {
                    let job = state.jobs.get(&report.turn.job)?;
                    Some((report.turn.clone(), job.record.live_worktree()?.clone()))
                })
                .collect()
        };
        let mut changes = HashMap::new();
        for (turn, worktree) in ended {
            match worktree::changes(&worktree).await {
                Ok(found) => {
                    changes.insert(turn, found);
                }
                Err(e) => {
                    tracing::warn!(%turn, error = %e, "could not read the worktree's changes")
                }
            }
        }
        changes
    }

    /// Applies a batch of the backend's reports, saved as one transaction; a turn's end carries
    /// what it left changed in its worktree, from `changes`.
    async fn apply(&self, batch: Vec<BackendEvent>, mut changes: HashMap<JobTurn, Changes>) {
        let mut touched: Vec<JobTurn> = Vec::new();
        let applied = self.transact(|tx| {
            for BackendEvent { turn, update } in batch {
                let runs = tx
                    .job(&turn.job)
                    .is_ok_and(|j| j.takes_reports_for(turn.turn));
                if !runs {
                    tracing::debug!(%turn, ?update, "report for a turn that is not running; dropped");
                    continue;
                }
                if !touched.contains(&turn) {
                    touched.push(turn.clone());
                }
                let changed = match update {
                    Update::TurnEnded(_) => changes.remove(&turn),
                    _ => None,
                };
                apply_one(tx, &turn, update, changed)?;
            }
            Ok(())
        }).await;
        match applied {
            Ok(after) => self.publish_and_dispatch(after),
            Err(e) => self.fail_unsaved(touched, &e).await,
        }
    }

    /// Nothing of a batch was saved: stop each turn it touched, once, rather than let it run on
    /// with a record that has holes. A turn whose failure cannot be saved either stays
    /// `running` with the reason as its `error`, takes no more reports, and is failed as soon as
    /// a save succeeds.
    async fn fail_unsaved(&self, turns: Vec<JobTurn>, e: &JobError) {
        tracing::error!(error = %e, "could not save Codex's events; failing their turns");
        let problem = match e {
            JobError::Store(e) => e.problem().to_string(),
            other => other.to_string(),
        };
        let reason = format!("the job store could not save Codex's events ({problem})");
        for turn in turns {
            let settled = self
                .transact(|tx| {
                    tx.settle(
                        &turn,
                        Outcome::Failed,
                        EventKind::TurnFailed,
                        reason.clone(),
                    )
                    .map(drop)
                })
                .await;
            match settled {
                Ok(after) => self.publish_and_dispatch(after),
                Err(again) => {
                    tracing::error!(%turn, error = %again, "could not save the failure either");
                    self.change_unsaved(|state| {
                        if let Some(job) = state.jobs.get_mut(&turn.job)
                            && job.takes_reports_for(turn.turn)
                        {
                            job.unsaved_failure = Some(reason.clone());
                            self.inner.unsaved.store(true, Ordering::SeqCst);
                        }
                    })
                    .await;
                }
            }
            let manager = self.clone();
            self.inner.tasks.spawn(async move {
                let grace = manager.inner.settings.cancel_grace;
                let stopped =
                    tokio::time::timeout(grace, manager.inner.backend.interrupt(&turn)).await;
                if !matches!(stopped, Ok(Ok(()))) {
                    tracing::warn!(%turn, "could not tell Codex to stop the unsaved turn");
                }
            });
        }
    }

    /// Settles the turns whose failure could not be saved earlier, now that saves may work.
    pub(super) async fn retry_unsaved_failures(&self) {
        if !self.inner.unsaved.swap(false, Ordering::SeqCst) {
            return;
        }
        let pending: Vec<(JobTurn, String)> = {
            let state = self.inner.lock();
            state
                .jobs
                .values()
                .filter_map(|j| Some((j.turn(), j.unsaved_failure.clone()?)))
                .collect()
        };
        for (turn, reason) in pending {
            let settled = self
                .transact(|tx| {
                    tx.settle(&turn, Outcome::Failed, EventKind::TurnFailed, reason)
                        .map(drop)
                })
                .await;
            match settled {
                Ok(after) => self.publish_and_dispatch(after),
                Err(e) => {
                    tracing::debug!(%turn, error = %e, "the store still cannot save");
                    self.inner.unsaved.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

/// One report of the backend, as a change to its running turn; a turn's end with what it left
/// `changed` in the job's worktree.
fn apply_one(
    tx: &mut Tx<'_>,
    turn: &JobTurn,
    update: Update,
    changed: Option<Changes>,
) -> Result<(), JobError> {
    let job = &turn.job;
    match update {
        Update::Event { kind, data } => tx.record(job, kind, data),
        Update::Thread { thread_id, data } => {
            tx.name_thread(job, thread_id)?;
            tx.record(job, EventKind::ThreadStarted, data)
        }
        Update::Request { request, reply } => {
            let entry = tx.job(job)?;
            // A turn being stopped asks nobody: the request is cancelled with it.
            let answer_now = match &entry.stop {
                Some(stop) => Some((Answer::just(Decision::Cancel), stop.decided_by())),
                None => requests::policy_answer(&request, entry.record.approvals)
                    .map(|answer| (answer, DecidedBy::Policy)),
            };
            tx.request(turn, request, Reply::new(reply), answer_now)
        }
        Update::TurnEnded(end) => {
            let entry = tx.job(job)?;
            let (stop, schema) = (entry.stop.clone(), entry.output_schema.take());
            let (outcome, kind, mut data, mut announce) =
                closing(end, stop.as_ref(), schema.as_ref());
            if let (Some(changed), Value::Object(fields)) = (&changed, &mut data) {
                let value = serde_json::to_value(changed).unwrap_or_default();
                fields.insert("changes".into(), value);
            }
            announce.changes = changed;
            tx.end_turn(turn, outcome, kind, data, announce).map(drop)
        }
    }
}

/// A turn that completed after it was asked for output following `schema`: its result parsed,
/// or, when the output misses the schema, the turn as failed, saying how.
fn check_output(end: TurnEnd, schema: Option<&Value>) -> (TurnEnd, Option<Value>) {
    match (end, schema) {
        (TurnEnd::Completed { result, data }, Some(schema)) => {
            match output::parse(result.as_deref(), schema) {
                Ok(parsed) => (TurnEnd::Completed { result, data }, Some(parsed)),
                Err(mismatch) => {
                    let error = format!(
                        "Codex's final message does not match output_schema: {mismatch} \
                         (job_result reads the message)"
                    );
                    (TurnEnd::Failed { error, data }, None)
                }
            }
        }
        (end, _) => (end, None),
    }
}

/// How a turn Codex ended is recorded: its outcome, closing event and announcement. An
/// interruption we asked for ends the way the stop says (cancelled, or failed on its time limit).
/// A turn asked for output following `schema` completes with it parsed as `result_json`, or
/// fails saying how the output missed it.
fn closing(
    end: TurnEnd,
    stop: Option<&Stop>,
    schema: Option<&Value>,
) -> (Outcome, EventKind, Value, Announce) {
    let (end, result_json) = check_output(end, schema);
    match (end, stop) {
        (TurnEnd::Completed { result, data }, _) => {
            let mut fields = json!({"result": result});
            if let Some(parsed) = &result_json {
                fields["result_json"] = parsed.clone();
            }
            (
                Outcome::Completed,
                EventKind::TurnCompleted,
                merge(fields, data),
                Announce {
                    result,
                    result_json,
                    ..Announce::default()
                },
            )
        }
        (TurnEnd::Failed { error, data }, _) => (
            Outcome::Failed,
            EventKind::TurnFailed,
            merge(json!({"error": error}), data),
            Announce {
                error: Some(error),
                ..Announce::default()
            },
        ),
        (TurnEnd::Interrupted { reason, data }, Some(stop)) => {
            let (outcome, kind) = stop.outcome();
            let reason = format!("{}; Codex: {reason}", stop.reason());
            let error = (outcome != Outcome::Cancelled).then(|| reason.clone());
            (
                outcome,
                kind,
                merge(json!({"reason": reason}), data),
                Announce {
                    error,
                    ..Announce::default()
                },
            )
        }
        (TurnEnd::Interrupted { reason, data }, None) => {
            let reason = format!("Codex stopped the turn: {reason}");
            (
                Outcome::Interrupted,
                EventKind::TurnInterrupted,
                merge(json!({"reason": reason}), data),
                Announce {
                    error: Some(reason),
                    ..Announce::default()
                },
            )
        }
    }
}

/// `fields` with the keys of `extra` added.
fn merge(fields: Value, extra: Value) -> Value {
    match (fields, extra) {
        (Value::Object(mut fields), Value::Object(extra)) => {
            fields.extend(extra);
            Value::Object(fields)
        }
        (fields, _) => fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interruption_is_a_cancel_only_when_a_cancel_asked_for_it() {
        let end = || TurnEnd::Interrupted {
            reason: "interrupted".into(),
            data: json!({}),
        };
        let stop = Stop::Cancel("cancelled with job_cancel".into());
        let (outcome, kind, _, announce) = closing(end(), Some(&stop), None);
        assert_eq!(
            (outcome, kind),
            (Outcome::Cancelled, EventKind::TurnCancelled)
        );
        assert!(announce.error.is_none());
        let (outcome, kind, data, announce) = closing(end(), None, None);
        assert_eq!(
            (outcome, kind),
            (Outcome::Interrupted, EventKind::TurnInterrupted)
        );
        assert_eq!(data["reason"], "Codex stopped the turn: interrupted");
        assert_eq!(
            announce.error.as_deref(),
            Some("Codex stopped the turn: interrupted")
        );
    }

    #[test]
    fn an_interruption_for_the_time_limit_is_a_failure_that_says_so() {
        let end = TurnEnd::Interrupted {
            reason: "interrupted".into(),
            data: json!({}),
        };
        let stop = Stop::TimeLimit(std::time::Duration::from_secs(60));
        let (outcome, kind, _, announce) = closing(end, Some(&stop), None);
        assert_eq!((outcome, kind), (Outcome::Failed, EventKind::TurnFailed));
        let error = announce.error.unwrap_or_default();
        assert!(error.contains("max_turn_seconds (60 s"), "{error}");
    }

    #[test]
    fn a_completed_turn_announces_its_result_and_keeps_codex_fields() {
        let end = TurnEnd::Completed {
            result: Some("done".into()),
            data: json!({"codex": {"x": 1}}),
        };
        let (outcome, kind, data, announce) = closing(end, None, None);
        assert_eq!(
            (outcome, kind),
            (Outcome::Completed, EventKind::TurnCompleted)
        );
        assert_eq!(data, json!({"result": "done", "codex": {"x": 1}}));
        assert_eq!(announce.result.as_deref(), Some("done"));
    }
}
