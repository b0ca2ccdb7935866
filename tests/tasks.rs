//! End to end: the MCP tasks extension (SEP-2663), as interactive Claude Code uses it, against
//! the real `codex app-server` 0.169.0 and the mock model. The client connects with
//! `server/discover` (2026-07-28) and declares the extension; `job_start`, `job_reply` and
//! `codex` then answer with a task that `tasks/get`, `tasks/update` and `tasks/cancel` drive.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failed test

mod support;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, CreateTaskResult, GetTaskParams,
    SubscriptionFilter, TaskPayload, TaskStatus, UpdateTaskParams,
};
use serde_json::{Value, json};
use support::codex_install::{codex, inspector};
use support::mock_model::MockModel;
use support::server::{Launch, Sandbox, Server, within};

struct Setup {
    sandbox: Sandbox,
    _model: MockModel,
    server: Server,
}

/// A server on app-server 0.169.0 and a client that speaks tasks (`tasks: false`: one that
/// does not, on the `initialize` handshake).
async fn setup(tasks: bool) -> Setup {
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, "gpt-5.5");
    let server = launch(&sandbox, tasks).await;
    Setup {
        sandbox,
        _model: model,
        server,
    }
}

async fn launch(sandbox: &Sandbox, tasks: bool) -> Server {
    let bin = codex("0.169.0");
    let launch = Launch::new(&bin, sandbox)
        .arg("--backend")
        .arg("app-server")
        .arg("--task-poll-ms")
        .arg("250");
    if tasks {
        launch.with_tasks().start().await
    } else {
        launch.start().await
    }
}

impl Setup {
    /// Calls `tool` and returns the task it answers with.
    async fn task(&self, tool: &str, args: Value) -> CreateTaskResult {
        match self.call(tool, args).await {
            CallToolResponse::Task(task) => task,
            other => panic!("{tool} answered without a task: {other:?}"),
        }
    }

    async fn call(&self, tool: &str, args: Value) -> CallToolResponse {
        let Value::Object(args) = args else {
            panic!("arguments are an object")
        };
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(args);
        let call = self.server.client.peer().call_tool_once(params);
        within(tool, call).await.unwrap()
    }

    /// Starts `prompt` under `on-request` in a read-only sandbox, as a task.
    async fn start(&self, prompt: &str) -> CreateTaskResult {
        let args = json!({"prompt": prompt, "cwd": self.sandbox.work(),
                          "approval_policy": "on-request", "sandbox": "read-only"});
        self.task("job_start", args).await
    }

    async fn get(&self, task_id: &str) -> TaskPayload {
        let get = self
            .server
            .client
            .peer()
            .get_task(GetTaskParams::new(task_id));
        within("tasks/get", get).await.unwrap().task.payload
    }

    /// The task's state once its turn has settled or waits for an answer (synced on
    /// `job_wait`, as no request waits on a task).
    async fn settled(&self, task_id: &str) -> TaskPayload {
        let job = task_id.rsplit_once('/').unwrap().0;
        let news = self.server.settle(job).await;
        assert_ne!(news["status"], "running", "{news}");
        self.get(task_id).await
    }

    /// The structured result of a task that completed, and whether it is an error.
    async fn result(&self, task_id: &str) -> (Value, bool) {
        match self.settled(task_id).await {
            TaskPayload::Completed { result } => {
                let is_error = result["isError"].as_bool().unwrap_or(false);
                (result["structuredContent"].clone(), is_error)
            }
            other => panic!("task {task_id} did not complete: {other:?}"),
        }
    }
}

