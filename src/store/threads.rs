//! The store off the async runtime: SQLite is called only on the runtime's blocking threads,
//! never on a tokio worker, so a slow disk or a long read stalls no client and no relay.
//!
//! Writes take one lane and reads another. A lane runs its calls one at a time, in the order
//! they came, on one blocking thread that takes every call waiting before it returns: a write
//! that a caller awaits has been committed, after every write sent before it, and reads run
//! beside it (WAL lets a reader run while a write commits). A call runs even when its caller
//! has left meanwhile, so a write never overtakes another. A call that panics is answered with
//! an error, never a hang.
//!
//! Blocking threads rather than threads of our own: tokio knows when they work, so a test on
//! paused time does not jump its clock while a write commits.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{Loaded, Problem, Store, StoreError, Write};
use crate::model::{EventPage, EventQuery, JobId, Notification};

/// The store, called off the runtime's workers: every method runs on a blocking thread.
pub struct StoreThreads {
    writes: Lane,
    reads: Lane,
}

impl StoreThreads {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            writes: Lane::new(store.clone()),
            reads: Lane::new(store),
        }
    }

    /// Saves `batch` in one transaction, or none of it, after every batch sent before it.
    pub async fn write(&self, batch: Vec<Write>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let call = self.writes.run(move |store| store.write(&batch));
        call.await.unwrap_or_else(|panic| {
            Err(StoreError::Write {
                problem: Problem::Other,
                detail: panic,
            })
        })
    }

    /// What the store holds, for the engine to start from.
    pub async fn load(&self) -> Result<Loaded, StoreError> {
        let call = self.writes.run(|store| store.load());
        call.await.unwrap_or_else(|panic| Err(read_failed(panic)))
    }

    pub async fn read_events(
        &self,
        job: &JobId,
        query: &EventQuery,
    ) -> Result<EventPage, StoreError> {
        let (job, query) = (job.clone(), query.clone());
        let call = (self.reads).run(move |store| store.read_events(&job, &query));
        call.await.unwrap_or_else(|panic| Err(read_failed(panic)))
    }

    /// Notifications with `seq` greater than `after`, oldest first, for one job or all.
    pub async fn read_notifications(
        &self,
        after: u64,
        job: Option<&JobId>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        let job = job.cloned();
        let call =
            (self.reads).run(move |store| store.read_notifications(after, job.as_ref(), limit));
        call.await.unwrap_or_else(|panic| Err(read_failed(panic)))
    }
}

fn read_failed(detail: String) -> StoreError {
    StoreError::Read {
        problem: Problem::Other,
        detail,
    }
}

type Call = Box<dyn FnOnce(&dyn Store) + Send>;

/// Calls waiting for a lane, and whether a blocking thread is taking them.
#[derive(Default)]
struct Queue {
    calls: VecDeque<Call>,
    draining: bool,
}

/// One call at a time, in the order they came, on a blocking thread that takes every call
/// waiting before it returns: under load it stays at work, and no call waits for a thread to
/// wake, or for its caller.
struct Lane {
    store: Arc<dyn Store>,
    queue: Arc<Mutex<Queue>>,
}

impl Lane {
    fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            queue: Arc::default(),
        }
    }

    /// Runs `work` on a blocking thread after the calls before it; `Err` says why it gave no
    /// answer.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&dyn Store) -> T + Send + 'static,
    ) -> Result<T, String> {
        let (answer, answered) = oneshot::channel();
        let call: Call = Box::new(move |store| {
            // The caller may have left meanwhile: the work is done all the same, in its turn.
            let _ = answer.send(work(store));
        });
        let start_draining = {
            let mut queue =
                (self.queue.lock()).map_err(|_| "the job store's queue was poisoned")?;
            queue.calls.push_back(call);
            !std::mem::replace(&mut queue.draining, true)
        };
        if start_draining {
            let (queue, store) = (self.queue.clone(), self.store.clone());
            tokio::task::spawn_blocking(move || drain(&queue, &*store));
        }
        (answered.await).map_err(|_| "a call to the job store failed unexpectedly (a panic)".into())
    }
}

/// Takes the lane's calls in order until none waits.
fn drain(queue: &Mutex<Queue>, store: &dyn Store) {
    loop {
        let call = {
            let Ok(mut queue) = queue.lock() else { return };
            match queue.calls.pop_front() {
                Some(call) => call,
                None => {
                    queue.draining = false;
                    return;
                }
            }
        };
        // A call that panics is answered by its dropped sender; the calls after it still run.
        if catch_unwind(AssertUnwindSafe(|| call(store))).is_err() {
            tracing::error!("a call to the job store panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A disk that takes as long as the test says: each write and read waits for the test's
    /// go-ahead, and fails saying so if it never comes.
    struct SlowDisk {
        go: std::sync::Mutex<mpsc::Receiver<()>>,
    }

    impl SlowDisk {
        fn wait(&self) -> Result<(), String> {
            let go = self.go.lock().map_err(|e| e.to_string())?;
            go.recv_timeout(Duration::from_secs(10))
                .map_err(|_| "the runtime was stalled while the store waited".to_owned())
        }
    }

    impl Store for SlowDisk {
        fn write(&self, _: &[Write]) -> Result<(), StoreError> {
            self.wait().map_err(|detail| StoreError::Write {
                problem: Problem::Other,
                detail,
            })
        }
        fn read_events(&self, _: &JobId, _: &EventQuery) -> Result<EventPage, StoreError> {
            self.wait().map_err(read_failed)?;
            Ok(EventPage::default())
        }
        fn read_notifications(
            &self,
            _: u64,
            _: Option<&JobId>,
            _: usize,
        ) -> Result<Vec<Notification>, StoreError> {
            panic!("a read that panics")
        }
        fn load(&self) -> Result<Loaded, StoreError> {
            Ok(Loaded::default())
        }
    }

    fn slow_disk() -> (StoreThreads, mpsc::Sender<()>) {
        let (go, waits) = mpsc::channel();
        let disk = SlowDisk {
            go: std::sync::Mutex::new(waits),
        };
        (StoreThreads::new(Arc::new(disk)), go)
    }

    /// The test's default runtime has one thread: a store call made on it would stall the task
    /// that gives the go-ahead.
    #[tokio::test]
    async fn a_write_or_read_that_waits_for_the_disk_leaves_the_runtime_free() {
        let (threads, go) = slow_disk();
        let go_ahead = async {
            tokio::task::yield_now().await;
            go.send(()).unwrap();
            go.send(()).unwrap();
        };
        let job = JobId::from("j");
        let query = EventQuery::default();
        let calls = async {
            let batch = vec![Write::DeleteJob(job.clone())];
            (
                threads.write(batch).await,
                threads.read_events(&job, &query).await,
            )
        };
        let ((written, read), ()) = tokio::join!(calls, go_ahead);
        written.unwrap();
        read.unwrap();
    }

    #[tokio::test]
    async fn a_call_that_panics_is_answered_with_an_error_and_the_store_serves_on() {
        let (threads, go) = slow_disk();
        let failed = threads.read_notifications(0, None, 1).await.unwrap_err();
        assert!(
            failed.to_string().contains("failed unexpectedly"),
            "{failed}"
        );
        go.send(()).unwrap();
        let (job, query) = (JobId::from("j"), EventQuery::default());
        threads.read_events(&job, &query).await.unwrap();
    }
}
