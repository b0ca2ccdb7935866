//! The engine's transitions, driven by an in-process backend that the test scripts. Timing
//! logic (the cancel grace) runs on paused tokio time; tests sync on what the engine did (turns
//! handed over, reports taken), never on sleeps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::codex::{
    Backend, BackendError, BackendEvent, BackendInfo, ThreadRef, TurnEnd, TurnInput, Update,
};
use crate::model::{EventPage, JobTurn};
use crate::store::{Loaded, Problem, SqliteStore, Store, StoreError, Write};

/// Records what the engine asked for, and does what the test scripted.
#[derive(Default)]
struct Scripted {
    started: Mutex<Vec<TurnInput>>,
    /// How many hand-overs reached `start_turn`.
    entered: watch::Sender<usize>,
    interrupted: Mutex<Vec<JobTurn>>,
    /// How many interrupts reached the backend.
    interrupts: watch::Sender<usize>,
    refuse_turns: bool,
    /// When set, `start_turn` waits for a permit: the hand-over is in flight until the test
    /// gives one.
    hold_turns: Option<Arc<Semaphore>>,
    /// Where an interrupt's confirmation goes, if Codex is to confirm it.
    confirm_interrupts: Option<mpsc::Sender<BackendEvent>>,
    /// What Codex says as it is stopped at shutdown.
    last_words: Option<(mpsc::Sender<BackendEvent>, Mutex<Vec<BackendEvent>>)>,
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

    fn settings_per_turn(&self) -> bool {
        true
    }

    fn takes_output_schema(&self) -> bool {
        true
    }

    fn start_turn(&self, input: TurnInput) -> BoxFuture<'_, Result<Option<String>, BackendError>> {
        async move {
            self.entered.send_modify(|n| *n += 1);
            if let Some(hold) = &self.hold_turns {
                hold.acquire().await.unwrap().forget();
            }
            if self.refuse_turns {
                return Err(BackendError::Io("broken pipe".into()));
            }
            self.started.lock().unwrap().push(input);
            Ok(None)
        }
        .boxed()
    }

    fn can_continue<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), String>> {
        async { Ok(()) }.boxed()
    }

    fn interrupt<'a>(&'a self, turn: &'a JobTurn) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            self.interrupted.lock().unwrap().push(turn.clone());
            self.interrupts.send_modify(|n| *n += 1);
            if let Some(events) = &self.confirm_interrupts {
                let end = TurnEnd::Interrupted {
                    reason: "interrupted".into(),
                    data: json!({}),
                };
                let _ = events
                    .send(BackendEvent {
                        turn: turn.clone(),
                        update: Update::TurnEnded(end),
                    })
                    .await;
            }
            Ok(())
        }
        .boxed()
    }

    fn forget(&self, _: &JobId) {}

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async {
            if let Some((events, words)) = &self.last_words {
                let words: Vec<BackendEvent> = words.lock().unwrap().drain(..).collect();
                for word in words {
                    events.send(word).await.unwrap();
                }
            }
        }
        .boxed()
    }
}

/// A store whose next `failures` writes fail, as on a full disk, and that can run a write of
/// another transaction just before a read (as a concurrent commit would land).
struct FlakyStore {
    inner: SqliteStore,
    failures: AtomicUsize,
    /// Runs on the store's side right before the next read.
    before_next_read: Mutex<Option<ReadHook>>,
    /// Transactions saved (that changed something).
    saved: AtomicUsize,
    /// Reads of the feed.
    feed_reads: AtomicUsize,
    /// Reads of events.
    event_reads: AtomicUsize,
    /// The next write says it began, then waits for the go-ahead.
    held: Mutex<
        Option<(
            tokio::sync::oneshot::Sender<()>,
            std::sync::mpsc::Receiver<()>,
        )>,
    >,
}

type ReadHook = Box<dyn FnOnce(&SqliteStore) + Send>;

impl FlakyStore {
    fn before_next_read(&self, hook: impl FnOnce(&SqliteStore) + Send + 'static) {
        *self.before_next_read.lock().unwrap() = Some(Box::new(hook));
    }

    /// Saves `write` right before the next read, as a change that is saved and not yet made.
    fn save_before_next_read(&self, write: Write) {
        self.before_next_read(move |store| store.write(&[write]).unwrap());
    }

    fn fail_next(&self, writes: usize) {
        self.failures.store(writes, Ordering::SeqCst);
    }

    /// Holds the next write: the first channel says it began, the second lets it go on.
    fn hold_next_write(
        &self,
    ) -> (
        tokio::sync::oneshot::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (began, beginning) = tokio::sync::oneshot::channel();
        let (go, going) = std::sync::mpsc::channel();
        *self.held.lock().unwrap() = Some((began, going));
        (beginning, go)
    }
}

impl Store for FlakyStore {
    fn write(&self, batch: &[Write]) -> Result<(), StoreError> {
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(StoreError::Write {
                problem: Problem::DiskFull,
                detail: "/secret/path/jobs.sqlite: database or disk is full".into(),
            });
        }
        let held = self.held.lock().unwrap().take();
        if let Some((began, go)) = held {
            began.send(()).unwrap();
            go.recv().unwrap();
        }
        self.inner.write(batch)?;
        if !batch.is_empty() {
            self.saved.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn read_events(&self, job: &JobId, query: &EventQuery) -> Result<EventPage, StoreError> {
        self.event_reads.fetch_add(1, Ordering::SeqCst);
        if let Some(hook) = self.before_next_read.lock().unwrap().take() {
            hook(&self.inner);
        }
        self.inner.read_events(job, query)
    }

    fn read_notifications(
        &self,
        after: u64,
        job: Option<&JobId>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        self.feed_reads.fetch_add(1, Ordering::SeqCst);
        if let Some(hook) = self.before_next_read.lock().unwrap().take() {
            hook(&self.inner);
        }
        self.inner.read_notifications(after, job, limit)
    }

    fn load(&self) -> Result<Loaded, StoreError> {
        self.inner.load()
    }
}

struct Engine {
    manager: JobManager,
    backend: Arc<Scripted>,
    events: mpsc::Sender<BackendEvent>,
    store: Arc<FlakyStore>,
    dir: Arc<tempfile::TempDir>,
    sent: AtomicUsize,
}

const GRACE: Duration = Duration::from_millis(200);
const APPROVAL_TIMEOUT: Duration = Duration::from_secs(600);

async fn engine(
    max_concurrent_jobs: usize,
    script: impl FnOnce(&mut Scripted, &mpsc::Sender<BackendEvent>),
) -> Engine {
    engine_in(
        Arc::new(tempfile::tempdir().unwrap()),
        max_concurrent_jobs,
        script,
    )
    .await
}

/// An engine on the store in `dir`, as a server started on that state directory.
async fn engine_in(
    dir: Arc<tempfile::TempDir>,
    max_concurrent_jobs: usize,
    script: impl FnOnce(&mut Scripted, &mpsc::Sender<BackendEvent>),
) -> Engine {
    engine_tuned(dir, max_concurrent_jobs, |_| {}, script).await
}

/// An engine with settings of its own.
async fn engine_tuned(
    dir: Arc<tempfile::TempDir>,
    max_concurrent_jobs: usize,
    tune: impl FnOnce(&mut EngineSettings),
    script: impl FnOnce(&mut Scripted, &mpsc::Sender<BackendEvent>),
) -> Engine {
    let (events, rx) = crate::codex::event_channel();
    let mut backend = Scripted::default();
    script(&mut backend, &events);
    let backend = Arc::new(backend);
    let settings = EngineSettings {
        max_concurrent_jobs,
        cancel_grace: GRACE,
        default_cwd: std::env::temp_dir(),
        retention: Duration::from_secs(3600),
        approvals: Approvals::Relay,
        approval_timeout: APPROVAL_TIMEOUT,
        approval_timeout_decision: Decision::Decline,
        max_turn: None,
        caps: Default::default(),
        isolation: Default::default(),
        worktrees: dir.path().join("worktrees"),
    };
    let mut settings = settings;
    tune(&mut settings);
    let store = Arc::new(FlakyStore {
        inner: SqliteStore::open(&dir.path().join("jobs.sqlite")).unwrap(),
        failures: AtomicUsize::new(0),
        before_next_read: Mutex::new(None),
        saved: AtomicUsize::new(0),
        feed_reads: AtomicUsize::new(0),
        event_reads: AtomicUsize::new(0),
        held: Mutex::new(None),
    });
    let manager = JobManager::open(store.clone(), backend.clone(), settings, rx)
        .await
        .unwrap();
    Engine {
        manager,
        backend,
        events,
        store,
        dir,
        sent: AtomicUsize::new(0),
    }
}

fn start(prompt: &str) -> StartRequest {
    StartRequest {
        prompt: prompt.into(),
        ..StartRequest::default()
    }
}

fn reply(prompt: &str) -> ReplyRequest {
    ReplyRequest {
        prompt: prompt.into(),
        ..ReplyRequest::default()
    }
}

fn turn(job: &JobId, turn: u32) -> JobTurn {
    JobTurn::new(job.clone(), turn)
}

fn completed(result: &str) -> Update {
    Update::TurnEnded(TurnEnd::Completed {
        result: Some(result.into()),
        data: json!({}),
    })
}

fn interrupted() -> Update {
    Update::TurnEnded(TurnEnd::Interrupted {
        reason: "interrupted".into(),
        data: json!({}),
    })
}

fn message(text: &str) -> Update {
    Update::Event {
        kind: EventKind::AgentMessage,
        data: json!({"text": text}),
    }
}

impl Engine {
    /// Sends a report as the backend would, and returns once the engine has applied it.
    async fn report(&self, turn: JobTurn, update: Update) {
        self.events
            .send(BackendEvent { turn, update })
            .await
            .unwrap();
        let sent = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        let mut taken = self.manager.inner.reports_taken.subscribe();
        taken.wait_for(|n| *n >= sent).await.unwrap();
    }

