//! What the two long-lived backends (`mcp-server`, `app-server`) share: one Codex child at a time,
//! started with the server's `-c` overrides, greeted with a handshake, restarted for the next
//! turn when it dies, and killed on purpose at shutdown.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use super::rpc::{self, ExitInfo, RpcChild, RpcReader};
use super::{BackendError, CodexSettings, Outbox, TurnEnd, Update};
use crate::jobs::JobId;

/// How long the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a child that closed its stdout gets to exit before it is killed.
pub(crate) const EXIT_GRACE: Duration = Duration::from_secs(2);

/// One running child and what its backend knows about the jobs it serves (`R`).
pub(crate) struct Session<R> {
    pub(crate) rpc: RpcChild,
    pub(crate) routes: Mutex<R>,
    /// Set when we kill the child on purpose, so its exit is not reported as a failure.
    closing: AtomicBool,
}

impl<R> Session<R> {
    /// Waits for the child to exit (after its stdout closed) and logs how, quietly when we
    /// stopped it ourselves.
    pub(crate) async fn exited(&self, name: &str) -> ExitInfo {
        let exit = self.rpc.exit_info(EXIT_GRACE).await;
        if self.closing.load(Ordering::Relaxed) {
            tracing::debug!(%exit, "codex {name} stopped");
        } else {
            tracing::warn!(%exit, "codex {name} exited");
        }
        exit
    }

    async fn stop(&self) -> ExitInfo {
        self.closing.store(true, Ordering::Relaxed);
        self.rpc.kill();
        self.rpc.exit_info(EXIT_GRACE).await
    }
}

/// Fails the turns a dead child was running, with how it ended.
pub(crate) async fn fail_orphans(out: &Outbox, jobs: Vec<JobId>, exit: &ExitInfo) {
    for job in jobs {
        let error = format!("Codex exited while the turn was running ({exit})");
        let data = json!({"exit_status": exit.status, "stderr_tail": exit.stderr_tail});
        out.send(job, Update::TurnEnded(TurnEnd::Failed { error, data }))
            .await;
    }
}

/// The first request to a new child and the notification that follows its answer.
pub(crate) struct Handshake {
    pub(crate) method: &'static str,
    pub(crate) params: Value,
    pub(crate) initialized: &'static str,
}

/// The slot for a backend's child: `codex [-c …] <subcommand>`.
pub(crate) struct ChildSlot<R> {
    settings: CodexSettings,
    subcommand: &'static str,
    slot: tokio::sync::Mutex<Option<Arc<Session<R>>>>,
}

impl<R: Default + Send + 'static> ChildSlot<R> {
    pub(crate) fn new(settings: CodexSettings, subcommand: &'static str) -> Self {
        Self {
            settings,
            subcommand,
            slot: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) fn settings(&self) -> &CodexSettings {
        &self.settings
    }

    /// The live session, starting a new child if there is none or the last one died: `read`
    /// gets the child's reader (before the handshake, which it must answer), then the
    /// handshake runs.
    pub(crate) async fn session<F, Fut>(
        &self,
        handshake: &Handshake,
        read: F,
    ) -> Result<Arc<Session<R>>, BackendError>
    where
        F: FnOnce(Arc<Session<R>>, RpcReader) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut slot = self.slot.lock().await;
        if let Some(session) = slot.as_ref().filter(|s| !s.rpc.has_exited()) {
            return Ok(session.clone());
        }
        let bin = &self.settings.bin;
        let mut command = Command::new(bin);
        for override_ in &self.settings.config_overrides {
            command.arg("-c").arg(override_);
        }
        command.arg(self.subcommand);
        let (rpc, reader) = rpc::spawn(command).map_err(|e| {
            BackendError::Unavailable(format!("could not start `{bin} {}`: {e}", self.subcommand))
        })?;
        let session = Arc::new(Session {
            rpc,
            routes: Mutex::new(R::default()),
            closing: AtomicBool::new(false),
        });
        tokio::spawn(read(session.clone(), reader));
        let greeted = match session
            .rpc
            .call(
                handshake.method,
                handshake.params.clone(),
                HANDSHAKE_TIMEOUT,
            )
            .await
        {
            Ok(_) => session.rpc.notify(handshake.initialized, json!({})).await,
            Err(e) => Err(e),
        };
        if let Err(e) = greeted {
            let exit = session.stop().await;
            return Err(BackendError::Unavailable(format!(
                "`{bin} {}` failed its handshake ({e}); Codex: {exit}",
                self.subcommand
            )));
        }
        tracing::info!(pid = ?session.rpc.pid(), "codex {} is ready", self.subcommand);
        *slot = Some(session.clone());
        Ok(session)
    }

    /// The session now, if a child was started.
    pub(crate) async fn current(&self) -> Option<Arc<Session<R>>> {
        self.slot.lock().await.clone()
    }

    /// Kills the child for good.
    pub(crate) async fn shutdown(&self) {
        if let Some(session) = self.slot.lock().await.take() {
            session.stop().await;
        }
    }
}
