//! A backend whose Codex is brought up in the background, so the server answers its clients at
//! once (Codex leaves out an MCP server that is not ready within about a second, and `claude -p`
//! waits about two): what needs Codex waits until it is up, and a Codex that turns out to be
//! missing or unusable is reported to each of them, with what to do, instead of stopping the
//! server. The start may wait for a signal (on stdio, the client's first answer), and a server
//! stopped before it gives up the start instead of waiting for it.

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{
    Backend, BackendError, BackendEvent, BackendInfo, BackendKind, CodexSettings, TurnInput,
    start_backend,
};
use crate::model::{JobId, JobTurn, ThreadOptions};

/// Where the start stands: `None` while it runs.
type Started = Option<Result<Arc<dyn Backend>, String>>;

pub struct StartingBackend {
    started: watch::Receiver<Started>,
    /// Cancelled by [`Backend::shutdown`]: a start that has not begun by then never does.
    abandoned: CancellationToken,
}

impl StartingBackend {
    /// Starts the backend of `kind` for `settings` in the background, once `after` is done.
    pub fn spawn(
        settings: CodexSettings,
        kind: BackendKind,
        events: mpsc::Sender<BackendEvent>,
        after: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        let (done, started) = watch::channel(None);
        let abandoned = CancellationToken::new();
        let stopped = abandoned.clone();
        tokio::spawn(async move {
            tokio::select! {
                biased;
                () = stopped.cancelled() => {
                    let problem = "the server stopped before Codex was started".to_owned();
                    let _ = done.send(Some(Err(problem)));
                    return;
                }
                () = after => {}
            }
            let outcome = start_backend(settings, kind, events)
                .await
                .map_err(|e| format!("{e:#}"));
            if let Err(problem) = &outcome {
                tracing::error!(%problem, "Codex is not usable; tools that need it say why");
            }
            let _ = done.send(Some(outcome));
        });
        Self { started, abandoned }
    }

    /// The backend once Codex is up, or why it cannot be.
    async fn backend(&self) -> Result<Arc<dyn Backend>, String> {
        let mut started = self.started.clone();
        let outcome = started
            .wait_for(Option::is_some)
            .await
            .map_err(|_| "the start of Codex was abandoned".to_owned())?
            .clone();
        outcome.unwrap_or_else(|| Err("Codex is still starting".to_owned()))
    }

    /// The backend if Codex is up by now.
    fn now(&self) -> Option<Arc<dyn Backend>> {
        match &*self.started.borrow() {
            Some(Ok(backend)) => Some(backend.clone()),
            _ => None,
        }
    }
}

impl Backend for StartingBackend {
    fn info(&self) -> BackendInfo {
        match &*self.started.borrow() {
            Some(Ok(backend)) => backend.info(),
            Some(Err(_)) => BackendInfo {
                name: "unavailable",
                codex_version: "unknown".to_owned(),
            },
            None => BackendInfo {
                name: "starting",
                codex_version: "unknown".to_owned(),
            },
        }
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        async move { self.backend().await.map(drop) }.boxed()
    }

    fn validate(&self, options: &ThreadOptions) -> Result<(), String> {
        match &*self.started.borrow() {
            Some(Ok(backend)) => backend.validate(options),
            Some(Err(problem)) => Err(problem.clone()),
            None => Err("Codex is still starting; try again in a moment".to_owned()),
        }
    }

    fn settings_per_turn(&self) -> bool {
        self.now()
            .is_some_and(|backend| backend.settings_per_turn())
    }

    fn fork_thread<'a>(
        &'a self,
        job: &'a JobId,
        thread: &'a str,
        options: &'a ThreadOptions,
    ) -> BoxFuture<'a, Result<String, BackendError>> {
        async move {
            let backend = self.backend().await.map_err(BackendError::Unavailable)?;
            backend.fork_thread(job, thread, options).await
        }
        .boxed()
    }

    fn reviews(&self) -> bool {
        self.now().is_some_and(|backend| backend.reviews())
    }

    fn forks_threads(&self) -> bool {
        self.now().is_some_and(|backend| backend.forks_threads())
    }

    fn takes_output_schema(&self) -> bool {
        self.now()
            .is_some_and(|backend| backend.takes_output_schema())
    }

    fn start_turn(&self, input: TurnInput) -> BoxFuture<'_, Result<Option<String>, BackendError>> {
        async move {
            let backend = self.backend().await.map_err(BackendError::Unavailable)?;
            backend.start_turn(input).await
        }
        .boxed()
    }

    fn can_continue<'a>(&'a self, thread_id: &'a str) -> BoxFuture<'a, Result<(), String>> {
        async move { self.backend().await?.can_continue(thread_id).await }.boxed()
    }

    fn steer<'a>(
        &'a self,
        turn: &'a JobTurn,
        prompt: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            let backend = self.backend().await.map_err(BackendError::Unavailable)?;
            backend.steer(turn, prompt).await
        }
        .boxed()
    }

    fn interrupt<'a>(&'a self, turn: &'a JobTurn) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            match self.now() {
                Some(backend) => backend.interrupt(turn).await,
                // Codex has no turn of ours before it is up.
                None => Err(BackendError::NoRunningTurn),
            }
        }
        .boxed()
    }

    fn forget(&self, job: &JobId) {
        if let Some(backend) = self.now() {
            backend.forget(job);
        }
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async move {
            self.abandoned.cancel();
            // A Codex still starting is stopped once it is up (the engine bounds this wait).
            if let Ok(backend) = self.backend().await {
                backend.shutdown().await;
            }
        }
        .boxed()
    }
}
