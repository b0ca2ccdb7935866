//! The read side: pages of a job's events, the global feed of notifications, and waiting on
//! either.
//!
//! Pages come from memory when it holds them whole (the newest events of a job that runs, the
//! newest feed entries: what a client following along asks for), else from the store; the
//! state is consulted for cursors and statuses. A cursor handed out is never behind the entries
//! of the same answer, so the next page never repeats them, and never past what the state knows:
//! the store may already hold a change that is saved and not yet made, and an answer shows
//! nothing of it.
//! Waiters sleep on the feed's `watch` and wake only when it moves; a wait for one job looks at
//! that job in memory before it reads the store. A follower waiting for a job's next events
//! sleeps on the engine's `events_recorded` instead, which moves with every change that saves
//! events. Every wait ends when its caller leaves.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::JobError;
use super::api::{EventsAnswer, JobSnapshot, TurnText, WaitAnswer};
use super::manager::JobManager;
use crate::model::{Event, EventKind, EventQuery, JobId, JobStatus, Notification};

/// How many entries one wait returns at most.
const WAIT_LIMIT: usize = 100;

impl JobManager {
    /// A page of the job's events, with the job's state as it was after the page was read: from
    /// memory when it holds the page (a client following a running job), else from the store.
    pub async fn events(&self, job: &str, query: &EventQuery) -> Result<EventsAnswer, JobError> {
        let id = JobId::from(job);
        {
            let state = self.inner.lock();
            let last = state.job(&id)?.record.last_seq;
            if query.after > last {
                return Err(JobError::EventCursorOutOfRange {
                    job: id,
                    cursor: query.after,
                    last,
                });
            }
            // One more than asked for, as the store reads: it says whether there is more.
            let (wanted, limit) = (|e: &Event| query.matches(e), query.limit.saturating_add(1));
            let kept = match state.events.get(&id) {
                Some(run) => run.after(query.after, last, wanted, limit),
                None => (query.after == last).then(Vec::new),
            };
            if let Some(mut events) = kept {
                let has_more = events.len() > query.limit;
                events.truncate(query.limit);
                return Ok(EventsAnswer {
                    cursor: match events.last() {
                        Some(event) if has_more => event.seq,
                        _ => last,
                    },
                    events,
                    has_more,
                    snapshot: state.snapshot(&id)?,
                });
            }
        }
        let mut page = self.inner.store.read_events(&id, query).await?;
        let snapshot = self.inner.lock().snapshot(&id)?;
        let all_known = keep_known(&mut page.events, |e| e.seq, snapshot.cursor);
        Ok(EventsAnswer {
            events: page.events,
            cursor: page.cursor.min(snapshot.cursor),
            has_more: page.has_more || !all_known,
            snapshot,
        })
    }