    /// Waits until `n` hand-overs have reached the backend.
    async fn handed_over(&self, n: usize) {
        let mut entered = self.backend.entered.subscribe();
        entered.wait_for(|entered| *entered >= n).await.unwrap();
    }

    async fn events(&self, job: &JobId) -> Vec<Event> {
        let query = EventQuery {
            limit: 1000,
            include_deltas: true,
            ..EventQuery::default()
        };
        self.manager
            .events(job.as_str(), &query)
            .await
            .unwrap()
            .events
    }

    async fn feed(&self) -> Vec<Notification> {
        self.manager.notifications(0, None, 1000).await.unwrap().0
    }

    /// The job once its turn has ended.
    async fn settled(&self, job: &JobId) -> JobSnapshot {
        let forever = Duration::from_secs(3600);
        let never = CancellationToken::new();
        let news = self.manager.wait(None, Some(job.as_str()), forever, &never);
        assert!(!news.await.unwrap().timed_out, "the turn did not end");
        self.manager.snapshot(job.as_str()).unwrap()
    }

    fn status(&self, job: &JobId) -> JobStatus {
        self.manager
            .list(None, 1000)
            .into_iter()
            .find(|j| &j.job_id == job)
            .unwrap()
            .status
    }
}

/// The kinds of a job's events in `turn`.
fn kinds_in(events: &[Event], turn: u32) -> Vec<EventKind> {
    events
        .iter()
        .filter(|e| e.turn == turn)
        .map(|e| e.kind)
        .collect()
}

fn is_terminal(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::TurnCompleted
            | EventKind::TurnFailed
            | EventKind::TurnCancelled
            | EventKind::TurnInterrupted
    )
}

#[tokio::test]
async fn a_job_past_the_limit_queues_and_starts_when_a_slot_frees() {
    let e = engine(1, |_, _| {}).await;
    let first = e.manager.start(start("one")).await.unwrap();
    let second = e.manager.start(start("two")).await.unwrap();
    assert_eq!(first.status, JobStatus::Running);
    assert_eq!(second.status, JobStatus::Queued);
    e.handed_over(1).await;
    assert_eq!(e.backend.started.lock().unwrap().len(), 1);

    e.report(turn(&first.job_id, 1), completed("done")).await;
    assert_eq!(e.status(&second.job_id), JobStatus::Running);
    e.handed_over(2).await;
    assert_eq!(
        e.backend.started.lock().unwrap()[1].turn,
        turn(&second.job_id, 1)
    );
}

#[tokio::test]
async fn cancelling_a_queued_job_settles_it_without_asking_codex() {
    let e = engine(1, |_, _| {}).await;
    e.manager.start(start("one")).await.unwrap();
    e.handed_over(1).await;
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
    })
    .await;
    let job = e.manager.start(start("long")).await.unwrap();
    let cancelled = e.manager.cancel(job.job_id.as_str()).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    let events = e.events(&job.job_id).await;
    let last = events.last().unwrap();
    assert_eq!(last.kind, EventKind::TurnCancelled);
    assert!(
        last.data["reason"]
            .as_str()
            .unwrap()
            .contains("Codex: interrupted")
    );
}

fn delta(text: &str) -> Update {
    Update::Event {
        kind: EventKind::AgentMessageDelta,
        data: json!({"delta": text}),
    }
}

#[tokio::test(start_paused = true)]
async fn streamed_pieces_arriving_one_by_one_are_saved_together_as_one() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("stream")).await.unwrap();
    e.handed_over(1).await;
    let saved_before = e.store.saved.load(Ordering::SeqCst);
    for i in 0..10 {
        let piece = delta(&i.to_string());
        let report = BackendEvent {
            turn: turn(&job.job_id, 1),
            update: piece,
        };
        e.events.send(report).await.unwrap();
        // Codex streams: each piece comes on its own, and the engine runs in between.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }
    e.report(turn(&job.job_id, 1), completed("done")).await;
    assert_eq!(
        e.store.saved.load(Ordering::SeqCst) - saved_before,
        1,
        "ten pieces and the turn's end in one transaction"
    );
    assert_eq!(
        streamed(&e.events(&job.job_id).await),
        ["agent_message_delta 0123456789"]
    );
}

fn command_output(call: &str, stream: &str, text: &str) -> Update {
    Update::Event {
        kind: EventKind::CommandOutputDelta,
        data: json!({"call_id": call, "stream": stream, "text": text}),
    }
}

/// The job's streamed pieces, each as its type and text.
fn streamed(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.kind.is_delta())
        .map(|e| {
            let text = e.data.get("delta").or_else(|| e.data.get("text"));
            format!(
                "{} {}",
                e.kind.as_str(),
                text.and_then(serde_json::Value::as_str).unwrap_or("?")
            )
        })
        .collect()
}

/// Sends the reports, then the turn's end, at once: the engine takes them in one change.
async fn stream_at_once(e: &Engine, job: &JobId, updates: Vec<Update>) -> Vec<Event> {
    for update in updates.into_iter().chain([completed("done")]) {
        let report = BackendEvent {
            turn: turn(job, 1),
            update,
        };
        e.events.send(report).await.unwrap();
    }
    e.settled(job).await;
    e.events(job).await
}

