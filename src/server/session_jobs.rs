//! `--max-jobs-per-session`: the jobs one MCP session has started, so that one client of a
//! shared server cannot fill it. Counted are the jobs not settled (queued, running, waiting for
//! an answer); clients on the sessionless 2026-07-28 protocol share one count.

use std::sync::Arc;

use crate::jobs::{JobId, JobManager, JobSnapshot};

/// The jobs a session started. Clones share the list.
#[derive(Clone, Debug, Default)]
pub(crate) struct SessionJobs(Arc<tokio::sync::Mutex<Vec<JobId>>>);

impl SessionJobs {
    /// Runs `start` unless the session already has `cap` unsettled jobs, and counts the job it
    /// starts. Starts of one session run one at a time, so two cannot both take the last place.
    pub(crate) async fn start<F>(
        &self,
        manager: &JobManager,
        cap: Option<usize>,
        start: F,
    ) -> Result<JobSnapshot, String>
    where
        F: Future<Output = Result<JobSnapshot, String>>,
    {
        let Some(cap) = cap else { return start.await };
        let mut jobs = self.0.lock().await;
        jobs.retain(|id| {
            manager
                .snapshot(id.as_str())
                .is_ok_and(|job| !job.status.is_settled())
        });
        if jobs.len() >= cap {
            return Err(format!(
                "this session already has {} jobs queued, running or waiting for an answer, the \
                 most this server allows (--max-jobs-per-session {cap}); wait for one to settle \
                 (job_wait) or cancel one (job_cancel)",
                jobs.len()
            ));
        }
        let job = start.await?;
        if !jobs.contains(&job.job_id) {
            jobs.push(job.job_id.clone());
        }
        Ok(job)
    }
}
