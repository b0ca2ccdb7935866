//! The MCP tasks extension (SEP-2663, `io.modelcontextprotocol/tasks`). For a client that
//! declares it, `job_start`, `job_reply` and `codex` answer with a task at once: one turn of one
//! job, which the client polls with `tasks/get`, answers with `tasks/update` when Codex asks
//! something, and stops with `tasks/cancel`. Claude Code runs such a call in the background and,
//! when the task completes, gives the model its result and starts a new turn by itself.
//!
//! A task id names its job and turn (`<job_id>/<turn>`), so tasks need no table of their own and
//! read back after a restart: a task's state is its turn's. A turn that failed in Codex is a
//! `completed` task whose result has `isError` (some clients drop the content of a `failed`
//! task); a cancelled turn is a `cancelled` task.

use rmcp::model::{
    CallToolResult, CancelTaskParams, ContentBlock, CreateTaskResult, DetailedTask, ElicitRequest,
    ElicitationAction, GetTaskParams, GetTaskResult, InputRequest, InputRequests, JsonObject,
    MetaObject, Task, TaskPayload, TaskStatus, UpdateTaskParams,
};
use rmcp::{ErrorData as McpError, Peer, RoleServer};
use serde_json::{Map, Value};

use super::tools::{ReplyArgs, ReplyOut, StartArgs};
use super::{JobServer, elicit, parse, user_error};
use crate::jobs::{
    Answer, Decision, Event, EventKind, EventQuery, JobError, JobSnapshot, JobStatus,
    RespondRequest,
};
use crate::time::now_rfc3339;

/// The tools that answer with a task for a client that declared the extension.
pub(super) const TASK_TOOLS: [&str; 3] = ["job_start", "job_reply", "codex"];

/// How many of a job's newest events are looked at to say what Codex is doing.
const ACTIVITY_EVENTS: u64 = 20;

/// The id of the task that is turn `turn` of job `job`.
fn task_id(job: &str, turn: u32) -> String {
    format!("{job}/{turn}")
}

/// The job and turn a task id names.
fn job_turn(task_id: &str) -> Result<(&str, u32), McpError> {
    task_id
        .rsplit_once('/')
        .and_then(|(job, turn)| Some((job, turn.parse().ok()?)))
        .ok_or_else(|| unknown_task(task_id))
}

fn unknown_task(task_id: &str) -> McpError {
    McpError::invalid_params(
        format!(
            "no task has the id {:?}; task ids are the ones tools/call answered with",
            crate::text::shorten(task_id, 100)
        ),
        None,
    )
}

/// An error of the engine about a task, as a JSON-RPC error that says it.
fn task_error(task_id: &str, e: JobError) -> McpError {
    match e {
        JobError::UnknownJob(_) => unknown_task(task_id),
        JobError::Store(_) => McpError::internal_error(user_error(e), None),
        other => McpError::invalid_params(user_error(other), None),
    }
}

impl JobServer {
    /// Runs `job_start`, `job_reply` or `codex` and answers with the task of the turn it started;
    /// arguments it cannot take get an error result, as the tool would give.
    pub(super) async fn start_task(
        &self,
        tool: &str,
        args: JsonObject,
        peer: Peer<RoleServer>,
    ) -> rmcp::model::CallToolResponse {
        let started = match tool {
            "job_reply" => match parse::<ReplyArgs>(tool, args) {
                Ok(args) => self.reply_job(args, peer).await,
                Err(e) => Err(e),
            },
            _ => match parse::<StartArgs>(tool, args) {
                Ok(args) => self.start_job(args, peer).await,
                Err(e) => Err(e),
            },
        };
        let job = match started {
            Ok(job) => job,
            Err(e) => {
                return CallToolResult::error(vec![ContentBlock::text(e)]).into();
            }
        };
        let id = task_id(job.job_id.as_str(), job.turn);
        let now = now_rfc3339();
        let task = Task::new(&id, TaskStatus::Working, &now, &now)
            .with_status_message(format!("Codex took the task (job {})", job.job_id))
            .with_ttl_ms(self.task_ttl_ms())
            .with_poll_interval_ms(self.poll_ms());
        // What the model reads while the task runs.
        let mut meta = MetaObject::new();
        meta.insert(
            "io.modelcontextprotocol/model-immediate-response".into(),
            Value::String(format!(
                "Codex job {} runs in the background (turn {}); its answer arrives when the task \
                 completes",
                job.job_id, job.turn
            )),
        );
        rmcp::model::CallToolResponse::Task(CreateTaskResult::new(task).with_meta(meta))
    }