#[tokio::test]
async fn pieces_of_different_streams_or_parted_by_another_event_stay_apart() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("stream")).await.unwrap();
    e.handed_over(1).await;
    let events = stream_at_once(
        &e,
        &job.job_id,
        vec![
            command_output("c1", "stdout", "a"),
            command_output("c1", "stdout", "b"),
            command_output("c1", "stderr", "c"),
            command_output("c2", "stdout", "d"),
            delta("e"),
            message("parted"),
            delta("f"),
            delta("g"),
        ],
    )
    .await;
    assert_eq!(
        streamed(&events),
        [
            "command_output_delta ab",
            "command_output_delta c",
            "command_output_delta d",
            "agent_message_delta e",
            "agent_message_delta fg",
        ]
    );
}

#[tokio::test]
async fn joined_pieces_stay_small_enough_for_any_page() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("stream")).await.unwrap();
    e.handed_over(1).await;
    let pieces: Vec<Update> = (0..200).map(|_| delta("0123456789")).collect();
    let events = stream_at_once(&e, &job.job_id, pieces).await;
    let texts: Vec<&str> = events
        .iter()
        .filter_map(|e| e.data.get("delta").and_then(serde_json::Value::as_str))
        .collect();
    assert_eq!(texts.concat(), "0123456789".repeat(200), "nothing lost");
    assert!(
        texts.len() > 1 && texts.iter().all(|t| t.len() <= 512),
        "{texts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_report_that_is_not_a_streamed_piece_is_saved_without_waiting() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("stream")).await.unwrap();
    e.handed_over(1).await;
    let asked = tokio::time::Instant::now();
    e.report(turn(&job.job_id, 1), message("hello")).await;
    e.report(turn(&job.job_id, 1), completed("hello")).await;
    assert_eq!(asked.elapsed(), Duration::ZERO);
    assert_eq!(e.settled(&job.job_id).await.status, JobStatus::Completed);
}

#[tokio::test]
async fn a_start_whose_caller_leaves_while_it_is_saved_is_still_made_and_handed_over() {
    let e = engine(4, |_, _| {}).await;
    let (began, go) = e.store.hold_next_write();
    let mut start = Box::pin(e.manager.start(start("run")));
    tokio::select! {
        _ = &mut start => panic!("answered before its write was saved"),
        began = began => began.unwrap(),
    }
    drop(start);
    go.send(()).unwrap();
    let handed_over = tokio::time::timeout(Duration::from_secs(10), e.handed_over(1));
    handed_over
        .await
        .expect("the saved job was handed to Codex");
    let jobs = e.manager.list(None, 10);
    assert_eq!(jobs.len(), 1, "the saved job is in memory too");
    assert_eq!(jobs[0].status, JobStatus::Running);
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_codex_does_not_confirm_is_settled_after_the_grace_and_its_late_end_changes_nothing()
 {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("long")).await.unwrap();
    let cancelled = e.manager.cancel(job.job_id.as_str()).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(cancelled.error.is_none());
    let reason = e.events(&job.job_id).await.last().unwrap().data["reason"].clone();
    assert!(
        reason
            .as_str()
            .unwrap()
            .contains("did not confirm within 0.2 s"),
        "{reason}"
    );
    e.report(turn(&job.job_id, 1), completed("late")).await;
    assert_eq!(e.status(&job.job_id), JobStatus::Cancelled);
    assert_eq!(e.feed().await.len(), 1, "one notification for the one turn");
}

#[tokio::test(start_paused = true)]
async fn a_late_end_of_a_cancelled_turn_does_not_end_the_next_turn() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("one")).await.unwrap();
    let thread = Update::Thread {
        thread_id: "t-1".into(),
        data: json!({}),
    };
    e.report(turn(&job.job_id, 1), thread).await;
    e.manager.cancel(job.job_id.as_str()).await.unwrap();
    let replied = e
        .manager
        .reply(job.job_id.as_str(), reply("two"))
        .await
        .unwrap();
    assert_eq!(replied.turn, 2);

    // Codex confirms turn 1's interrupt only now, while turn 2 runs.
    e.report(turn(&job.job_id, 1), interrupted()).await;
    assert_eq!(e.status(&job.job_id), JobStatus::Running, "turn 2 runs on");
    e.report(turn(&job.job_id, 2), completed("two's answer"))
        .await;

    let feed = e.feed().await;
    assert_eq!(feed.len(), 2);
    assert_eq!(feed[1].turn, 2);
    assert_eq!(feed[1].status, JobStatus::Completed);
    assert_eq!(feed[1].result.as_deref(), Some("two's answer"));
}

#[tokio::test(start_paused = true)]
async fn a_late_event_of_an_ended_turn_is_not_recorded_in_any_turn() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("one")).await.unwrap();
    let thread = Update::Thread {
        thread_id: "t-1".into(),
        data: json!({}),
    };
    e.report(turn(&job.job_id, 1), thread).await;
    e.manager.cancel(job.job_id.as_str()).await.unwrap();
    e.report(turn(&job.job_id, 1), message("after the end"))
        .await;
    e.manager
        .reply(job.job_id.as_str(), reply("two"))
        .await
        .unwrap();
    e.report(turn(&job.job_id, 1), message("during turn 2"))
        .await;
    e.report(turn(&job.job_id, 2), message("turn 2's own"))
        .await;

    let events = e.events(&job.job_id).await;
    let texts: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == EventKind::AgentMessage)
        .map(|e| e.data["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["turn 2's own"]);
    let turn1 = kinds_in(&events, 1);
    assert_eq!(turn1.last(), Some(&EventKind::TurnCancelled), "{turn1:?}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_hand_over_of_a_turn_already_settled_does_not_end_it_again() {
    let hold = Arc::new(Semaphore::new(0));
    let e = engine(4, |backend, _| {
        backend.hold_turns = Some(hold.clone());
        backend.refuse_turns = true;
    })
    .await;
    let job = e.manager.start(start("one")).await.unwrap().job_id;
    e.handed_over(1).await;
    // Cancelled while Codex takes the turn: settled after the grace.
    let cancelled = e.manager.cancel(job.as_str()).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    // Then Codex refuses the turn; shutdown waits for that hand-over to finish.
    hold.add_permits(1);
    e.manager.shutdown(CancellationToken::new()).await;
    assert_eq!(
        e.status(&job),
        JobStatus::Cancelled,
        "not flipped to failed"
    );

    let terminal: Vec<EventKind> = e
        .events(&job)
        .await
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| is_terminal(*k))
        .collect();
    assert_eq!(terminal, [EventKind::TurnCancelled]);
    assert_eq!(e.feed().await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancel_during_the_hand_over_reaches_codex_once_it_has_the_turn() {
    let hold = Arc::new(Semaphore::new(0));
    let e = engine(4, |backend, events| {
        backend.hold_turns = Some(hold.clone());
        backend.confirm_interrupts = Some(events.clone());
    })
    .await;
    let manager = e.manager.clone();
    let starting = tokio::spawn(async move { manager.start(start("one")).await });
    e.handed_over(1).await;
    let job = e.manager.list(None, 1)[0].job_id.clone();
    let manager = e.manager.clone();
    let cancelling = tokio::spawn({
        let job = job.clone();
        async move { manager.cancel(job.as_str()).await }
    });
    // Codex takes the turn while the cancel waits; the hand-over tells it to stop.
    hold.add_permits(1);
    starting.await.unwrap().unwrap();
    let cancelled = cancelling.await.unwrap().unwrap();
    assert_eq!(*e.backend.interrupted.lock().unwrap(), [turn(&job, 1)]);
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    let reason = e.events(&job).await.last().unwrap().data["reason"].clone();
    assert!(
        reason.as_str().unwrap().contains("Codex: interrupted"),
        "{reason}"
    );
}

#[tokio::test]
async fn an_interruption_nobody_asked_for_is_interrupted_not_cancelled() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("long")).await.unwrap();
    e.report(turn(&job.job_id, 1), interrupted()).await;
    assert_eq!(e.feed().await[0].status, JobStatus::Interrupted);
}

#[tokio::test]
async fn a_turn_codex_would_not_take_fails_the_job_with_the_reason() {
    let e = engine(4, |backend, _| backend.refuse_turns = true).await;
    let started = e.manager.start(start("x")).await.unwrap();
    assert_eq!(
        started.status,
        JobStatus::Running,
        "answered before Codex takes the turn"
    );
    let job = e.settled(&started.job_id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.error.unwrap().contains("broken pipe"));
    assert_eq!(
        e.events(&job.job_id).await.last().unwrap().kind,
        EventKind::TurnFailed
    );
}

#[tokio::test]
async fn reply_uses_the_thread_codex_named_and_counts_the_turn() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("one")).await.unwrap();
    let thread = Update::Thread {
        thread_id: "t-1".into(),
        data: json!({}),
    };
    e.report(turn(&job.job_id, 1), thread).await;
    e.report(turn(&job.job_id, 1), completed("done")).await;
    let replied = e
        .manager
        .reply(job.job_id.as_str(), reply("two"))
        .await
        .unwrap();
    assert_eq!(replied.turn, 2);
    e.handed_over(2).await;
    let started = e.backend.started.lock().unwrap();
    assert_eq!(started[1].turn, turn(&job.job_id, 2));
    assert!(matches!(&started[1].thread, ThreadRef::Existing(t) if t == "t-1"));
}

