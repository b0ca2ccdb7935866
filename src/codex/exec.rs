//! The backend for `codex exec --json`: one process per turn, `codex exec resume <thread>` for
//! replies, SIGTERM to cancel (SIGKILL after the stop grace). The fallback when a Codex has
//! neither `mcp-server` nor `app-server`.
//!
//! A job never has two processes: a turn whose predecessor's process still lives (a cancel that
//! the engine settled after its grace) kills it and waits for it first. Each process's reader
//! reports under the turn it was started for, so a late end of the old process cannot end the new
//! turn. Shutdown kills every process at once and waits for the readers.
//!
//! Its limits: exec always runs with approval policy `never` (so there are no approval events,
//! and an escalated command is refused to the model), and it reports no streaming deltas and
//! token usage only at the end of a turn. It does not echo the prompt either; the
//! `user_message` event is made from the prompt we sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use super::mapping::{Counted, Mapped, field, token_usage, with_original};
use super::rpc::{self, Line, RpcChild, RpcReader, ignore_garbage};
use super::session::EXIT_GRACE;
use super::{
    Backend, BackendError, BackendEvent, BackendInfo, CodexSettings, Outbox, ThreadRef, TurnEnd,
    TurnInput, Update, cannot_fork, check_approval_policy, detect, thread_fields,
};
use crate::model::{EventKind, JobId, JobTurn, ThreadOptions};

/// How long `start_turn` waits for Codex to name the thread.
const THREAD_NAMING_WAIT: Duration = Duration::from_secs(5);

pub struct ExecBackend {
    settings: CodexSettings,
    version: detect::Version,
    events: mpsc::Sender<BackendEvent>,
    processes: Arc<Processes>,
    /// The readers of every process; shutdown waits for them.
    readers: TaskTracker,
}

/// The process of each job that has one, and whether the backend is shut down.
#[derive(Default)]
struct Processes {
    by_job: Mutex<HashMap<JobId, Arc<TurnProcess>>>,
    closed: AtomicBool,
}

impl Processes {
    fn by_job(&self) -> MutexGuard<'_, HashMap<JobId, Arc<TurnProcess>>> {
        self.by_job
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One `codex exec` process: one turn.
struct TurnProcess {
    turn: u32,
    child: RpcChild,
    /// Kept while the process may read them.
    _files: TurnFiles,
    /// Set when the turn is stopped on purpose (cancel, a successor, shutdown).
    stopping: AtomicBool,
}

impl TurnProcess {
    /// Kills the process now and waits until it is gone.
    async fn kill(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.child.kill();
        self.child.exit_info(EXIT_GRACE).await;
    }
}

impl ExecBackend {
    pub fn new(
        settings: CodexSettings,
        version: detect::Version,
        events: mpsc::Sender<BackendEvent>,
    ) -> Self {
        tracing::info!(codex = %settings.bin, %version, "using codex exec --json");
        Self {
            settings,
            version,
            events,
            processes: Arc::default(),
            readers: TaskTracker::new(),
        }
    }

