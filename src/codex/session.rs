//! What the two long-lived backends (`mcp-server`, `app-server`) share: one Codex child at a time,
//! started with the server's `-c` overrides, greeted with a handshake, restarted for the next
//! turn when it dies, killed on purpose at shutdown, and the end of its reader.
//!
//! A restart runs outside the slot's lock: `current()` (which cancels and replies use) never waits
//! behind a handshake. Once the slot is closed, no child is started again. A backend may retire
//! an idle child ([`ChildSlot::retire_if`]); the next turn starts a new one.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;
use tokio_util::task::TaskTracker;

use super::rpc::{self, ExitInfo, RpcChild, RpcReader};
use super::{BackendError, CodexSettings, Outbox, TurnEnd, Update};
use crate::model::{JobId, JobTurn};

/// How long the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a child that closed its stdout gets to exit before it is killed.
pub(crate) const EXIT_GRACE: Duration = Duration::from_secs(2);

/// One running child and what its backend knows about the jobs it serves (`R`).
pub(crate) struct Session<R> {
    pub(crate) rpc: RpcChild,
    pub(crate) routes: Mutex<R>,
    /// Set when we stop the child on purpose: its exit is no failure, and the turns it ran are
    /// left for the engine to settle.
    closing: AtomicBool,
}

impl<R> Session<R> {
    /// The routes, whatever a panic elsewhere left in them.
    pub(crate) fn routes(&self) -> MutexGuard<'_, R> {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for the child to exit (after its stdout closed), then fails the turns it was running
    /// with how it ended, unless it was stopped on purpose. Every reader ends with this.
    pub(crate) async fn wind_up(
        &self,
        name: &str,
        out: &Outbox,
        running: impl FnOnce(&mut R) -> Vec<JobTurn>,
    ) {
        let exit = self.rpc.exit_info(EXIT_GRACE).await;
        let orphaned = running(&mut self.routes());
        if self.closing.load(Ordering::Relaxed) {
            tracing::debug!(%exit, "codex {name} stopped");
            return;
        }
        tracing::warn!(%exit, "codex {name} exited");
        fail_orphans(out, orphaned, &exit).await;
    }

    /// Kills the child at once; [`Session::stop`] then waits for it.
    fn kill(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.rpc.kill();
    }

    async fn stop(&self) -> ExitInfo {
        self.kill();
        self.rpc.exit_info(EXIT_GRACE).await
    }
}

/// Drops `job`'s threads from a child's thread routes, telling `dropped` each one (a job that is
/// deleted leaves nothing behind in a long-lived child's tables).
pub(crate) fn forget_threads(
    by_thread: &mut HashMap<String, JobId>,
    job: &JobId,
    mut dropped: impl FnMut(&str),
) {
    by_thread.retain(|thread, owner| {
        let theirs = owner == job;
        if theirs {
            dropped(thread);
        }
        !theirs
    });
}

/// Fails the turns a dead child was running, with how it ended.
pub(crate) async fn fail_orphans(out: &Outbox, turns: Vec<JobTurn>, exit: &ExitInfo) {
    for turn in turns {
        let error = format!("Codex exited while the turn was running ({exit})");
        let data = json!({"exit_status": exit.status, "stderr_tail": exit.stderr_tail});
        out.send(turn, Update::TurnEnded(TurnEnd::Failed { error, data }))
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
    state: Mutex<SlotState<R>>,
    /// One start at a time: a second caller waits for the first start and uses its child.
    starting: tokio::sync::Mutex<()>,
    /// The readers of every child this slot started; shutdown waits for them.
    readers: TaskTracker,
}

struct SlotState<R> {
    /// The child that serves turns.
    live: Option<Arc<Session<R>>>,
    /// A child still in its handshake, so shutdown can kill it too.
    starting: Option<Arc<Session<R>>>,
    /// Shut down: no child is started again.
    closed: bool,
}

impl<R: Default + Send + 'static> ChildSlot<R> {
    pub(crate) fn new(settings: CodexSettings, subcommand: &'static str) -> Self {
        Self {
            settings,
            subcommand,
            state: Mutex::new(SlotState {
                live: None,
                starting: None,
                closed: false,
            }),
            starting: tokio::sync::Mutex::new(()),
            readers: TaskTracker::new(),
        }
    }

    pub(crate) fn settings(&self) -> &CodexSettings {
        &self.settings
    }

    fn state(&self) -> MutexGuard<'_, SlotState<R>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        if let Some(session) = self.alive() {
            return Ok(session);
        }
        let _one_start = self.starting.lock().await;
        if let Some(session) = self.alive() {
            return Ok(session);
        }
        if self.state().closed {
            return Err(BackendError::ShuttingDown);
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
        {
            let mut state = self.state();
            if state.closed {
                drop(state);
                session.kill();
                return Err(BackendError::ShuttingDown);
            }
            state.starting = Some(session.clone());
        }
        self.readers.spawn(read(session.clone(), reader));
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
        let closed = {
            let mut state = self.state();
            state.starting = None;
            if greeted.is_ok() && !state.closed {
                state.live = Some(session.clone());
            }
            state.closed
        };
        if closed {
            session.stop().await;
            return Err(BackendError::ShuttingDown);
        }
        if let Err(e) = greeted {
            let exit = session.stop().await;
            return Err(BackendError::Unavailable(format!(
                "`{bin} {}` failed its handshake ({e}); Codex: {exit}",
                self.subcommand
            )));
        }
        tracing::info!(pid = ?session.rpc.pid(), "codex {} is ready", self.subcommand);
        Ok(session)
    }

    /// The live session, if its child has not exited.
    fn alive(&self) -> Option<Arc<Session<R>>> {
        self.state()
            .live
            .as_ref()
            .filter(|s| !s.rpc.has_exited())
            .cloned()
    }

    /// Stops the live child if `idle` says so, judging under its routes' lock: the next turn
    /// starts a new child. `idle` also marks the routes, so a turn that got this child just
    /// before sees that it must not use it (see the app-server backend). Returns whether it
    /// stopped the child.
    pub(crate) async fn retire_if(&self, idle: impl FnOnce(&mut R) -> bool) -> bool {
        let retired = {
            let mut state = self.state();
            let retire = state
                .live
                .as_ref()
                .is_some_and(|live| idle(&mut live.routes()));
            if retire { state.live.take() } else { None }
        };
        match retired {
            Some(session) => {
                session.stop().await;
                true
            }
            None => false,
        }
    }

    /// The latest session now, alive or not; never waits for a restart.
    pub(crate) fn current(&self) -> Option<Arc<Session<R>>> {
        self.state().live.clone()
    }

    /// Closes the slot for good, kills its child (and one in its handshake), and waits until the
    /// readers have sent everything they read.
    pub(crate) async fn shutdown(&self) {
        let sessions: Vec<Arc<Session<R>>> = {
            let mut state = self.state();
            state.closed = true;
            [state.live.take(), state.starting.take()]
                .into_iter()
                .flatten()
                .collect()
        };
        sessions.iter().for_each(|s| s.kill());
        futures::future::join_all(sessions.iter().map(|s| s.stop())).await;
        self.readers.close();
        self.readers.wait().await;
    }
}