#[tokio::test]
async fn reply_to_a_job_codex_never_gave_a_thread_is_refused() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("one")).await.unwrap();
    e.report(turn(&job.job_id, 1), completed("done")).await;
    let refused = e.manager.reply(job.job_id.as_str(), reply("two")).await;
    assert!(matches!(refused, Err(JobError::NoThread { .. })));
}

#[tokio::test]
async fn a_retry_with_the_same_client_request_id_but_another_prompt_is_refused_naming_the_first_job()
 {
    let e = engine(4, |_, _| {}).await;
    let keyed = |prompt: &str| StartRequest {
        client_request_id: Some("key-1".into()),
        ..start(prompt)
    };
    let first = e.manager.start(keyed("one")).await.unwrap();
    let again = e.manager.start(keyed("one")).await.unwrap();
    assert_eq!(again.job_id, first.job_id);
    let Err(refused) = e.manager.start(keyed("another")).await else {
        panic!("a different prompt under the same key was taken")
    };
    let text = refused.to_string();
    assert!(
        text.contains(first.job_id.as_str()) && text.contains("key-1"),
        "{text}"
    );
    assert_eq!(e.manager.list(None, 10).len(), 1);
}

#[tokio::test]
async fn the_feed_pages_with_its_cursor() {
    let e = engine(4, |_, _| {}).await;
    for prompt in ["a", "b", "c"] {
        let job = e.manager.start(start(prompt)).await.unwrap();
        e.report(turn(&job.job_id, 1), completed(prompt)).await;
    }
    let (first, cursor) = e.manager.notifications(0, None, 2).await.unwrap();
    assert_eq!(first.iter().map(|n| n.seq).collect::<Vec<_>>(), [1, 2]);
    let (rest, cursor) = e.manager.notifications(cursor, None, 2).await.unwrap();
    assert_eq!(rest.iter().map(|n| n.seq).collect::<Vec<_>>(), [3]);
    assert_eq!(cursor, 3);
    let (none, _) = e.manager.notifications(cursor, None, 2).await.unwrap();
    assert!(none.is_empty());
    assert!(matches!(
        e.manager.notifications(4, None, 2).await,
        Err(JobError::FeedCursorOutOfRange { cursor: 4, last: 3 })
    ));
}

/// An entry of the feed saved by a change that is not made yet.
fn saved_not_made(job: &JobId, seq: u64) -> Write {
    Write::Notification(Box::new(crate::model::sample_notification(
        seq,
        job.as_str(),
    )))
}

#[tokio::test]
async fn a_feed_page_never_hands_out_a_cursor_behind_its_own_entries() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("a")).await.unwrap();
    e.report(turn(&job.job_id, 1), completed("a")).await;
    e.manager.inner.lock().recent.clear();
    // An entry saved and made after the engine looked at the feed's end, before it read the page.
    let (late, engine) = (saved_not_made(&job.job_id, 2), e.manager.inner.clone());
    e.store.before_next_read(move |store| {
        store.write(&[late]).unwrap();
        engine.lock().last_notification = 2;
    });
    let (page, cursor) = e.manager.notifications(0, None, 100).await.unwrap();
    assert_eq!(page.iter().map(|n| n.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(cursor, 2, "the next page must not repeat entry 2");
}

/// An engine with one settled job, whose feed entry memory no longer keeps (reads of the feed
/// go to the store), and whose store gets entry 2 right before its next read: saved, not made.
async fn feed_entry_saved_not_made_after_one_made() -> Engine {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("a")).await.unwrap();
    e.report(turn(&job.job_id, 1), completed("a")).await;
    e.manager.inner.lock().recent.clear();
    e.store
        .save_before_next_read(saved_not_made(&job.job_id, 2));
    e
}

#[tokio::test]
async fn a_feed_page_shows_nothing_saved_and_not_yet_made_and_its_cursor_stays_behind_it() {
    let e = feed_entry_saved_not_made_after_one_made().await;
    let (page, cursor) = e.manager.notifications(0, None, 100).await.unwrap();
    assert_eq!(page.iter().map(|n| n.seq).collect::<Vec<_>>(), [1]);
    assert_eq!(cursor, 1);
    let (next, _) = e.manager.notifications(cursor, None, 100).await.unwrap();
    assert!(next.is_empty());
}

#[tokio::test]
async fn a_wait_does_not_answer_with_an_entry_saved_and_not_yet_made() {
    let e = feed_entry_saved_not_made_after_one_made().await;
    let never = CancellationToken::new();
    let second = Duration::from_secs(1);
    let waited = e.manager.wait(Some(0), None, second, &never).await.unwrap();
    let seqs: Vec<u64> = waited.notifications.iter().map(|n| n.seq).collect();
    assert_eq!((seqs, waited.cursor), (vec![1], 1));
}

