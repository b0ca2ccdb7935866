//! A store in process memory: everything is gone when the process exits.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{EventPage, EventQuery, Store, StoreError};
use crate::jobs::{Event, JobId, JobRecord, Notification};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    jobs: HashMap<JobId, JobRecord>,
    events: HashMap<JobId, Vec<Event>>,
    notifications: Vec<Notification>,
}

impl MemoryStore {
    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))
    }
}

impl Store for MemoryStore {
    fn put_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        self.lock()?.jobs.insert(job.id.clone(), job.clone());
        Ok(())
    }

    fn append_events(&self, job: &JobId, events: &[Event]) -> Result<(), StoreError> {
        self.lock()?
            .events
            .entry(job.clone())
            .or_default()
            .extend_from_slice(events);
        Ok(())
    }

    fn read_events(&self, job: &JobId, query: &EventQuery) -> Result<EventPage, StoreError> {
        let inner = self.lock()?;
        let all = inner.events.get(job).map(Vec::as_slice).unwrap_or_default();
        // seq n sits at index n - 1: the stream has no gaps.
        let start = usize::try_from(query.after)
            .unwrap_or(usize::MAX)
            .min(all.len());
        let mut page = EventPage {
            cursor: query.after,
            ..EventPage::default()
        };
        let tail = &all[start..];
        for (i, event) in tail.iter().enumerate() {
            if page.events.len() == query.limit {
                page.has_more = tail[i..].iter().any(|e| query.matches(e.kind));
                break;
            }
            page.cursor = event.seq;
            if query.matches(event.kind) {
                page.events.push(event.clone());
            }
        }
        Ok(page)
    }

    fn append_notification(&self, notification: &Notification) -> Result<(), StoreError> {
        self.lock()?.notifications.push(notification.clone());
        Ok(())
    }

    fn read_notifications(
        &self,
        after: u64,
        job: Option<&JobId>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        let inner = self.lock()?;
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(inner.notifications.len());
        Ok(inner.notifications[start..]
            .iter()
            .filter(|n| job.is_none_or(|j| &n.job_id == j))
            .take(limit)
            .cloned()
            .collect())
    }
}