    /// A page of the job's events as [`Self::events`] reads it; but while the page would be
    /// empty and the job is queued or running, it waits for the next events the query shows, at
    /// most `timeout`, or until `cancelled` (the caller left). A client following a stream so
    /// gets each batch the moment it is saved, in one call, instead of polling for it.
    pub async fn events_when_any(
        &self,
        job: &str,
        query: &EventQuery,
        timeout: Duration,
        cancelled: &CancellationToken,
    ) -> Result<EventsAnswer, JobError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut recorded = self.inner.events_recorded.subscribe();
        let mut query = query.clone();
        loop {
            recorded.borrow_and_update();
            let page = self.events(job, &query).await?;
            let active = matches!(page.snapshot.status, JobStatus::Queued | JobStatus::Running);
            if !page.events.is_empty() || page.has_more || !active {
                return Ok(page);
            }
            // Events the query does not show moved the cursor: look on from there.
            query.after = page.cursor;
            tokio::select! {
                changed = recorded.changed() => {
                    if changed.is_err() {
                        return Ok(page);
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Ok(page),
                () = cancelled.cancelled() => return Err(JobError::Cancelled),
            }
        }
    }

    /// The final message of the job's `turn` (default: its latest), whole.
    pub async fn turn_text(&self, job: &str, turn: Option<u32>) -> Result<TurnText, JobError> {
        let id = JobId::from(job);
        let (turns, status) = {
            let state = self.inner.lock();
            let record = &state.job(&id)?.record;
            (record.turns, record.status)
        };
        let turn = turn.unwrap_or(turns);
        if turn == 0 || turn > turns {
            return Err(JobError::InvalidArgument(format!(
                "job {id} has turns 1 to {turns}; pass one of them as turn, or leave it out for \
                 the latest"
            )));
        }
        let of_turn = |types: Vec<EventKind>, limit: usize| EventQuery {
            types: Some(types),
            turn: Some(turn),
            limit,
            ..EventQuery::default()
        };
        let ends = [
            (EventKind::TurnCompleted, JobStatus::Completed),
            (EventKind::TurnFailed, JobStatus::Failed),
            (EventKind::TurnCancelled, JobStatus::Cancelled),
            (EventKind::TurnInterrupted, JobStatus::Interrupted),
        ];
        let end = self
            .inner
            .store
            .read_events(&id, &of_turn(ends.iter().map(|(k, _)| *k).collect(), 1))
            .await?
            .events
            .pop();
        let status = match &end {
            Some(end) => ends
                .iter()
                .find(|(kind, _)| *kind == end.kind)
                .map_or(status, |(_, status)| *status),
            // Not ended: the turn is the job's current one.
            None => status,
        };
        // Why a turn that did not complete ended: its failure's error, else its reason.
        let error = end
            .as_ref()
            .filter(|e| e.kind != EventKind::TurnCompleted)
            .and_then(|e| e.data.get("error").or_else(|| e.data.get("reason")))
            .and_then(|why| why.as_str().map(str::to_owned));
        let usage = end
            .as_ref()
            .and_then(|e| e.data.get("usage"))
            .and_then(|u| serde_json::from_value(u.clone()).ok());
        let result = end
            .filter(|e| e.kind == EventKind::TurnCompleted)
            .and_then(|e| {
                e.data
                    .get("result")
                    .and_then(|r| r.as_str().map(str::to_owned))
            });
        let text = match result {
            Some(result) => result,
            None => self
                .inner
                .store
                .read_events(&id, &of_turn(vec![EventKind::AgentMessage], 10_000))
                .await?
                .events
                .pop()
                .and_then(|e| {
                    e.data
                        .get("text")
                        .and_then(|t| t.as_str().map(str::to_owned))
                })
                .unwrap_or_default(),
        };
        Ok(TurnText {
            job_id: id,
            turn,
            status,
            text,
            error,
            usage,
        })
    }

    /// The job as it stands now.
    pub fn snapshot(&self, job: &str) -> Result<JobSnapshot, JobError> {
        self.inner.lock().snapshot(&JobId::from(job))
    }

    /// Feed entries after `cursor`, for one job or all; never waits.
    pub async fn notifications(
        &self,
        cursor: u64,
        job: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Notification>, u64), JobError> {
        let (last, job) = {
            let state = self.inner.lock();
            let job = job.map(|j| state.job(&JobId::from(j)).map(|e| e.record.id.clone()));
            (state.last_notification, job.transpose()?)
        };
        if cursor > last {
            return Err(JobError::FeedCursorOutOfRange { cursor, last });
        }
        let (found, made) = self.feed_after(cursor, job.as_ref(), limit).await?;
        let newest = found.last().map_or(cursor, |n| n.seq);
        let next = if found.len() == limit || !made {
            newest
        } else {
            // Nothing more matched up to `last` when it was read; entries saved since then may
            // be in `found` already, and the cursor must not fall behind them.
            last.max(newest)
        };
        Ok((found, next))
    }

    /// Waits until the feed has an entry past `cursor` (for `job` if given), at most `timeout`,
    /// or until `cancelled` (the caller left).
    ///
    /// Without a cursor it waits for the next entry from now, except that a job that is already
    /// settled, or waits for an answer to Codex's request, answers at once with its latest entry.
    pub async fn wait(
        &self,
        cursor: Option<u64>,
        job: Option<&str>,
        timeout: Duration,
        cancelled: &CancellationToken,
    ) -> Result<WaitAnswer, JobError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut feed = self.inner.feed.subscribe();
        let (after, job) = {
            let state = self.inner.lock();
            let last = state.last_notification;
            let job = match job {
                Some(j) => Some(state.job(&JobId::from(j))?),
                None => None,
            };
            match (cursor, job) {
                (Some(cursor), _) if cursor > last => {
                    return Err(JobError::FeedCursorOutOfRange { cursor, last });
                }
                (Some(cursor), job) => (cursor, job.map(|j| j.record.id.clone())),
                // A job that waits for an answer is news now too.
                (None, Some(j)) => match j.last_notification {
                    Some(seq)
                        if j.record.status.is_settled()
                            || j.record.status == JobStatus::InputRequired =>
                    {
                        (seq - 1, Some(j.record.id.clone()))
                    }
                    _ => (last, Some(j.record.id.clone())),
                },
                (None, None) => (last, None),
            }
        };
        loop {
            let last = *feed.borrow_and_update();
            if self.may_have_news(job.as_ref(), after) {
                let (found, _) = self.feed_after(after, job.as_ref(), WAIT_LIMIT).await?;
                if let Some(newest) = found.last() {
                    return Ok(WaitAnswer {
                        cursor: newest.seq,
                        notifications: found,
                        timed_out: false,
                    });
                }
            }
            let timed_out = |last: u64| WaitAnswer {
                notifications: Vec::new(),
                cursor: last.max(after),
                timed_out: true,
            };
            tokio::select! {
                changed = feed.changed() => {
                    if changed.is_err() {
                        return Ok(timed_out(last));
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Ok(timed_out(last)),
                () = cancelled.cancelled() => return Err(JobError::Cancelled),
            }
        }
    }

    /// Feed entries after `after`, for `job` or all, at most `limit`: from memory when it holds
    /// them all, else from the store. Only entries of changes that are made; and whether the
    /// store held none that were not.
    async fn feed_after(
        &self,
        after: u64,
        job: Option<&JobId>,
        limit: usize,
    ) -> Result<(Vec<Notification>, bool), JobError> {
        let kept = {
            let state = self.inner.lock();
            let of_job = |n: &Notification| job.is_none_or(|j| n.job_id == *j);
            (state.recent).after(after, state.last_notification, of_job, limit)
        };
        if let Some(found) = kept {
            return Ok((found, true));
        }
        let mut found = (self.inner.store)
            .read_notifications(after, job, limit)
            .await?;
        let last = self.inner.lock().last_notification;
        let all_known = keep_known(&mut found, |n| n.seq, last);
        Ok((found, all_known))
    }

    /// Whether the store may hold an entry past `after` for `job`: for one job, its newest entry
    /// is known in memory, so waits on other jobs cost no read.
    fn may_have_news(&self, job: Option<&JobId>, after: u64) -> bool {
        let Some(job) = job else { return true };
        match self.inner.lock().jobs.get(job) {
            Some(entry) => entry.last_notification.is_some_and(|seq| seq > after),
            // Deleted meanwhile: the store says there is nothing.
            None => true,
        }
    }
}

/// Keeps the entries, in seq order, that the state knows (seq up to `last`): the store may hold
/// newer ones that are saved and not yet made. Whether it kept them all.
fn keep_known<T>(entries: &mut Vec<T>, seq: impl Fn(&T) -> u64, last: u64) -> bool {
    let known = entries.partition_point(|entry| seq(entry) <= last);
    let all = known == entries.len();
    entries.truncate(known);
    all
}
