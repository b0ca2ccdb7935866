//! The engine's transitions, driven by an in-process backend that the test scripts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::json;
use tokio::sync::mpsc;

use super::*;
use crate::codex::{
    Backend, BackendError, BackendEvent, BackendInfo, ThreadRef, TurnEnd, TurnInput, Update,
};
use crate::store::{EventPage, EventQuery, Loaded, SqliteStore, Store, StoreError, Write};

/// Records what the engine asked for; `refuse_turns` makes `start_turn` fail.
#[derive(Default)]
struct Scripted {
    started: Mutex<Vec<(JobId, TurnInput)>>,
    interrupted: Mutex<Vec<JobId>>,
    refuse_turns: bool,
    /// Where an interrupt's confirmation goes, if Codex is to confirm it.
    confirm_interrupts: Option<mpsc::Sender<BackendEvent>>,
}

impl Backend for Scripted {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "scripted",
            codex_version: "0".into(),
        }
    }

    fn validate(&self, _: &ThreadOptions) -> Result<(), String> {
        Ok(())
    }

    fn start_turn<'a>(
        &'a self,
        job: &'a JobId,
        input: TurnInput,
    ) -> BoxFuture<'a, Result<Option<String>, BackendError>> {
        async move {
            if self.refuse_turns {
                return Err(BackendError::Io("broken pipe".into()));
            }
            self.started.lock().unwrap().push((job.clone(), input));
            Ok(None)
        }
        .boxed()
    }

    fn can_continue<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), String>> {
        async { Ok(()) }.boxed()
    }

    fn interrupt<'a>(&'a self, job: &'a JobId) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            self.interrupted.lock().unwrap().push(job.clone());
            if let Some(events) = &self.confirm_interrupts {
                let end = TurnEnd::Interrupted {
                    reason: "interrupted".into(),
                    data: json!({}),
                };
                let _ = events
                    .send(BackendEvent {
                        job: job.clone(),
                        update: Update::TurnEnded(end),
                    })
                    .await;
            }
            Ok(())
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async {}.boxed()
    }
}

/// A store whose next `failures` writes fail, as on a full disk.
struct FlakyStore {
    inner: SqliteStore,
    failures: std::sync::atomic::AtomicUsize,
}