    /// The `codex exec` command for the turn, reading what it cannot take as arguments from
    /// `files`.
    fn command(&self, input: &TurnInput, files: &TurnFiles) -> Command {
        let options = &input.options;
        let mut command = Command::new(&self.settings.bin);
        command.current_dir(&options.cwd);
        for override_ in &self.settings.config_overrides {
            command.arg("-c").arg(override_);
        }
        command.args(["exec", "--json", "--skip-git-repo-check"]);
        // A process per turn: the job's profile can be this process's.
        if let Some(profile) = &options.profile {
            command.arg("--profile").arg(profile);
        }
        // `resume` takes no --sandbox or --cd, so every option goes in as a config override.
        for (key, value) in config_overrides(options) {
            command
                .arg("-c")
                .arg(format!("{key}={}", toml_value(&value)));
        }
        // Codex reads base instructions from a file only (`base_instructions` is not a key of
        // its config).
        if let Some(file) = &files.instructions {
            let path = Value::String(file.0.to_string_lossy().into_owned());
            command
                .arg("-c")
                .arg(format!("model_instructions_file={path}"));
        }
        if let ThreadRef::Existing(thread_id) = &input.thread {
            command.args(["resume", thread_id]);
        }
        if let Some(file) = &files.output_schema {
            command.arg("--output-schema").arg(&file.0);
        }
        // After `--`, a prompt that starts with a dash is not taken for an option.
        command.arg("--").arg(&input.prompt);
        command
    }
}

/// What a turn's process reads from files: Codex takes base instructions and an output schema
/// only that way.
struct TurnFiles {
    instructions: Option<TurnFile>,
    output_schema: Option<TurnFile>,
}

impl TurnFiles {
    fn write(input: &TurnInput) -> Result<Self, BackendError> {
        let turn = &input.turn;
        let failed = |what: &str, e: std::io::Error| {
            BackendError::Unavailable(format!("could not write the {what} for `codex exec`: {e}"))
        };
        let instructions = match &input.options.base_instructions {
            Some(text) => Some(
                TurnFile::write(turn, "md", text).map_err(|e| failed("base instructions", e))?,
            ),
            None => None,
        };
        let output_schema = match &input.output_schema {
            Some(schema) => Some(
                TurnFile::write(turn, "schema.json", &schema.to_string())
                    .map_err(|e| failed("output schema", e))?,
            ),
            None => None,
        };
        Ok(Self {
            instructions,
            output_schema,
        })
    }
}

/// A private file for a turn's process, removed when the process is done.
struct TurnFile(std::path::PathBuf);

impl TurnFile {
    fn write(turn: &JobTurn, extension: &str, text: &str) -> std::io::Result<Self> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = std::env::temp_dir().join(format!(
            "codex-async-mcp-{}-{}-{}.{extension}",
            turn.job,
            turn.turn,
            std::process::id()
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(text.as_bytes())?;
        Ok(Self(path))
    }
}

impl Drop for TurnFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The job's options as Codex config overrides (the cwd is the process's own; base instructions
/// go in a file).
fn config_overrides(options: &ThreadOptions) -> Vec<(String, Value)> {
    let names = [
        "model",
        "approval_policy",
        "sandbox_mode",
        "base_instructions",
        "developer_instructions",
    ];
    let mut fields = thread_fields(options, names);
    fields.remove("cwd");
    fields.remove("base_instructions");
    let config = match fields.remove("config") {
        Some(Value::Object(config)) => config,
        _ => serde_json::Map::new(),
    };
    fields.into_iter().chain(config).collect()
}

/// A JSON value written as a TOML value, for `-c key=value`.
fn toml_value(value: &Value) -> String {
    match value {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(toml_value).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{} = {}", Value::String(k.clone()), toml_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        // JSON strings, numbers and booleans are TOML as they are; TOML has no null.
        Value::Null => "\"\"".to_owned(),
        other => other.to_string(),
    }
}

impl Backend for ExecBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "exec",
            codex_version: self.version.to_string(),
        }
    }

    fn validate(&self, options: &ThreadOptions) -> Result<(), String> {
        // exec never asks for approval.
        check_approval_policy(&self.info(), options, &["never"])
    }

    fn settings_per_turn(&self) -> bool {
        // Every turn is a new process, started with the job's options.
        true
    }

    fn takes_output_schema(&self) -> bool {
        // `codex exec --output-schema FILE`.
        true
    }

    fn start_turn(&self, input: TurnInput) -> BoxFuture<'_, Result<Option<String>, BackendError>> {
        async move {
            if self.processes.closed.load(Ordering::Relaxed) {
                return Err(BackendError::ShuttingDown);
            }
            if let ThreadRef::Fork(_) = &input.thread {
                return Err(BackendError::Unsupported(cannot_fork(&self.info())));
            }
            if input.review.is_some() {
                return Err(BackendError::Unsupported("exec runs no review".to_owned()));
            }
            let turn = input.turn.clone();
            let before = self.processes.by_job().get(&turn.job).cloned();
            if let Some(before) = before {
                tracing::debug!(%turn, "killing the process of the job's previous turn first");
                before.kill().await;
            }
            let files = TurnFiles::write(&input)?;
            let (child, reader) = rpc::spawn(self.command(&input, &files)).map_err(|e| {
                BackendError::Unavailable(format!(
                    "could not start `{} exec`: {e}",
                    self.settings.bin
                ))
            })?;
            // exec reads stdin to its end before it starts.
            child.close_stdin().await;
            let process = Arc::new(TurnProcess {
                turn: turn.turn,
                child,
                _files: files,
                stopping: AtomicBool::new(false),
            });
            {
                let mut by_job = self.processes.by_job();
                if self.processes.closed.load(Ordering::Relaxed) {
                    drop(by_job);
                    process.kill().await;
                    return Err(BackendError::ShuttingDown);
                }
                by_job.insert(turn.job.clone(), process.clone());
            }
            let (named_tx, named) = oneshot::channel();
            let resumed = match &input.thread {
                ThreadRef::Existing(thread_id) => Some(thread_id.clone()),
                ThreadRef::New | ThreadRef::Fork(_) => None,
            };
            self.readers.spawn(read_turn(
                turn,
                input.prompt.clone(),
                process,
                reader,
                Outbox::new(self.events.clone()),
                self.processes.clone(),
                (resumed.is_none()).then_some(named_tx),
            ));
            match resumed {
                Some(thread_id) => Ok(Some(thread_id)),
                None => Ok(tokio::time::timeout(THREAD_NAMING_WAIT, named)
                    .await
                    .ok()
                    .and_then(Result::ok)),
            }
        }
        .boxed()
    }

    fn can_continue<'a>(&'a self, _thread_id: &'a str) -> BoxFuture<'a, Result<(), String>> {
        // `codex exec resume` loads the thread from disk in any process.
        async { Ok(()) }.boxed()
    }

    fn interrupt<'a>(&'a self, turn: &'a JobTurn) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            let process = self
                .processes
                .by_job()
                .get(&turn.job)
                .filter(|p| p.turn == turn.turn)
                .cloned()
                .ok_or(BackendError::NoRunningTurn)?;
            process.stopping.store(true, Ordering::Relaxed);
            process.child.terminate();
            // A process that ignores SIGTERM is killed after the grace.
            let grace = self.settings.stop_grace;
            self.readers.spawn(async move {
                let exited = tokio::time::timeout(grace, process.child.wait_exit()).await;
                if exited.is_err() {
                    tracing::warn!(grace = ?grace, "codex exec ignored SIGTERM; killing it");
                    process.child.kill();
                }
            });
            Ok(())
        }
        .boxed()
    }

    fn forget(&self, _job: &JobId) {
        // A job's process leaves the table when it exits.
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async move {
            self.processes.closed.store(true, Ordering::Relaxed);
            let processes: Vec<Arc<TurnProcess>> =
                self.processes.by_job().drain().map(|(_, p)| p).collect();
            futures::future::join_all(processes.iter().map(|p| p.kill())).await;
            self.readers.close();
            self.readers.wait().await;
        }
        .boxed()
    }
}