    fn task_ttl_ms(&self) -> u64 {
        u64::try_from(self.settings.task_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    fn poll_ms(&self) -> u64 {
        u64::try_from(self.settings.task_poll.as_millis()).unwrap_or(u64::MAX)
    }

    /// `tasks/get`: the task as its turn stands.
    pub(super) async fn get_task_state(
        &self,
        params: GetTaskParams,
    ) -> Result<GetTaskResult, McpError> {
        let id = params.task_id;
        let (job, turn) = job_turn(&id)?;
        let snapshot = self.manager.snapshot(job).map_err(|e| task_error(&id, e))?;
        if turn == 0 || turn > snapshot.turn {
            return Err(unknown_task(&id));
        }
        let (created_at, updated_at) = self.task_times(&snapshot, turn).await;
        let task = Task::new(&id, TaskStatus::Working, created_at, updated_at)
            .with_ttl_ms(self.task_ttl_ms())
            .with_poll_interval_ms(self.poll_ms());
        let current = turn == snapshot.turn && !snapshot.status.is_settled();
        let detailed = if current && snapshot.status == JobStatus::InputRequired {
            let input_requests: InputRequests = snapshot
                .requests
                .iter()
                .filter_map(|request| {
                    let form = elicit::form(&snapshot.job_id, turn, request).ok()?;
                    let asked = InputRequest::Elicitation(ElicitRequest::new(form));
                    Some((request.request_id.clone(), asked))
                })
                .collect();
            let task = task.with_status_message(format!(
                "Codex asks: {}",
                snapshot
                    .requests
                    .first()
                    .map_or("an answer", |r| r.summary.as_str())
            ));
            DetailedTask::new(task, TaskPayload::InputRequired { input_requests })
        } else if current {
            let task = task.with_status_message(self.activity(&snapshot).await);
            DetailedTask::new(task, TaskPayload::Working)
        } else {
            let text = self
                .manager
                .turn_text(job, Some(turn))
                .await
                .map_err(|e| task_error(&id, e))?;
            if text.status == JobStatus::Cancelled {
                let task = match &text.error {
                    Some(reason) => task.with_status_message(reason.clone()),
                    None => task,
                };
                DetailedTask::new(task, TaskPayload::Cancelled)
            } else {
                let result = self.turn_result(&snapshot, text)?;
                DetailedTask::new(task, TaskPayload::Completed { result })
            }
        };
        Ok(GetTaskResult::new(detailed))
    }

    /// When the turn began (its first event) and when the job last changed (its newest event).
    async fn task_times(&self, job: &JobSnapshot, turn: u32) -> (String, String) {
        let first = EventQuery {
            turn: Some(turn),
            limit: 1,
            include_deltas: true,
            ..EventQuery::default()
        };
        let newest = EventQuery {
            after: job.cursor.saturating_sub(1),
            limit: 1,
            include_deltas: true,
            ..EventQuery::default()
        };
        let at = async |query: &EventQuery| {
            self.manager
                .events(job.job_id.as_str(), query)
                .await
                .ok()
                .and_then(|page| page.events.into_iter().next())
                .map(|e| e.at)
        };
        let now = now_rfc3339();
        let created = at(&first).await.unwrap_or_else(|| now.clone());
        let updated = at(&newest).await.unwrap_or(now);
        (created, updated)
    }

    /// One line on what Codex is doing now, from the job's newest events.
    async fn activity(&self, job: &JobSnapshot) -> String {
        if job.status == JobStatus::Queued {
            return "waiting for a free slot (--max-concurrent-jobs)".to_owned();
        }
        let recent = EventQuery {
            after: job.cursor.saturating_sub(ACTIVITY_EVENTS),
            limit: usize::try_from(ACTIVITY_EVENTS).unwrap_or(20),
            include_deltas: true,
            ..EventQuery::default()
        };
        let events = self
            .manager
            .events(job.job_id.as_str(), &recent)
            .await
            .map(|page| page.events)
            .unwrap_or_default();
        events
            .iter()
            .rev()
            .find_map(describe)
            .unwrap_or_else(|| format!("Codex is working (job {}, turn {})", job.job_id, job.turn))
    }

    /// The result of a task whose turn ended: the tool's own answer for that turn (its final
    /// message within the answer budget), with `isError` when the turn failed or was cut short.
    fn turn_result(
        &self,
        job: &JobSnapshot,
        text: crate::jobs::TurnText,
    ) -> Result<JsonObject, McpError> {
        let completed = text.status == JobStatus::Completed;
        let next = format!(
            "job_reply (job_id {}) continues this thread; job_events shows the steps",
            job.job_id
        );
        let budget = self.settings.answer_budget;
        // What the job says of its latest finished turn is this turn's, if it is the latest.
        let (result_json, changes) = if job.turn == text.turn {
            (job.result_json.clone(), job.changes.clone())
        } else {
            (None, None)
        };
        // A result that is JSON is said once, as JSON.
        let result = completed
            .then_some(text.text)
            .filter(|_| result_json.is_none());
        let answer = if text.turn == 1 {
            let snapshot = JobSnapshot {
                status: text.status,
                turn: text.turn,
                result,
                result_json,
                changes,
                error: text.error,
                requests: Vec::new(),
                ..job.clone()
            };
            budget.answer(&self.start_out(snapshot, Some(next)))
        } else {
            budget.answer(&ReplyOut {
                status: text.status,
                turn: text.turn,
                result,
                result_json,
                changes,
                error: text.error,
                next: Some(next),
                ..ReplyOut::from(job.clone())
            })
        };
        let mut answer = answer.map_err(|e| McpError::internal_error(e, None))?;
        answer.is_error = Some(!completed);
        match serde_json::to_value(answer) {
            Ok(Value::Object(result)) => Ok(result),
            _ => Err(McpError::internal_error("could not write the result", None)),
        }
    }

    /// `tasks/update`: the answers to the task's requests, given as answers to elicitation
    /// forms. An accepted form answers with its decision; a declined one declines; a cancelled
    /// (dismissed) one, or any other, leaves the request waiting.
    pub(super) async fn update_task_input(&self, params: UpdateTaskParams) -> Result<(), McpError> {
        let id = params.task_id;
        let (job, turn) = job_turn(&id)?;
        let snapshot = self.manager.snapshot(job).map_err(|e| task_error(&id, e))?;
        if turn != snapshot.turn || snapshot.status != JobStatus::InputRequired {
            return Err(McpError::invalid_params(
                format!("task {id} waits for no input (it is {})", snapshot.status),
                None,
            ));
        }
        for (key, response) in params.input_responses {
            let Some(request) = snapshot.requests.iter().find(|r| r.request_id == key) else {
                return Err(McpError::invalid_params(
                    format!("task {id} has no input request {key:?}"),
                    None,
                ));
            };
            let action = response
                .get("action")
                .cloned()
                .and_then(|a| serde_json::from_value::<ElicitationAction>(a).ok());
            let content = match response.get("content") {
                Some(Value::Object(content)) => content.clone(),
                _ => Map::new(),
            };
            let (answer, note) = match action {
                Some(ElicitationAction::Accept) => {
                    elicit::answer_of(request, content).ok_or_else(|| {
                        let allowed: Vec<&str> =
                            request.decisions.iter().map(|d| d.as_str()).collect();
                        McpError::invalid_params(
                            format!(
                                "the answer to {key} needs a decision among {}",
                                allowed.join(", ")
                            ),
                            None,
                        )
                    })?
                }
                Some(ElicitationAction::Decline) => (Answer::just(Decision::Decline), None),
                Some(_) => continue,
                None => {
                    return Err(McpError::invalid_params(
                        format!("the answer to {key} needs an action: accept, decline or cancel"),
                        None,
                    ));
                }
            };
            let note = match note {
                Some(note) => format!("answered in the client's task dialog: {note}"),
                None => "answered in the client's task dialog".to_owned(),
            };
            let respond = RespondRequest {
                request_id: key,
                answer,
                note: Some(note),
            };
            self.manager
                .respond(job, respond)
                .await
                .map_err(|e| task_error(&id, e))?;
        }
        Ok(())
    }

    /// `tasks/cancel`: cancels the turn as `job_cancel` does; the job stays usable. A task that
    /// has ended already is left as it is.
    pub(super) async fn cancel_task_turn(&self, params: CancelTaskParams) -> Result<(), McpError> {
        let id = params.task_id;
        let (job, turn) = job_turn(&id)?;
        let snapshot = self.manager.snapshot(job).map_err(|e| task_error(&id, e))?;
        if turn > snapshot.turn || turn == 0 {
            return Err(unknown_task(&id));
        }
        if turn < snapshot.turn || snapshot.status.is_settled() {
            return Ok(());
        }
        match self.manager.cancel(job).await {
            Ok(_) | Err(JobError::AlreadySettled { .. }) => Ok(()),
            Err(e) => Err(task_error(&id, e)),
        }
    }
}

/// What an event says Codex is doing, if it says anything.
fn describe(event: &Event) -> Option<String> {
    let field = |name: &str| event.data.get(name).and_then(Value::as_str);
    let line = match event.kind {
        EventKind::CommandStarted | EventKind::CommandOutputDelta => {
            format!("running `{}`", crate::text::shorten(field("command")?, 120))
        }
        EventKind::CommandCompleted => "ran a command".to_owned(),
        EventKind::FileChangeStarted | EventKind::FileChangeCompleted => "editing files".to_owned(),
        EventKind::McpToolCallStarted => format!("calling the tool {}", field("tool")?),
        EventKind::Reasoning | EventKind::ReasoningDelta => "thinking".to_owned(),
        EventKind::AgentMessage | EventKind::AgentMessageDelta => "writing its answer".to_owned(),
        EventKind::WebSearch => "searching the web".to_owned(),
        EventKind::PlanUpdated => "planning".to_owned(),
        EventKind::TurnStarted | EventKind::UserMessage => "reading the task".to_owned(),
        EventKind::Warning | EventKind::Error => {
            return Some(format!(
                "Codex says: {}",
                crate::text::shorten(field("message")?, 200)
            ));
        }
        _ => return None,
    };
    Some(format!("Codex is {line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_id_names_its_job_and_turn() {
        let id = task_id("job-01ab", 3);
        assert_eq!(job_turn(&id).unwrap(), ("job-01ab", 3));
        for bad in ["job-01ab", "job-01ab/x", ""] {
            assert!(job_turn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn codex_activity_is_said_in_a_line() {
        let event = |kind, data| Event {
            seq: 1,
            kind,
            at: String::new(),
            turn: 1,
            data,
        };
        let command = event(
            EventKind::CommandStarted,
            serde_json::json!({"command": "cargo test"}),
        );
        assert_eq!(describe(&command).unwrap(), "Codex is running `cargo test`");
        let usage = event(EventKind::TokenUsage, serde_json::json!({}));
        assert_eq!(describe(&usage), None);
    }
}