#[tokio::test]
async fn a_wait_for_the_next_entry_is_answered_from_memory_without_reading_the_store() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("a")).await.unwrap();
    let never = CancellationToken::new();
    let forever = Duration::from_secs(3600);
    let wait = e
        .manager
        .wait(None, Some(job.job_id.as_str()), forever, &never);
    let report = e.report(turn(&job.job_id, 1), completed("done"));
    let (waited, ()) = tokio::join!(wait, report);
    let waited = waited.unwrap();
    assert_eq!(waited.notifications[0].result.as_deref(), Some("done"));
    assert_eq!(e.store.feed_reads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_page_of_events_shows_nothing_saved_and_not_yet_made_and_says_there_is_more() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("a")).await.unwrap();
    e.report(turn(&job.job_id, 1), message("known")).await;
    // Read from the store, as a page memory no longer holds.
    e.manager.inner.lock().events.clear();
    let known = e.manager.snapshot(job.job_id.as_str()).unwrap().cursor;
    let unknown = Event {
        seq: known + 1,
        kind: EventKind::AgentMessage,
        at: "2026-12-01T00:00:00.000Z".into(),
        turn: 1,
        data: json!({"text": "saved, not made"}),
    };
    e.store
        .save_before_next_read(Write::Event(job.job_id.clone(), unknown));
    let first = EventQuery {
        limit: 10,
        ..EventQuery::default()
    };
    let page = e.manager.events(job.job_id.as_str(), &first).await.unwrap();
    assert_eq!(page.events.last().map(|e| e.seq), Some(known));
    assert_eq!((page.cursor, page.has_more), (known, true));
    let next = EventQuery {
        after: page.cursor,
        ..first
    };
    let next = e.manager.events(job.job_id.as_str(), &next).await.unwrap();
    assert!(next.events.is_empty());
}

/// A job whose first turn ended and whose second runs, with events of many kinds in each.
async fn job_of_two_turns_with_every_kind_of_event(e: &Engine) -> JobId {
    let job = e.manager.start(start("one")).await.unwrap().job_id;
    let thread = Update::Thread {
        thread_id: "t-1".into(),
        data: json!({}),
    };
    e.report(turn(&job, 1), thread).await;
    let events = |number: u32| {
        [
            delta("a"),
            command_output("c1", "stdout", "out"),
            message(&format!("turn {number}")),
            delta("b"),
        ]
    };
    for update in events(1) {
        e.report(turn(&job, 1), update).await;
    }
    e.report(turn(&job, 1), completed("done")).await;
    e.manager.reply(job.as_str(), reply("two")).await.unwrap();
    e.handed_over(2).await;
    for update in events(2) {
        e.report(turn(&job, 2), update).await;
    }
    job
}

#[tokio::test]
async fn a_page_from_memory_is_the_page_the_store_gives_for_every_query() {
    let e = engine(4, |_, _| {}).await;
    let job = job_of_two_turns_with_every_kind_of_event(&e).await;
    let last = e.manager.snapshot(job.as_str()).unwrap().cursor;
    let mut queries = Vec::new();
    for after in 0..=last {
        for limit in [1, 2, 1000] {
            for types in [
                None,
                Some(vec![EventKind::AgentMessageDelta]),
                Some(vec![EventKind::AgentMessage, EventKind::CommandOutputDelta]),
            ] {
                for include_deltas in [false, true] {
                    for turn in [None, Some(1), Some(2)] {
                        queries.push(EventQuery {
                            after,
                            limit,
                            types: types.clone(),
                            include_deltas,
                            turn,
                        });
                    }
                }
            }
        }
    }
    let pages = async || {
        let mut pages = Vec::new();
        for query in &queries {
            let page = e.manager.events(job.as_str(), query).await.unwrap();
            pages.push((page.events, page.cursor, page.has_more));
        }
        pages
    };
    let from_memory = pages().await;
    let reads = e.store.event_reads.load(Ordering::SeqCst);
    assert!(
        reads < queries.len(),
        "pages of the running turn come from memory"
    );
    e.manager.inner.lock().events.clear();
    let from_the_store = pages().await;
    // All but those after the newest event, which need no read to know there is nothing.
    let behind = queries.iter().filter(|q| q.after < last).count();
    assert_eq!(e.store.event_reads.load(Ordering::SeqCst) - reads, behind);
    for (query, (memory, store)) in queries.iter().zip(from_memory.iter().zip(&from_the_store)) {
        assert_eq!(memory, store, "{query:?}");
    }
}

#[tokio::test]
async fn a_client_following_a_running_job_reads_its_events_from_memory() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("a")).await.unwrap().job_id;
    let (mut cursor, mut read) = (0, Vec::new());
    for text in ["one", "two", "three"] {
        e.report(turn(&job, 1), message(text)).await;
        let query = EventQuery {
            after: cursor,
            limit: 10,
            ..EventQuery::default()
        };
        let page = e.manager.events(job.as_str(), &query).await.unwrap();
        read.extend(page.events.iter().map(|e| e.data["text"].clone()));
        cursor = page.cursor;
    }
    assert_eq!(read, ["one", "two", "three"]);
    assert_eq!(e.store.event_reads.load(Ordering::SeqCst), 0);
}

/// A follower waiting on `job`'s events that `query` shows; returns once it waits.
async fn follow(e: &Engine, job: &JobId, query: EventQuery) -> JoinHandle<EventsAnswer> {
    let (manager, job) = (e.manager.clone(), job.clone());
    let follower = tokio::spawn(async move {
        let (forever, never) = (Duration::from_secs(3600), CancellationToken::new());
        let page = manager.events_when_any(job.as_str(), &query, forever, &never);
        page.await.unwrap()
    });
    tokio::task::yield_now().await;
    assert!(!follower.is_finished(), "answered with nothing new");
    follower
}

/// A query for what follows the job's newest event.
fn after_newest(e: &Engine, job: &JobId) -> EventQuery {
    EventQuery {
        after: e.manager.snapshot(job.as_str()).unwrap().cursor,
        limit: 10,
        ..EventQuery::default()
    }
}

fn texts(page: &EventsAnswer) -> Vec<Value> {
    page.events.iter().map(|e| e.data["text"].clone()).collect()
}

#[tokio::test]
async fn a_follower_waiting_for_events_gets_the_next_ones_as_soon_as_they_are_saved() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("a")).await.unwrap().job_id;
    let follower = follow(&e, &job, after_newest(&e, &job)).await;
    e.report(turn(&job, 1), message("one")).await;
    assert_eq!(texts(&follower.await.unwrap()), ["one"]);
}

#[tokio::test]
async fn a_follower_goes_on_waiting_through_events_its_query_does_not_show() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("a")).await.unwrap().job_id;
    let query = EventQuery {
        include_deltas: false,
        ..after_newest(&e, &job)
    };
    let follower = follow(&e, &job, query).await;
    e.report(turn(&job, 1), delta("a piece")).await;
    tokio::task::yield_now().await;
    assert!(
        !follower.is_finished(),
        "answered with only a piece it hides"
    );
    e.report(turn(&job, 1), message("two")).await;
    let page = follower.await.unwrap();
    assert_eq!(texts(&page), ["two"]);
    assert_eq!(
        page.cursor,
        e.manager.snapshot(job.as_str()).unwrap().cursor
    );
}

#[tokio::test]
async fn a_follower_of_a_settled_job_is_answered_at_once() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("a")).await.unwrap().job_id;
    e.report(turn(&job, 1), completed("done")).await;
    let query = after_newest(&e, &job);
    let (forever, never) = (Duration::from_secs(3600), CancellationToken::new());
    let page = e
        .manager
        .events_when_any(job.as_str(), &query, forever, &never);
    let page = page.await.unwrap();
    assert!(page.events.is_empty());
    assert_eq!(page.snapshot.status, JobStatus::Completed);
}

#[tokio::test]
async fn a_settled_job_leaves_no_events_in_memory() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("a")).await.unwrap().job_id;
    e.report(turn(&job, 1), message("one")).await;
    assert!(e.manager.inner.lock().events.contains_key(&job));
    e.report(turn(&job, 1), completed("done")).await;
    assert!(!e.manager.inner.lock().events.contains_key(&job));
    let kinds = kinds_in(&e.events(&job).await, 1);
    assert_eq!(kinds.last(), Some(&EventKind::TurnCompleted));
}

