//! [`AsyncStore`]: the store as the engine uses it, off tokio's worker threads.
//!
//! A SQLite commit waits on the disk (an fsync) and a read may scan; either would stall every
//! task on the worker that ran it. Both run on tokio's blocking pool instead. Writes run one at a
//! time, in the order they were called, and a batch is acknowledged only after its commit. (A
//! thread of the store's own would do as well, but tokio's paused test clock cannot see it and
//! jumps ahead while a write is in flight; the blocking pool keeps that clock honest.)

use std::sync::Arc;

use tokio::sync::Mutex;

use super::{Loaded, Problem, Store, StoreError, Write};
use crate::model::{EventPage, EventQuery, JobId, Notification};

/// The store behind an async face; clones share it.
#[derive(Clone)]
pub struct AsyncStore {
    store: Arc<dyn Store>,
    /// Held by the write in flight: writes are saved in the order they were called.
    writing: Arc<Mutex<()>>,
}

impl AsyncStore {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            writing: Arc::default(),
        }
    }

    /// Saves a batch in one transaction, or none of it, after every batch called before it. The
    /// batch is saved even if the caller stops waiting.
    pub async fn write(&self, batch: Vec<Write>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let turn = Arc::clone(&self.writing).lock_owned().await;
        let store = Arc::clone(&self.store);
        let saved = tokio::task::spawn_blocking(move || {
            let saved = store.write(&batch);
            drop(turn);
            saved
        });
        saved.await.unwrap_or_else(|e| {
            Err(StoreError::Write {
                problem: Problem::Other,
                detail: format!("a write to the store failed: {e}"),
            })
        })
    }

    pub async fn read_events(
        &self,
        job: JobId,
        query: EventQuery,
    ) -> Result<EventPage, StoreError> {
        self.read(move |store| store.read_events(&job, &query))
            .await
    }

    /// Notifications with `seq` greater than `after`, oldest first, for one job or all.
    pub async fn read_notifications(
        &self,
        after: u64,
        job: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        self.read(move |store| store.read_notifications(after, job.as_ref(), limit))
            .await
    }

    /// What the store holds, read in place: only at start-up, before anything is served.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        self.store.load()
    }

    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || read(&*store))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Read {
                    problem: Problem::Other,
                    detail: format!("a read of the store failed: {e}"),
                })
            })
    }
}