/// Reads one turn's JSONL to its end and reports it; a process that ends without ending the turn
/// fails it (or, when stopped on purpose, interrupts it).
async fn read_turn(
    turn: JobTurn,
    prompt: String,
    process: Arc<TurnProcess>,
    mut reader: RpcReader,
    out: Outbox,
    processes: Arc<Processes>,
    mut thread_named: Option<oneshot::Sender<String>>,
) {
    let mut ended = false;
    let mut last_message: Option<String> = None;
    while let Some(line) = reader.next_line().await {
        let event = match line {
            Line::Json(event) => Value::Object(event),
            Line::Garbage(line) => {
                ignore_garbage("codex exec", &line);
                continue;
            }
        };
        if ended {
            continue;
        }
        if let Some(text) = event
            .pointer("/item/text")
            .and_then(Value::as_str)
            .filter(|_| {
                event.pointer("/item/type").and_then(Value::as_str) == Some("agent_message")
            })
        {
            last_message = Some(text.to_owned());
        }
        for mapped in map(&event, &last_message, &prompt) {
            let update = match mapped {
                Mapped::Skip | Mapped::TaskComplete(_) => continue,
                Mapped::Record(kind, data) => Update::Event { kind, data },
                Mapped::ThreadStarted { thread_id, data } => match thread_named.take() {
                    Some(named) => {
                        let _ = named.send(thread_id.clone());
                        Update::Thread { thread_id, data }
                    }
                    // A resumed thread was named when it started.
                    None => continue,
                },
                Mapped::TurnEnded(end) => {
                    ended = true;
                    Update::TurnEnded(end)
                }
            };
            out.send(turn.clone(), update).await;
        }
    }
    let exit = process.child.exit_info(EXIT_GRACE).await;
    {
        let mut by_job = processes.by_job();
        if by_job
            .get(&turn.job)
            .is_some_and(|p| Arc::ptr_eq(p, &process))
        {
            by_job.remove(&turn.job);
        }
    }
    // Shutdown leaves the turns it stopped to the engine.
    if ended || processes.closed.load(Ordering::Relaxed) {
        return;
    }
    let data = json!({"exit_status": exit.status, "stderr_tail": exit.stderr_tail});
    let end = if process.stopping.load(Ordering::Relaxed) {
        TurnEnd::Interrupted {
            reason: format!("codex exec was stopped ({})", exit.status),
            data,
        }
    } else {
        TurnEnd::Failed {
            error: format!("Codex exited before the turn ended ({exit})"),
            data,
        }
    };
    out.send(turn, Update::TurnEnded(end)).await;
}