#[tokio::test]
async fn the_feed_never_moves_back_when_publishers_finish_out_of_order() {
    let e = engine(4, |_, _| {}).await;
    let mut feed = e.manager.inner.feed.subscribe();
    let published = |seq| super::state::AfterCommit {
        notified: Some(seq),
        ..Default::default()
    };
    e.manager.publish(published(5));
    e.manager.publish(published(3));
    assert_eq!(*feed.borrow_and_update(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_wait_ends_at_once_when_its_caller_leaves() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("long")).await.unwrap();
    let cancelled = CancellationToken::new();
    let manager = e.manager.clone();
    let leaving = cancelled.clone();
    let waiting = tokio::spawn(async move {
        manager
            .wait(
                None,
                Some(job.job_id.as_str()),
                Duration::from_secs(3600),
                &leaving,
            )
            .await
    });
    cancelled.cancel();
    let started = tokio::time::Instant::now();
    let ended = waiting.await.unwrap();
    assert!(matches!(ended, Err(JobError::Cancelled)));
    assert_eq!(tokio::time::Instant::now(), started, "no time passed");
}

#[tokio::test]
async fn shutdown_applies_what_codex_said_before_it_stopped_then_settles_the_rest() {
    let e = engine(4, |backend, events| {
        backend.last_words = Some((events.clone(), Mutex::new(Vec::new())));
    })
    .await;
    let job = e.manager.start(start("long")).await.unwrap();
    if let Some((_, words)) = &e.backend.last_words {
        words.lock().unwrap().push(BackendEvent {
            turn: turn(&job.job_id, 1),
            update: message("said before the stop"),
        });
    }
    e.manager.shutdown(CancellationToken::new()).await;
    let kinds = kinds_in(&e.events(&job.job_id).await, 1);
    assert_eq!(
        kinds[kinds.len() - 2..],
        [EventKind::AgentMessage, EventKind::TurnInterrupted]
    );
    assert_eq!(e.status(&job.job_id), JobStatus::Interrupted);
    assert!(matches!(
        e.manager.start(start("late")).await,
        Err(JobError::ShuttingDown)
    ));
}

#[tokio::test]
async fn after_a_restart_everything_reads_back_and_unfinished_turns_are_interrupted() {
    let first = engine(4, |_, _| {}).await;
    let done = first.manager.start(start("done")).await.unwrap();
    first.report(turn(&done.job_id, 1), message("hi")).await;
    first.report(turn(&done.job_id, 1), completed("hi")).await;
    let running = first.manager.start(start("running")).await.unwrap();
    let events_before = first.events(&done.job_id).await;
    let feed_before = first.feed().await;
    // The first server vanishes without a word, as a killed process would.
    let dir = first.dir.clone();
    drop(first);

    let second = engine_in(dir, 4, |_, _| {}).await;
    let listed = second.manager.list(None, 10);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].job_id, running.job_id);
    assert_eq!(listed[0].status, JobStatus::Interrupted);
    assert_eq!(listed[1].status, JobStatus::Completed);
    assert_eq!(second.events(&done.job_id).await, events_before);
    let feed_after = second.feed().await;
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
    let last = second.events(&running.job_id).await;
    assert_eq!(last.last().unwrap().kind, EventKind::TurnInterrupted);
    // New jobs get new ids and the feed counts on.
    let next = second.manager.start(start("next")).await.unwrap();
    assert!(next.job_id != done.job_id && next.job_id != running.job_id);
    second.report(turn(&next.job_id, 1), completed("ok")).await;
    let (feed, _) = second
        .manager
        .notifications(interrupted.seq, None, 10)
        .await
        .unwrap();
    assert_eq!(feed[0].seq, interrupted.seq + 1);
}

#[tokio::test]
async fn expired_settled_jobs_are_deleted_with_their_feed_entries_and_running_ones_kept() {
    let e = engine(4, |_, _| {}).await;
    let old = e.manager.start(start("old")).await.unwrap();
    e.report(turn(&old.job_id, 1), completed("old")).await;
    let running = e.manager.start(start("running")).await.unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    assert_eq!(e.manager.purge_updated_before(later).await.unwrap(), 1);
    let listed = e.manager.list(None, 10);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].job_id, running.job_id);
    assert!(e.feed().await.is_empty());
    assert!(matches!(
        e.manager
            .events(old.job_id.as_str(), &EventQuery::default())
            .await,
        Err(JobError::UnknownJob(_))
    ));
}

#[tokio::test]
async fn a_save_that_fails_fails_the_call_with_the_problem_but_no_path_and_changes_nothing() {
    let e = engine(4, |_, _| {}).await;
    e.store.fail_next(1);
    let Err(error) = e.manager.start(start("lost")).await else {
        panic!("the start should have failed")
    };
    let public = error.public();
    assert!(public.contains("the disk is full"), "{public}");
    assert!(!public.contains("/secret/path"), "{public}");
    assert!(
        error.to_string().contains("/secret/path"),
        "the log keeps the detail"
    );
    assert!(e.manager.list(None, 10).is_empty(), "no job half made");
    let job = e.manager.start(start("kept")).await.unwrap();
    assert_eq!(job.status, JobStatus::Running);
}

#[tokio::test]
async fn codex_events_that_cannot_be_saved_fail_their_turn_once_and_codex_is_told_to_stop() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("x")).await.unwrap();
    e.store.fail_next(1);
    // One batch of many events of one turn, all lost.
    let batch: Vec<BackendEvent> = (0..200)
        .map(|i| BackendEvent {
            turn: turn(&job.job_id, 1),
            update: message(&format!("unsaved {i}")),
        })
        .collect();
    for report in batch {
        e.events.send(report).await.unwrap();
    }
    e.sent.fetch_add(200, Ordering::SeqCst);
    let mut taken = e.manager.inner.reports_taken.subscribe();
    taken.wait_for(|n| *n >= 200).await.unwrap();

    let feed = e.feed().await;
    assert_eq!(feed.len(), 1, "settled once, not once per event");
    assert_eq!(feed[0].status, JobStatus::Failed);
    let error = feed[0].error.as_deref().unwrap();
    assert!(
        error.contains("could not save Codex's events (the disk is full)"),
        "{error}"
    );
    assert!(!error.contains("/secret/path"), "{error}");
    let recorded = e.events(&job.job_id).await;
    let seqs: Vec<u64> = recorded.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=recorded.len() as u64).collect::<Vec<_>>(),
        "no hole"
    );
    assert!(recorded.iter().all(|e| e.kind != EventKind::AgentMessage));
    let mut interrupts = e.backend.interrupts.subscribe();
    interrupts.wait_for(|n| *n >= 1).await.unwrap();
    assert_eq!(
        *e.backend.interrupted.lock().unwrap(),
        [turn(&job.job_id, 1)]
    );
}