#[tokio::test]
async fn job_start_is_a_task_that_completes_with_the_turn_answer() {
    let t = setup(true).await;
    let task = t.start("SAY: answered in the background").await;
    let seed = &task.task;
    assert_eq!(seed.status, TaskStatus::Working);
    assert!(seed.task_id.ends_with("/1"), "{}", seed.task_id);
    assert_eq!(seed.poll_interval_ms, Some(250));
    assert!(
        seed.ttl_ms.unwrap() >= 24 * 3600 * 1000,
        "{:?}",
        seed.ttl_ms
    );
    let told = &task.meta.as_ref().unwrap()["io.modelcontextprotocol/model-immediate-response"];
    assert!(
        told.as_str().unwrap().contains("runs in the background"),
        "{told}"
    );

    let (result, is_error) = t.result(&seed.task_id).await;
    assert!(!is_error);
    assert_eq!(result["result"], "answered in the background");
    assert_eq!(result["status"], "completed");
    let next = result["next"].as_str().unwrap();
    assert!(next.contains("job_reply"), "{next}");
}

#[tokio::test]
async fn a_turn_that_fails_in_codex_is_a_completed_task_with_is_error_and_the_reason() {
    let t = setup(true).await;
    let task = t.start("HTTP400: the model refused").await;
    let (result, is_error) = t.result(&task.task.task_id).await;
    assert!(is_error);
    assert_eq!(result["status"], "failed");
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("the model refused"), "{error}");
}

#[tokio::test]
async fn a_request_of_codex_is_input_required_and_tasks_update_answers_it() {
    let t = setup(true).await;
    let task = t.start("ESCALATE: touch via_task.txt").await;
    let id = &task.task.task_id;
    let TaskPayload::InputRequired { input_requests } = t.settled(id).await else {
        panic!("the task should wait for input")
    };
    assert_eq!(input_requests.len(), 1);
    let (key, asked) = input_requests.into_iter().next().unwrap();
    let form = serde_json::to_value(&asked).unwrap();
    assert_eq!(form["method"], "elicitation/create");
    let message = form["params"]["message"].as_str().unwrap();
    assert!(message.contains("touch via_task.txt"), "{message}");
    let decisions = &form["params"]["requestedSchema"]["properties"]["decision"]["enum"];
    assert_eq!(decisions[0], "accept");
    assert!(!t.sandbox.work().join("via_task.txt").exists());

    let answer = json!({"action": "accept", "content": {"decision": "accept"}});
    let update = UpdateTaskParams::new(id.clone(), [(key, answer)].into_iter().collect());
    let peer = t.server.client.peer();
    within("tasks/update", peer.update_task(update))
        .await
        .unwrap();
    let (result, is_error) = t.result(id).await;
    assert!(!is_error, "{result}");
    assert!(t.sandbox.work().join("via_task.txt").exists());
}

#[tokio::test]
async fn tasks_cancel_cancels_the_turn_and_the_job_goes_on() {
    let t = setup(true).await;
    let task = t.start("SLEEP: 60").await;
    let id = task.task.task_id.clone();
    t.server
        .until_event(id.rsplit_once('/').unwrap().0, "agent_message_delta")
        .await;
    let peer = t.server.client.peer();
    within(
        "tasks/cancel",
        peer.cancel_task(CancelTaskParams::new(id.clone())),
    )
    .await
    .unwrap();
    assert_eq!(t.settled(&id).await, TaskPayload::Cancelled);

    let job = id.rsplit_once('/').unwrap().0;
    let reply = t
        .task(
            "job_reply",
            json!({"job_id": job, "prompt": "SAY: after the stop"}),
        )
        .await;
    assert!(reply.task.task_id.ends_with("/2"), "{}", reply.task.task_id);
    let (result, _) = t.result(&reply.task.task_id).await;
    assert_eq!(result["result"], "after the stop");
    assert_eq!(result["turn"], 2);
}