/// One `codex exec --json` line as our events: a turn's start also stands for the prompt, and
/// its end also reports the token usage.
fn map(event: &Value, last_message: &Option<String>, prompt: &str) -> Vec<Mapped> {
    let record = |kind, fields| Mapped::event(kind, fields, event);
    let item = event.get("item").unwrap_or(&Value::Null);
    let item_type = item.get("type").and_then(Value::as_str).unwrap_or("");
    let one = match event.get("type").and_then(Value::as_str).unwrap_or("") {
        "thread.started" => match event.get("thread_id").and_then(Value::as_str) {
            Some(id) => Mapped::ThreadStarted {
                thread_id: id.to_owned(),
                data: with_original(
                    json!({"thread_id": id, "model": Value::Null, "cwd": Value::Null}),
                    event,
                ),
            },
            None => Mapped::Skip,
        },
        "turn.started" => {
            return vec![
                record(EventKind::TurnStarted, json!({"turn_id": Value::Null})),
                record(EventKind::UserMessage, json!({"text": prompt})),
            ];
        }
        "turn.completed" => {
            // The thread's tokens: a resumed thread counts its earlier turns too.
            let counts = event.get("usage").unwrap_or(&Value::Null);
            let usage = token_usage(counts, Counted::Thread, event);
            let end = Mapped::TurnEnded(TurnEnd::Completed {
                result: last_message.clone(),
                data: with_original(json!({}), event),
            });
            return vec![usage, end];
        }
        "turn.failed" => Mapped::TurnEnded(TurnEnd::Failed {
            error: event
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("Codex reported the turn as failed")
                .to_owned(),
            data: with_original(json!({}), event),
        }),
        // Also used for retry notices: only `turn.failed` ends the turn.
        "error" => record(
            EventKind::Error,
            json!({"message": field(event, "message")}),
        ),
        "item.started" => match item_type {
            "command_execution" => record(
                EventKind::CommandStarted,
                json!({"call_id": field(item, "id"), "command": field(item, "command"), "cwd": Value::Null}),
            ),
            "file_change" => record(
                EventKind::FileChangeStarted,
                json!({"call_id": field(item, "id"), "changes": field(item, "changes")}),
            ),
            "mcp_tool_call" => record(
                EventKind::McpToolCallStarted,
                json!({"call_id": field(item, "id"), "invocation": {"server": field(item, "server"), "tool": field(item, "tool")}}),
            ),
            _ => Mapped::Skip,
        },
        "item.completed" => match item_type {
            "agent_message" => record(
                EventKind::AgentMessage,
                json!({"text": field(item, "text")}),
            ),
            "reasoning" => record(EventKind::Reasoning, json!({"text": field(item, "text")})),
            "command_execution" => record(
                EventKind::CommandCompleted,
                json!({
                    "call_id": field(item, "id"),
                    "command": field(item, "command"),
                    "exit_code": field(item, "exit_code"),
                    "output": field(item, "aggregated_output"),
                    "status": field(item, "status"),
                }),
            ),
            "file_change" => record(
                EventKind::FileChangeCompleted,
                json!({"call_id": field(item, "id"), "success": item.get("status").and_then(Value::as_str) == Some("completed"), "output": field(item, "changes")}),
            ),
            "mcp_tool_call" => record(
                EventKind::McpToolCallCompleted,
                json!({"call_id": field(item, "id"), "result": field(item, "result")}),
            ),
            "web_search" => record(EventKind::WebSearch, json!({"query": field(item, "query")})),
            "todo_list" => record(
                EventKind::PlanUpdated,
                json!({"plan": field(item, "items")}),
            ),
            // exec reports warnings as error items.
            "error" => record(
                EventKind::Warning,
                json!({"message": field(item, "message")}),
            ),
            other => record(
                EventKind::CodexEvent,
                json!({"codex_type": format!("item.{other}")}),
            ),
        },
        other => record(EventKind::CodexEvent, json!({"codex_type": other})),
    };
    vec![one]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_toml_config_overrides() {
        assert_eq!(toml_value(&json!("a \"b\"")), r#""a \"b\"""#);
        assert_eq!(toml_value(&json!(3)), "3");
        assert_eq!(toml_value(&json!({"x": [1, true]})), r#"{"x" = [1, true]}"#);
    }

    #[test]
    fn a_completed_turn_reports_usage_then_ends_with_the_last_message() {
        let event = json!({"type": "turn.completed",
            "usage": {"input_tokens": 3, "cached_input_tokens": 1, "output_tokens": 2}});
        let mapped = map(&event, &Some("done".into()), "p");
        let Mapped::Record(EventKind::TokenUsage, data) = &mapped[0] else {
            panic!("{mapped:?}");
        };
        // What `exec` counts is the thread's so far: the engine takes this turn's share.
        assert_eq!(
            data["thread_usage"],
            json!({"input": 3, "cached": 1, "output": 2, "reasoning": 0})
        );
        assert!(matches!(
            &mapped[1],
            Mapped::TurnEnded(TurnEnd::Completed { result: Some(r), .. }) if r == "done"
        ));
    }

    #[test]
    fn a_failed_turn_ends_with_its_error_and_error_lines_do_not_end_it() {
        let failed = json!({"type": "turn.failed", "error": {"message": "bad request"}});
        assert!(matches!(
            &map(&failed, &None, "p")[0],
            Mapped::TurnEnded(TurnEnd::Failed { error, .. }) if error == "bad request"
        ));
        let notice = json!({"type": "error", "message": "Reconnecting... 1/5"});
        assert!(matches!(
            &map(&notice, &None, "p")[0],
            Mapped::Record(EventKind::Error, _)
        ));
    }
}