#[tokio::test]
async fn a_turn_whose_failure_cannot_be_saved_stays_running_says_why_and_fails_once_saves_work() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("x")).await.unwrap();
    // The events, their turn's failure and the first retry all fail to save.
    e.store.fail_next(3);
    e.report(turn(&job.job_id, 1), message("unsaved")).await;
    let events = e
        .manager
        .events(
            job.job_id.as_str(),
            &EventQuery {
                limit: 10,
                ..EventQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(events.snapshot.status, JobStatus::Running);
    let error = events.snapshot.error.unwrap();
    assert!(
        error.contains("marked failed as soon as the store can save again"),
        "{error}"
    );
    // Codex's later words about it are dropped; the next report's batch settles it.
    e.report(turn(&job.job_id, 1), message("dropped")).await;
    assert_eq!(e.status(&job.job_id), JobStatus::Failed);
    assert_eq!(e.feed().await.len(), 1);
    assert!(
        e.events(&job.job_id)
            .await
            .iter()
            .all(|e| e.kind != EventKind::AgentMessage)
    );
}

#[tokio::test]
async fn a_config_nested_too_deep_to_read_back_is_refused() {
    let e = engine(4, |_, _| {}).await;
    let mut deep = json!("leaf");
    for _ in 0..40 {
        deep = json!({"k": deep});
    }
    let request = StartRequest {
        config: Some(serde_json::Map::from_iter([("x".to_owned(), deep)])),
        ..start("x")
    };
    let Err(JobError::InvalidArgument(why)) = e.manager.start(request).await else {
        panic!("taken")
    };
    assert!(why.contains("config nests"), "{why}");
}

/// A command approval request, and where Codex would read its answer.
fn ask() -> (Update, tokio::sync::oneshot::Receiver<Answer>) {
    ask_kind(crate::model::RequestKind::Command, Vec::new())
}

fn ask_kind(
    kind: crate::model::RequestKind,
    questions: Vec<crate::model::Question>,
) -> (Update, tokio::sync::oneshot::Receiver<Answer>) {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = crate::model::CodexRequest {
        kind,
        summary: "run `touch x` in /w".into(),
        details: serde_json::Map::from_iter([("command".to_owned(), json!("touch x"))]),
        questions,
        decisions: vec![
            Decision::Accept,
            Decision::AcceptForSession,
            Decision::Decline,
            Decision::Cancel,
        ],
        raw: json!({"method": "item/commandExecution/requestApproval"}),
    };
    (Update::Request { request, reply }, answer)
}

fn respond(request_id: &str, decision: Decision) -> RespondRequest {
    RespondRequest {
        request_id: request_id.into(),
        answer: Answer::just(decision),
        note: None,
    }
}

impl Engine {
    /// The ids of the job's waiting requests.
    fn waiting(&self, job: &JobId) -> Vec<String> {
        let state = self.manager.inner.lock();
        let pending = &state.job(job).unwrap().pending;
        pending
            .iter()
            .map(|p| p.request.request_id.clone())
            .collect()
    }

    /// The data of the job's events of `kind`.
    async fn data_of(&self, job: &JobId, kind: EventKind) -> Vec<serde_json::Value> {
        let events = self.events(job).await.into_iter();
        events.filter(|e| e.kind == kind).map(|e| e.data).collect()
    }
}

#[tokio::test]
async fn a_relayed_request_makes_the_job_wait_for_input_and_the_feed_says_what_to_answer() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("run")).await.unwrap();
    let (request, _answer) = ask();
    e.report(turn(&job.job_id, 1), request).await;

    assert_eq!(e.status(&job.job_id), JobStatus::InputRequired);
    let entry = e.feed().await.pop().unwrap();
    assert_eq!(entry.status, JobStatus::InputRequired);
    let asked = entry.request.expect("the request is in the feed entry");
    assert_eq!(asked.summary, "run `touch x` in /w");
    let requested = &e.data_of(&job.job_id, EventKind::ApprovalRequested).await[0];
    assert_eq!(requested["request_id"], asked.request_id.as_str());
    assert_eq!(requested["command"], "touch x");
    // A wait on the job answers at once: it needs an answer now, not later.
    let cancelled = CancellationToken::new();
    let wait = e
        .manager
        .wait(None, Some(job.job_id.as_str()), Duration::ZERO, &cancelled);
    let waited = wait.await.unwrap();
    assert!(!waited.timed_out);
    assert_eq!(waited.notifications[0].status, JobStatus::InputRequired);
}

#[tokio::test]
async fn an_answer_reaches_codex_and_the_job_runs_again() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("run")).await.unwrap();
    let (request, answer) = ask();
    e.report(turn(&job.job_id, 1), request).await;
    let id = e.waiting(&job.job_id).remove(0);

    let mut accept = respond(&id, Decision::AcceptForSession);
    accept.note = Some("looks safe".into());
    let after = e
        .manager
        .respond(job.job_id.as_str(), accept)
        .await
        .unwrap();
    assert_eq!(after.status, JobStatus::Running);
    assert!(after.requests.is_empty());
    assert_eq!(
        answer.await.unwrap(),
        Answer::just(Decision::AcceptForSession)
    );
    let resolved = &e.data_of(&job.job_id, EventKind::ApprovalResolved).await[0];
    assert_eq!(
        (
            &resolved["request_id"],
            &resolved["decision"],
            &resolved["decided_by"]
        ),
        (&json!(id), &json!("accept_for_session"), &json!("client"))
    );
    assert_eq!(resolved["note"], "looks safe");
}

#[tokio::test]
async fn a_second_answer_and_an_answer_to_no_request_are_errors_that_say_so() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("run")).await.unwrap();
    let (request, _answer) = ask();
    e.report(turn(&job.job_id, 1), request).await;
    let id = e.waiting(&job.job_id).remove(0);
    let job_id = job.job_id.as_str();
    e.manager
        .respond(job_id, respond(&id, Decision::Decline))
        .await
        .unwrap();

    let again = e
        .manager
        .respond(job_id, respond(&id, Decision::Accept))
        .await;
    let again = again.unwrap_err().to_string();
    assert!(
        again.contains("answered already (decline, decided by client)"),
        "{again}"
    );
    let unknown = e
        .manager
        .respond(job_id, respond("r999", Decision::Accept))
        .await;
    let unknown = unknown.unwrap_err().to_string();
    assert!(unknown.contains("has no request \"r999\""), "{unknown}");
    assert!(
        unknown.contains("no request of this job waits"),
        "{unknown}"
    );
}

#[tokio::test]
async fn requests_pending_at_once_are_answered_each_on_its_own_in_any_order() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("run")).await.unwrap();
    let (first, first_answer) = ask();
    let (second, second_answer) = ask();
    e.report(turn(&job.job_id, 1), first).await;
    e.report(turn(&job.job_id, 1), second).await;
    let ids = e.waiting(&job.job_id);
    assert_eq!(ids.len(), 2);
    let job_id = job.job_id.as_str();

    let after = e
        .manager
        .respond(job_id, respond(&ids[1], Decision::Decline))
        .await;
    let after = after.unwrap();
    assert_eq!(after.status, JobStatus::InputRequired, "one still waits");
    assert_eq!(after.requests.len(), 1);
    assert_eq!(after.requests[0].request_id, ids[0]);
    assert_eq!(
        second_answer.await.unwrap(),
        Answer::just(Decision::Decline)
    );
    let after = e
        .manager
        .respond(job_id, respond(&ids[0], Decision::Accept))
        .await;
    assert_eq!(after.unwrap().status, JobStatus::Running);
    assert_eq!(first_answer.await.unwrap(), Answer::just(Decision::Accept));
}

#[tokio::test(start_paused = true)]
async fn a_request_nobody_answers_gets_the_timeout_decision() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("run")).await.unwrap();
    let (request, answer) = ask();
    e.report(turn(&job.job_id, 1), request).await;

    // Paused time runs ahead to the approval timeout.
    assert_eq!(answer.await.unwrap(), Answer::just(Decision::Decline));
    assert_eq!(e.status(&job.job_id), JobStatus::Running);
    let resolved = &e.data_of(&job.job_id, EventKind::ApprovalResolved).await[0];
    assert_eq!(resolved["decided_by"], "timeout");
    assert!(resolved["note"].as_str().unwrap().contains("600 s"));
}