#[tokio::test]
async fn a_task_reads_back_after_a_restart_and_one_the_restart_cut_says_so() {
    let t = setup(true).await;
    let done = t.start("SAY: before the restart").await.task.task_id;
    t.result(&done).await;
    let cut = t.start("SLEEP: 60").await.task.task_id;
    t.server
        .until_event(cut.rsplit_once('/').unwrap().0, "agent_message_delta")
        .await;
    let Setup {
        sandbox,
        _model,
        server,
    } = t;
    let mut first = server;
    first.child.start_kill().unwrap();
    within("killed server", first.child.wait()).await.unwrap();
    sandbox.until_no_codex().await;

    let t = Setup {
        server: launch(&sandbox, true).await,
        sandbox,
        _model,
    };
    let (result, is_error) = t.result(&done).await;
    assert!(!is_error);
    assert_eq!(result["result"], "before the restart");
    let (result, is_error) = t.result(&cut).await;
    assert!(is_error, "{result}");
    assert_eq!(result["status"], "interrupted");
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("restarted or it crashed")
    );
}

#[tokio::test]
async fn codex_is_a_task_for_a_tasks_client_and_a_waiting_call_for_any_other() {
    let t = setup(true).await;
    let args = json!({"prompt": "SAY: one shot", "cwd": t.sandbox.work()});
    let task = t.task("codex", args.clone()).await;
    let (result, _) = t.result(&task.task.task_id).await;
    assert_eq!(result["result"], "one shot");

    let plain = setup(false).await;
    let args = json!({"prompt": "SAY: one shot, waited", "cwd": plain.sandbox.work()});
    let answer = plain.server.ok("codex", args).await;
    assert_eq!(answer["status"], "completed");
    assert_eq!(answer["result"], "one shot, waited");
    assert!(answer["next"].as_str().unwrap().contains("job_reply"));
}

#[tokio::test]
async fn a_client_without_the_extension_gets_the_job_tools_as_they_are() {
    let t = setup(false).await;
    let args = json!({"prompt": "SAY: plain", "cwd": t.sandbox.work()});
    let started = t.server.ok("job_start", args).await;
    assert!(started["job_id"].is_string());
    assert!(started.get("next").is_none(), "{started}");
    let job = started["job_id"].as_str().unwrap();
    assert_eq!(t.server.settle(job).await["result"], "plain");
}

#[tokio::test]
async fn subscriptions_listen_is_acknowledged_at_once() {
    let t = setup(true).await;
    let filter = SubscriptionFilter::builder().tools_list_changed().build();
    let listen = t.server.client.peer().listen(filter);
    let bound = std::time::Duration::from_secs(5);
    let acknowledged = tokio::time::timeout(bound, listen).await;
    assert!(matches!(acknowledged, Ok(Ok(_))), "{acknowledged:?}");
}

#[tokio::test]
async fn tasks_get_of_an_unknown_task_is_an_error_that_says_so() {
    let t = setup(true).await;
    for id in ["job-nope/1", "no-slash"] {
        let get = t.server.client.peer().get_task(GetTaskParams::new(id));
        let e = within("tasks/get", get).await.unwrap_err().to_string();
        assert!(e.contains("no task has the id"), "{e}");
    }
}

#[tokio::test]
async fn the_mcp_inspector_runs_a_job_as_a_task_to_its_answer() {
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, "gpt-5.5");
    let bin = codex("0.169.0");
    let env = |key: &str, value: &std::path::Path| format!("{key}={}", value.display());
    let args = json!({"prompt": "SAY: inspected", "cwd": sandbox.work()}).to_string();
    let output = within(
        "the inspector",
        tokio::process::Command::new(inspector("2.12.0"))
            .args(["--cli", "--protocol-era", "modern", "--format", "json"])
            .args(["-e", &env("HOME", &sandbox.home())])
            .args(["-e", &env("CODEX_HOME", &sandbox.codex_home())])
            .args(["-e", "MOCK_KEY=test-key"])
            .args(["--method", "tools/call", "--tool-name", "job_start"])
            .args(["--tool-args-json", &args])
            .arg(env!("CARGO_BIN_EXE_codex-async-mcp"))
            .arg("--codex-bin")
            .arg(&bin)
            .arg("--state-dir")
            .arg(sandbox.state())
            .args(["--task-poll-ms", "200"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(answer["result"]["structuredContent"]["result"], "inspected");
}