impl FlakyStore {
    fn fail_next(&self, writes: usize) {
        self.failures
            .store(writes, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Store for FlakyStore {
    fn write(&self, batch: &[Write]) -> Result<(), StoreError> {
        let failing = self
            .failures
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok();
        if failing {
            return Err(StoreError::Write("database or disk is full".into()));
        }
        self.inner.write(batch)
    }

    fn read_events(&self, job: &JobId, query: &EventQuery) -> Result<EventPage, StoreError> {
        self.inner.read_events(job, query)
    }

    fn read_notifications(
        &self,
        after: u64,
        job: Option<&JobId>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        self.inner.read_notifications(after, job, limit)
    }

    fn load(&self) -> Result<Loaded, StoreError> {
        self.inner.load()
    }
}

fn flaky_engine() -> (
    JobManager,
    Arc<FlakyStore>,
    mpsc::Sender<BackendEvent>,
    tempfile::TempDir,
) {
    let (events, rx) = crate::codex::event_channel();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FlakyStore {
        inner: SqliteStore::open(&dir.path().join("jobs.sqlite")).unwrap(),
        failures: std::sync::atomic::AtomicUsize::new(0),
    });
    let settings = EngineSettings {
        max_concurrent_jobs: 4,
        cancel_grace: Duration::from_millis(200),
        default_cwd: std::env::temp_dir(),
        retention: Duration::from_secs(3600),
    };
    let manager =
        JobManager::open(store.clone(), Arc::new(Scripted::default()), settings, rx).unwrap();
    (manager, store, events, dir)
}

struct Engine {
    manager: JobManager,
    backend: Arc<Scripted>,
    events: mpsc::Sender<BackendEvent>,
    dir: Arc<tempfile::TempDir>,
}

fn engine(
    max_concurrent_jobs: usize,
    script: impl FnOnce(&mut Scripted, &mpsc::Sender<BackendEvent>),
) -> Engine {
    engine_in(
        Arc::new(tempfile::tempdir().unwrap()),
        max_concurrent_jobs,
        script,
    )
}

/// An engine on the store in `dir`, as a server started on that state directory.
fn engine_in(
    dir: Arc<tempfile::TempDir>,
    max_concurrent_jobs: usize,
    script: impl FnOnce(&mut Scripted, &mpsc::Sender<BackendEvent>),
) -> Engine {
    let (events, rx) = crate::codex::event_channel();
    let mut backend = Scripted::default();
    script(&mut backend, &events);
    let backend = Arc::new(backend);
    let settings = EngineSettings {
        max_concurrent_jobs,
        cancel_grace: Duration::from_millis(200),
        default_cwd: std::env::temp_dir(),
        retention: Duration::from_secs(3600),
    };
    let store = SqliteStore::open(&dir.path().join("jobs.sqlite")).unwrap();
    let manager = JobManager::open(Arc::new(store), backend.clone(), settings, rx).unwrap();
    Engine {
        manager,
        backend,
        events,
        dir,
    }
}

fn start(prompt: &str) -> StartRequest {
    StartRequest {
        prompt: prompt.into(),
        ..StartRequest::default()
    }
}

impl Engine {
    async fn report(&self, job: &JobId, update: Update) {
        self.events
            .send(BackendEvent {
                job: job.clone(),
                update,
            })
            .await
            .unwrap();
    }

    async fn complete(&self, job: &JobId, result: &str) {
        let end = TurnEnd::Completed {
            result: Some(result.into()),
            data: json!({}),
        };
        self.report(job, Update::TurnEnded(end)).await;
        self.manager
            .wait(None, Some(job.as_str()), Duration::from_secs(5))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_job_past_the_limit_queues_and_starts_when_a_slot_frees() {
    let e = engine(1, |_, _| {});
    let first = e.manager.start(start("one")).await.unwrap();
    let second = e.manager.start(start("two")).await.unwrap();
    assert_eq!(first.status, JobStatus::Running);
    assert_eq!(second.status, JobStatus::Queued);
    assert_eq!(e.backend.started.lock().unwrap().len(), 1);

    e.complete(&first.job_id, "done").await;
    let list = e.manager.list(Some(JobStatus::Running), 10);
    assert_eq!(list[0].job_id, second.job_id);
    // The queued turn is handed over by a task of its own: let it run.
    for _ in 0..100 {
        if e.backend.started.lock().unwrap().len() == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(e.backend.started.lock().unwrap()[1].0, second.job_id);
}

#[tokio::test]
async fn cancelling_a_queued_job_settles_it_without_asking_codex() {
    let e = engine(1, |_, _| {});
    e.manager.start(start("one")).await.unwrap();
    let queued = e.manager.start(start("two")).await.unwrap();
    let cancelled = e.manager.cancel(queued.job_id.as_str()).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(e.backend.interrupted.lock().unwrap().is_empty());
    assert_eq!(
        e.backend.started.lock().unwrap().len(),
        1,
        "never handed to Codex"
    );
}

#[tokio::test]
async fn a_confirmed_interrupt_settles_the_job_as_cancelled() {
    let e = engine(4, |backend, events| {
        backend.confirm_interrupts = Some(events.clone());
    });
    let job = e.manager.start(start("long")).await.unwrap();
    let cancelled = e.manager.cancel(job.job_id.as_str()).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    let page = e
        .manager
        .events(
            job.job_id.as_str(),
            &EventQuery {
                limit: 10,
                ..EventQuery::default()
            },
        )
        .unwrap();
    let last = page.events.last().unwrap();
    assert_eq!(last.kind, EventKind::TurnCancelled);
    assert!(
        last.data["reason"]
            .as_str()
            .unwrap()
            .contains("Codex: interrupted")
    );
}

#[tokio::test]
async fn an_interrupt_codex_does_not_confirm_is_settled_after_the_grace() {
    let e = engine(4, |_, _| {});
    let job = e.manager.start(start("long")).await.unwrap();
    let cancelled = e.manager.cancel(job.job_id.as_str()).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    // A late word from Codex about that turn changes nothing.
    let end = TurnEnd::Interrupted {
        reason: "interrupted".into(),
        data: json!({}),
    };
    e.report(&job.job_id, Update::TurnEnded(end)).await;
    let listed = e.manager.list(None, 10);
    assert_eq!(listed[0].status, JobStatus::Cancelled);
}

#[tokio::test]
async fn an_interruption_nobody_asked_for_is_interrupted_not_cancelled() {
    let e = engine(4, |_, _| {});
    let job = e.manager.start(start("long")).await.unwrap();
    let end = TurnEnd::Interrupted {
        reason: "interrupted".into(),
        data: json!({}),
    };
    e.report(&job.job_id, Update::TurnEnded(end)).await;
    let settled = e
        .manager
        .wait(None, Some(job.job_id.as_str()), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(settled.notifications[0].status, JobStatus::Interrupted);
}

#[tokio::test]
async fn a_turn_codex_would_not_take_fails_the_job_with_the_reason() {
    let e = engine(4, |backend, _| backend.refuse_turns = true);
    let job = e.manager.start(start("x")).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.error.unwrap().contains("broken pipe"));
}

#[tokio::test]
async fn reply_uses_the_thread_codex_named_and_counts_the_turn() {
    let e = engine(4, |_, _| {});
    let job = e.manager.start(start("one")).await.unwrap();
    let thread = Update::Thread {
        thread_id: "t-1".into(),
        data: json!({}),
    };
    e.report(&job.job_id, thread).await;
    e.complete(&job.job_id, "done").await;
    let replied = e
        .manager
        .reply(job.job_id.as_str(), "two".into())
        .await
        .unwrap();
    assert_eq!(replied.turn, 2);
    let started = e.backend.started.lock().unwrap();
    assert!(matches!(&started[1].1.thread, ThreadRef::Existing(t) if t == "t-1"));
}

#[tokio::test]
async fn reply_to_a_job_codex_never_gave_a_thread_is_refused() {
    let e = engine(4, |_, _| {});
    let job = e.manager.start(start("one")).await.unwrap();
    e.complete(&job.job_id, "done").await;
    let refused = e.manager.reply(job.job_id.as_str(), "two".into()).await;
    assert!(matches!(refused, Err(JobError::NoThread { .. })));
}

#[tokio::test]
async fn the_feed_pages_with_its_cursor() {
    let e = engine(4, |_, _| {});
    for prompt in ["a", "b", "c"] {
        let job = e.manager.start(start(prompt)).await.unwrap();
        e.complete(&job.job_id, prompt).await;
    }
    let (first, cursor) = e.manager.notifications(0, None, 2).unwrap();
    assert_eq!(first.iter().map(|n| n.seq).collect::<Vec<_>>(), [1, 2]);
    let (rest, cursor) = e.manager.notifications(cursor, None, 2).unwrap();
    assert_eq!(rest.iter().map(|n| n.seq).collect::<Vec<_>>(), [3]);
    assert_eq!(cursor, 3);
    let (none, _) = e.manager.notifications(cursor, None, 2).unwrap();
    assert!(none.is_empty());
    assert!(matches!(
        e.manager.notifications(4, None, 2),
        Err(JobError::FeedCursorOutOfRange { cursor: 4, last: 3 })
    ));
}

#[tokio::test]
async fn shutdown_settles_running_jobs_as_interrupted() {
    let e = engine(4, |_, _| {});
    let job = e.manager.start(start("long")).await.unwrap();
    e.manager.shutdown().await;
    let listed = e.manager.list(None, 10);
    assert_eq!(listed[0].job_id, job.job_id);
    assert_eq!(listed[0].status, JobStatus::Interrupted);
    assert!(matches!(
        e.manager.start(start("late")).await,
        Err(JobError::ShuttingDown)
    ));
}

#[tokio::test]
async fn after_a_restart_everything_reads_back_and_unfinished_turns_are_interrupted() {
    let first = engine(4, |_, _| {});
    let done = first.manager.start(start("done")).await.unwrap();
    let message = Update::Event {
        kind: EventKind::AgentMessage,
        data: json!({"text": "hi"}),
    };
    first.report(&done.job_id, message).await;
    first.complete(&done.job_id, "hi").await;
    let running = first.manager.start(start("running")).await.unwrap();
    let query = EventQuery {
        limit: 100,
        include_deltas: true,
        ..EventQuery::default()
    };
    let events_before = first
        .manager
        .events(done.job_id.as_str(), &query)
        .unwrap()
        .events;
    let (feed_before, _) = first.manager.notifications(0, None, 100).unwrap();
    // The first server vanishes without a word, as a killed process would.
    let dir = first.dir.clone();
    drop(first);

    let second = engine_in(dir, 4, |_, _| {});
    let listed = second.manager.list(None, 10);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].job_id, running.job_id);
    assert_eq!(listed[0].status, JobStatus::Interrupted);
    assert_eq!(listed[1].status, JobStatus::Completed);
    let events_after = second
        .manager
        .events(done.job_id.as_str(), &query)
        .unwrap()
        .events;
    assert_eq!(events_after, events_before);
    let (feed_after, _) = second.manager.notifications(0, None, 100).unwrap();
    assert_eq!(feed_after[..feed_before.len()], feed_before[..]);
    let interrupted = feed_after.last().unwrap();
    assert_eq!(interrupted.job_id, running.job_id);
    assert_eq!(interrupted.seq, feed_before.last().unwrap().seq + 1);
    assert!(
        interrupted
            .error
            .as_ref()
            .unwrap()
            .contains("restarted or it crashed")
    );
    let last = second
        .manager
        .events(running.job_id.as_str(), &query)
        .unwrap()
        .events;
    assert_eq!(last.last().unwrap().kind, EventKind::TurnInterrupted);
    // New jobs get new ids and the feed counts on.
    let next = second.manager.start(start("next")).await.unwrap();
    assert!(next.job_id != done.job_id && next.job_id != running.job_id);
    second.complete(&next.job_id, "ok").await;
    let (feed, _) = second
        .manager
        .notifications(interrupted.seq, None, 10)
        .unwrap();
    assert_eq!(feed[0].seq, interrupted.seq + 1);
}

#[tokio::test]
async fn expired_settled_jobs_are_deleted_with_their_feed_entries_and_running_ones_kept() {
    let e = engine(4, |_, _| {});
    let old = e.manager.start(start("old")).await.unwrap();
    e.complete(&old.job_id, "old").await;
    let running = e.manager.start(start("running")).await.unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    assert_eq!(e.manager.purge_updated_before(later).unwrap(), 1);
    let listed = e.manager.list(None, 10);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].job_id, running.job_id);
    let (feed, _) = e.manager.notifications(0, None, 10).unwrap();
    assert!(feed.is_empty());
    assert!(matches!(
        e.manager
            .events(old.job_id.as_str(), &EventQuery::default()),
        Err(JobError::UnknownJob(_))
    ));
}

#[tokio::test]
async fn a_save_that_fails_fails_the_call_loudly_changes_nothing_and_the_server_goes_on() {
    let (manager, store, _events, _dir) = flaky_engine();
    store.fail_next(1);
    let Err(JobError::Store(e)) = manager.start(start("lost")).await else {
        panic!("the start should have failed")
    };
    assert!(e.to_string().contains("full"), "{e}");
    assert!(manager.list(None, 10).is_empty(), "no job half made");
    let job = manager.start(start("kept")).await.unwrap();
    assert_eq!(job.status, JobStatus::Running);
}

#[tokio::test]
async fn codex_events_that_cannot_be_saved_fail_the_job_with_the_reason() {
    let (manager, store, events, _dir) = flaky_engine();
    let job = manager.start(start("x")).await.unwrap();
    store.fail_next(1);
    let message = Update::Event {
        kind: EventKind::AgentMessage,
        data: json!({"text": "unsaved"}),
    };
    events
        .send(BackendEvent {
            job: job.job_id.clone(),
            update: message,
        })
        .await
        .unwrap();
    let settled = manager
        .wait(None, Some(job.job_id.as_str()), Duration::from_secs(5))
        .await
        .unwrap();
    let note = &settled.notifications[0];
    assert_eq!(note.status, JobStatus::Failed);
    assert!(
        note.error
            .as_ref()
            .unwrap()
            .contains("could not save Codex's events")
    );
    let query = EventQuery {
        limit: 10,
        ..EventQuery::default()
    };
    let recorded = manager.events(job.job_id.as_str(), &query).unwrap().events;
    let seqs: Vec<u64> = recorded.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=recorded.len() as u64).collect::<Vec<_>>(),
        "no hole"
    );
    assert!(recorded.iter().all(|e| e.kind != EventKind::AgentMessage));
}