#[tokio::test(start_paused = true)]
async fn a_timeout_that_cancels_ends_the_turn_as_cancelled() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let tune = |s: &mut EngineSettings| s.approval_timeout_decision = Decision::Cancel;
    let e = engine_tuned(dir, 4, tune, |backend, events| {
        backend.confirm_interrupts = Some(events.clone());
    })
    .await;
    let job = e.manager.start(start("run")).await.unwrap();
    let (request, answer) = ask();
    e.report(turn(&job.job_id, 1), request).await;

    assert_eq!(answer.await.unwrap(), Answer::just(Decision::Cancel));
    let mut feed = e.manager.inner.feed.subscribe();
    feed.wait_for(|_| e.status(&job.job_id) == JobStatus::Cancelled)
        .await
        .unwrap();
    let reason = &e.data_of(&job.job_id, EventKind::TurnCancelled).await[0]["reason"];
    assert!(
        reason.as_str().unwrap().contains("nobody answered request"),
        "{reason}"
    );
}

#[tokio::test]
async fn cancelling_a_job_answers_its_waiting_requests_at_once() {
    let e = engine(4, |backend, events| {
        backend.confirm_interrupts = Some(events.clone());
    })
    .await;
    let job = e.manager.start(start("run")).await.unwrap();
    let (request, answer) = ask();
    e.report(turn(&job.job_id, 1), request).await;

    let cancelled = e.manager.cancel(job.job_id.as_str()).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(answer.await.unwrap(), Answer::just(Decision::Cancel));
    let resolved = &e.data_of(&job.job_id, EventKind::ApprovalResolved).await[0];
    assert_eq!(
        (&resolved["decision"], &resolved["decided_by"]),
        (&json!("cancel"), &json!("client"))
    );
}

#[tokio::test]
async fn answering_cancel_ends_the_turn_as_cancelled() {
    let e = engine(4, |backend, events| {
        backend.confirm_interrupts = Some(events.clone());
    })
    .await;
    let job = e.manager.start(start("run")).await.unwrap();
    let (request, answer) = ask();
    e.report(turn(&job.job_id, 1), request).await;
    let id = e.waiting(&job.job_id).remove(0);

    let after = e
        .manager
        .respond(job.job_id.as_str(), respond(&id, Decision::Cancel))
        .await;
    assert_eq!(after.unwrap().status, JobStatus::Cancelled);
    assert_eq!(answer.await.unwrap(), Answer::just(Decision::Cancel));
    let reason = &e.data_of(&job.job_id, EventKind::TurnCancelled).await[0]["reason"];
    assert!(
        reason
            .as_str()
            .unwrap()
            .contains(&format!("`cancel` to request {id}")),
        "{reason}"
    );
}

#[tokio::test]
async fn a_job_that_declines_or_approves_answers_at_once_and_never_waits() {
    for (approvals, decision) in [
        (Approvals::Decline, Decision::Decline),
        (Approvals::Approve, Decision::Accept),
    ] {
        let e = engine(4, |_, _| {}).await;
        let request = StartRequest {
            approvals: Some(approvals),
            ..start("run")
        };
        let job = e.manager.start(request).await.unwrap();
        let (request, answer) = ask();
        e.report(turn(&job.job_id, 1), request).await;
        assert_eq!(answer.await.unwrap(), Answer::just(decision));
        assert_eq!(e.status(&job.job_id), JobStatus::Running);
        let resolved = &e.data_of(&job.job_id, EventKind::ApprovalResolved).await[0];
        assert_eq!(resolved["decided_by"], "policy");
        assert!(e.feed().await.is_empty(), "nothing to tell anyone");
    }
}

#[tokio::test]
async fn a_request_left_when_its_turn_ends_is_refused_and_takes_no_answer() {
    let e = engine(4, |_, _| {}).await;
    let job = e.manager.start(start("run")).await.unwrap();
    let (request, answer) = ask();
    e.report(turn(&job.job_id, 1), request).await;
    let id = e.waiting(&job.job_id).remove(0);
    e.report(turn(&job.job_id, 1), completed("done anyway"))
        .await;

    assert!(answer.await.is_err(), "dropped: the backend refuses Codex");
    let late = e
        .manager
        .respond(job.job_id.as_str(), respond(&id, Decision::Accept))
        .await;
    let late = late.unwrap_err().to_string();
    assert!(late.contains("its turn ended first"), "{late}");
}

#[tokio::test(start_paused = true)]
async fn a_turn_out_of_time_is_stopped_and_fails_saying_so_and_waits_do_not_count() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let tune = |s: &mut EngineSettings| s.max_turn = Some(Duration::from_secs(60));
    let e = engine_tuned(dir, 4, tune, |backend, events| {
        backend.confirm_interrupts = Some(events.clone());
    })
    .await;
    let job = e.manager.start(start("run")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(50)).await;
    let (request, _answer) = ask();
    e.report(turn(&job.job_id, 1), request).await;
    // Minutes waiting for an answer do not count against the turn.
    tokio::time::sleep(APPROVAL_TIMEOUT - Duration::from_secs(1)).await;
    assert_eq!(e.status(&job.job_id), JobStatus::InputRequired);
    let id = e.waiting(&job.job_id).remove(0);
    e.manager
        .respond(job.job_id.as_str(), respond(&id, Decision::Accept))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        e.status(&job.job_id),
        JobStatus::Running,
        "50 + 5 s of 60 used"
    );
    assert!(e.backend.interrupted.lock().unwrap().is_empty());

    let mut feed = e.manager.inner.feed.subscribe();
    feed.wait_for(|_| e.status(&job.job_id) == JobStatus::Failed)
        .await
        .unwrap();
    assert_eq!(e.backend.interrupted.lock().unwrap().len(), 1);
    let error = e.data_of(&job.job_id, EventKind::TurnFailed).await[0]["reason"].clone();
    assert!(
        error.as_str().unwrap().contains("max_turn_seconds (60 s"),
        "{error}"
    );
}

#[tokio::test]
async fn after_a_restart_a_turn_that_waited_for_an_answer_says_its_request_was_lost() {
    let first = engine(4, |_, _| {}).await;
    let job = first.manager.start(start("run")).await.unwrap();
    let (request, _answer) = ask();
    first.report(turn(&job.job_id, 1), request).await;
    let dir = first.dir.clone();
    drop(first);

    let second = engine_in(dir, 4, |_, _| {}).await;
    assert_eq!(second.status(&job.job_id), JobStatus::Interrupted);
    let error = second.feed().await.pop().unwrap().error.unwrap();
    assert!(
        error.contains("waited for an answer to Codex's request"),
        "{error}"
    );
    assert!(error.contains("lost with that Codex process"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_request_made_while_the_turn_is_being_cancelled_is_cancelled_at_once() {
    let e = Arc::new(engine(4, |_, _| {}).await);
    let job = e.manager.start(start("run")).await.unwrap();
    let cancelling = {
        let (e, id) = (e.clone(), job.job_id.clone());
        tokio::spawn(async move { e.manager.cancel(id.as_str()).await })
    };
    let mut interrupts = e.backend.interrupts.subscribe();
    interrupts.wait_for(|n| *n == 1).await.unwrap();

    let (request, answer) = ask();
    e.report(turn(&job.job_id, 1), request).await;
    assert_eq!(answer.await.unwrap(), Answer::just(Decision::Cancel));
    assert_ne!(e.status(&job.job_id), JobStatus::InputRequired);
    let cancelled = cancelling.await.unwrap().unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
}
