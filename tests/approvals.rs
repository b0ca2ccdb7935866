//! End to end: Codex's requests relayed to the client, against the real Codex (`mcp-server`
//! 0.153.4; `app-server` 0.169.0 and 0.171.0) and the mock model. The model asks for an escalated
//! command under `on-request` in a read-only sandbox, and on app-server also for a file change,
//! more permissions and an answer to a question; the job waits as `input_required` until
//! `job_respond`, the approval timeout, or the client's form answers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failed test

mod support;

use serde_json::{Value, json};
use support::codex_install::codex;
use support::http::HttpServer;
use support::mock_model::MockModel;
use support::server::{Forms, Launch, Sandbox, Server, within};

#[derive(Clone, Copy, Debug)]
struct Flavor {
    version: &'static str,
    backend: &'static str,
    model: &'static str,
}

const MCP_SERVER: Flavor = Flavor {
    version: "0.153.4",
    backend: "mcp-server",
    model: "gpt-5.2",
};

const APP_SERVER: Flavor = Flavor {
    version: "0.169.0",
    backend: "app-server",
    model: "gpt-5.5",
};

const APP_SERVER_171: Flavor = Flavor {
    version: "0.171.0",
    backend: "app-server",
    model: "gpt-5.5",
};

/// What app-server needs to offer the model `request_permissions` and `request_user_input`
/// outside Plan mode (both are features still under development in 0.169 and 0.171).
fn features() -> Value {
    json!({"features": {"request_permissions_tool": true, "default_mode_request_user_input": true}})
}

struct Setup {
    sandbox: Sandbox,
    _model: MockModel,
    server: Server,
}

async fn setup(f: Flavor, args: &[&str]) -> Setup {
    setup_forms(f, args, None).await
}

async fn setup_forms(f: Flavor, args: &[&str], forms: Option<Forms>) -> Setup {
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, f.model);
    let bin = codex(f.version);
    let mut launch = args.iter().fold(
        Launch::new(&bin, &sandbox).arg("--backend").arg(f.backend),
        |launch, arg| launch.arg(arg),
    );
    if let Some(forms) = forms {
        launch = launch.forms(forms);
    }
    let server = launch.start().await;
    Setup {
        sandbox,
        _model: model,
        server,
    }
}

impl Setup {
    /// Starts a job that runs `prompt` under `on-request` in a read-only sandbox, with `extra`
    /// arguments.
    async fn start(&self, prompt: &str, extra: Value) -> String {
        let mut args = json!({"prompt": prompt, "cwd": self.sandbox.work(),
                              "approval_policy": "on-request", "sandbox": "read-only"});
        if let (Value::Object(args), Value::Object(extra)) = (&mut args, extra) {
            args.extend(extra);
        }
        let started = self.server.ok("job_start", args).await;
        started["job_id"].as_str().unwrap().to_owned()
    }

    /// Waits until the job waits for an answer and returns the request the feed names.
    async fn asked(&self, job_id: &str) -> Value {
        let waited = self.server.settle(job_id).await;
        assert_eq!(waited["status"], "input_required", "{waited}");
        waited["request"].clone()
    }

    /// Waits until the job's turn has ended.
    async fn ended(&self, job_id: &str) -> Value {
        self.server.turn_end(job_id).await
    }

    async fn respond(&self, job_id: &str, request: &Value, answer: Value) -> Value {
        let mut args = json!({"job_id": job_id, "request_id": request["request_id"]});
        if let (Value::Object(args), Value::Object(answer)) = (&mut args, answer) {
            args.extend(answer);
        }
        self.server.ok("job_respond", args).await
    }

    /// The job's events of `kind`.
    async fn events(&self, job_id: &str, kind: &str) -> Vec<Value> {
        let page = self
            .server
            .ok(
                "job_events",
                json!({"job_id": job_id, "event_types": [kind], "limit": 1000}),
            )
            .await;
        page["events"].as_array().unwrap().clone()
    }

    fn exists(&self, file: &str) -> bool {
        self.sandbox.work().join(file).exists()
    }
}

mod cases {
    use super::*;

    pub async fn an_accepted_command_runs_and_the_record_says_who_decided(f: Flavor) {
        let t = setup(f, &[]).await;
        let job = t.start("ESCALATE: touch accepted.txt", json!({})).await;
        let request = t.asked(&job).await;
        assert_eq!(request["kind"], "command");
        let summary = request["summary"].as_str().unwrap();
        assert!(summary.contains("touch accepted.txt"), "{summary}");
        assert!(!t.exists("accepted.txt"), "nothing runs before the answer");

        let answered = t
            .respond(&job, &request, json!({"decision": "accept"}))
            .await;
        assert_eq!(answered["status"], "running");
        assert_eq!(t.ended(&job).await["status"], "completed");
        assert!(t.exists("accepted.txt"));
        let resolved = &t.events(&job, "approval_resolved").await[0]["data"];
        assert_eq!(resolved["request_id"], request["request_id"]);
        assert_eq!(resolved["decision"], "accept");
        assert_eq!(resolved["decided_by"], "client");
    }

    pub async fn a_declined_command_does_not_run_and_the_turn_completes(f: Flavor) {
        let t = setup(f, &[]).await;
        let job = t.start("ESCALATE: touch declined.txt", json!({})).await;
        let request = t.asked(&job).await;
        t.respond(&job, &request, json!({"decision": "decline"}))
            .await;
        assert_eq!(t.ended(&job).await["status"], "completed");
        assert!(!t.exists("declined.txt"));
    }

    pub async fn accept_for_session_covers_the_same_command_again(f: Flavor) {
        let t = setup(f, &[]).await;
        let job = t.start("ESCALATE: touch again.txt", json!({})).await;
        let request = t.asked(&job).await;
        t.respond(&job, &request, json!({"decision": "accept_for_session"}))
            .await;
        assert_eq!(t.ended(&job).await["status"], "completed");
        std::fs::remove_file(t.sandbox.work().join("again.txt")).unwrap();

        let reply = json!({"job_id": job, "prompt": "ESCALATE: touch again.txt"});
        t.server.ok("job_reply", reply).await;
        let settled = t.server.settle(&job).await;
        assert_eq!(settled["status"], "completed", "not asked again: {settled}");
        assert!(t.exists("again.txt"));
        assert_eq!(t.events(&job, "approval_requested").await.len(), 1);
    }

    pub async fn cancel_ends_the_turn_as_cancelled_and_the_thread_goes_on(f: Flavor) {
        let t = setup(f, &[]).await;
        let job = t.start("ESCALATE: touch cancelled.txt", json!({})).await;
        let request = t.asked(&job).await;
        let answered = t
            .respond(&job, &request, json!({"decision": "cancel"}))
            .await;
        assert_eq!(answered["status"], "cancelled", "{answered}");
        assert!(!t.exists("cancelled.txt"));
        let reason = &t.events(&job, "turn_cancelled").await[0]["data"]["reason"];
        let reason = reason.as_str().unwrap();
        assert!(reason.contains("`cancel` to request"), "{reason}");

        let reply = json!({"job_id": job, "prompt": "SAY: still here"});
        t.server.ok("job_reply", reply).await;
        assert_eq!(t.ended(&job).await["result"], "still here");
    }

    pub async fn job_cancel_answers_the_waiting_request_and_cancels_the_turn(f: Flavor) {
        let t = setup(f, &[]).await;
        let job = t.start("ESCALATE: touch never.txt", json!({})).await;
        t.asked(&job).await;
        let cancelled = t.server.ok("job_cancel", json!({"job_id": job})).await;
        assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
        let resolved = &t.events(&job, "approval_resolved").await[0]["data"];
        assert_eq!(resolved["decision"], "cancel");
        assert!(!t.exists("never.txt"));
        let reply = json!({"job_id": job, "prompt": "SAY: after the cancel"});
        t.server.ok("job_reply", reply).await;
        assert_eq!(t.ended(&job).await["result"], "after the cancel");
    }

    pub async fn nobody_answering_gets_the_timeout_decision(f: Flavor) {
        let t = setup(f, &["--approval-timeout", "1s"]).await;
        let job = t.start("ESCALATE: touch late.txt", json!({})).await;
        t.asked(&job).await;
        let settled = t.ended(&job).await;
        assert_eq!(settled["status"], "completed", "{settled}");
        assert!(!t.exists("late.txt"));
        let resolved = &t.events(&job, "approval_resolved").await[0]["data"];
        assert_eq!(resolved["decision"], "decline");
        assert_eq!(resolved["decided_by"], "timeout");
    }

    pub async fn a_second_answer_and_an_unknown_request_are_errors_that_say_so(f: Flavor) {
        let t = setup(f, &[]).await;
        let job = t.start("ESCALATE: touch once.txt", json!({})).await;
        let request = t.asked(&job).await;
        let unknown = json!({"job_id": job, "request_id": "r999", "decision": "accept"});
        let e = t.server.err("job_respond", unknown).await;
        assert!(e.contains("has no request \"r999\""), "{e}");
        assert!(
            e.contains(request["request_id"].as_str().unwrap()),
            "lists what waits: {e}"
        );
        t.respond(&job, &request, json!({"decision": "decline"}))
            .await;
        let again =
            json!({"job_id": job, "request_id": request["request_id"], "decision": "accept"});
        let e = t.server.err("job_respond", again).await;
        assert!(
            e.contains("answered already (decline, decided by client)"),
            "{e}"
        );
        assert_eq!(t.ended(&job).await["status"], "completed");
    }

    pub async fn a_restart_while_a_request_waits_interrupts_the_turn_saying_why(f: Flavor) {
        let t = setup(f, &[]).await;
        let job = t.start("ESCALATE: touch lost.txt", json!({})).await;
        t.asked(&job).await;
        let Setup {
            sandbox,
            server,
            _model,
        } = t;
        let mut first = server;
        first.child.start_kill().unwrap();
        within("killed server", first.child.wait()).await.unwrap();
        sandbox.until_no_codex().await;

        let bin = codex(f.version);
        let again = Launch::new(&bin, &sandbox)
            .arg("--backend")
            .arg(f.backend)
            .start()
            .await;
        let settled = again.settle(&job).await;
        assert_eq!(settled["status"], "interrupted");
        let error = settled["error"].as_str().unwrap();
        assert!(
            error.contains("waited for an answer to Codex's request"),
            "{error}"
        );
        assert!(!sandbox.work().join("lost.txt").exists());
    }

    pub async fn a_turn_out_of_time_is_stopped_and_fails_saying_so(f: Flavor) {
        let t = setup(f, &[]).await;
        let job = t.start("SLEEP: 60", json!({"max_turn_seconds": 1})).await;
        let settled = t.ended(&job).await;
        assert_eq!(settled["status"], "failed", "{settled}");
        let error = settled["error"].as_str().unwrap();
        assert!(error.contains("max_turn_seconds (1 s"), "{error}");
        let reply = json!({"job_id": job, "prompt": "SAY: after the limit"});
        t.server.ok("job_reply", reply).await;
        assert_eq!(t.ended(&job).await["result"], "after the limit");
    }

    pub async fn an_accepted_patch_is_applied(f: Flavor) {
        let t = setup(f, &[]).await;
        let job = t.start("PATCH: patched.txt hello", json!({})).await;
        let request = t.asked(&job).await;
        assert_eq!(request["kind"], "file_change");
        let summary = request["summary"].as_str().unwrap();
        assert!(
            summary.contains("add") && summary.contains("patched.txt"),
            "{summary}"
        );
        t.respond(&job, &request, json!({"decision": "accept"}))
            .await;
        assert_eq!(t.ended(&job).await["status"], "completed");
        let written = std::fs::read_to_string(t.sandbox.work().join("patched.txt")).unwrap();
        assert_eq!(written.trim(), "hello");
    }

    pub async fn granted_permissions_reach_codex(f: Flavor) {
        let t = setup(f, &[]).await;
        let elsewhere = t.sandbox.home().join("elsewhere");
        let prompt = format!("PERMS: {}", elsewhere.display());
        let job = t.start(&prompt, json!({"config": features()})).await;
        let request = t.asked(&job).await;
        assert_eq!(request["kind"], "permissions");
        let summary = request["summary"].as_str().unwrap();
        assert!(
            summary.contains("grant write") && summary.contains("elsewhere"),
            "{summary}"
        );
        t.respond(&job, &request, json!({"decision": "accept"}))
            .await;
        let settled = t.ended(&job).await;
        let result = settled["result"].as_str().unwrap();
        assert!(
            result.contains("elsewhere") && result.contains("\"turn\""),
            "{result}"
        );
    }

    pub async fn a_question_is_answered_by_its_id(f: Flavor) {
        let t = setup(f, &[]).await;
        let job = t
            .start("ASK: Which color?", json!({"config": features()}))
            .await;
        let request = t.asked(&job).await;
        assert_eq!(request["kind"], "question");
        assert_eq!(request["questions"][0]["id"], "choice");
        assert_eq!(request["questions"][0]["options"], json!(["Red", "Blue"]));
        let bare =
            json!({"job_id": job, "request_id": request["request_id"], "decision": "accept"});
        let e = t.server.err("job_respond", bare).await;
        assert!(e.contains("accept it with answers"), "{e}");

        let answer = json!({"decision": "accept", "answers": {"choice": "Blue"}});
        t.respond(&job, &request, answer).await;
        let result = t.ended(&job).await["result"].clone();
        assert!(result.as_str().unwrap().contains("Blue"), "{result}");
    }

    pub async fn two_requests_at_once_are_answered_in_reverse_order(f: Flavor) {
        let t = setup(f, &[]).await;
        let job = t
            .start("ESCALATE2: touch one.txt || touch two.txt", json!({}))
            .await;
        t.asked(&job).await;
        let listed = loop {
            let page = t.server.ok("job_events", json!({"job_id": job})).await;
            let requests = page["requests"].as_array().cloned().unwrap_or_default();
            if requests.len() == 2 {
                break requests;
            }
            t.server.until_event(&job, "approval_requested").await;
        };
        let answered = t
            .respond(&job, &listed[1], json!({"decision": "decline"}))
            .await;
        assert_eq!(answered["status"], "input_required", "one still waits");
        assert_eq!(
            answered["requests"][0]["request_id"],
            listed[0]["request_id"]
        );
        let answered = t
            .respond(&job, &listed[0], json!({"decision": "accept"}))
            .await;
        assert_eq!(answered["status"], "running");
        assert_eq!(t.ended(&job).await["status"], "completed");
        let (first, second) = (t.exists("one.txt"), t.exists("two.txt"));
        assert!(first ^ second, "exactly the accepted command ran");
    }

    pub async fn a_reply_may_change_the_approval_policy(f: Flavor) {
        let t = setup(f, &[]).await;
        let job = t
            .start("SAY: first", json!({"approval_policy": "never"}))
            .await;
        t.ended(&job).await;
        let reply = json!({"job_id": job, "prompt": "ESCALATE: touch later.txt",
                           "approval_policy": "on-request"});
        t.server.ok("job_reply", reply).await;
        let request = t.asked(&job).await;
        t.respond(&job, &request, json!({"decision": "accept"}))
            .await;
        assert_eq!(t.ended(&job).await["status"], "completed");
        assert!(t.exists("later.txt"));
    }
}

support::suite!(
    both_long_lived_backends,
    [
        mcp_server_0_153 = MCP_SERVER,
        app_server_0_169 = APP_SERVER,
        app_server_0_171 = APP_SERVER_171
    ],
    [
        an_accepted_command_runs_and_the_record_says_who_decided,
        a_declined_command_does_not_run_and_the_turn_completes,
        accept_for_session_covers_the_same_command_again,
        cancel_ends_the_turn_as_cancelled_and_the_thread_goes_on,
        job_cancel_answers_the_waiting_request_and_cancels_the_turn,
        nobody_answering_gets_the_timeout_decision,
        a_second_answer_and_an_unknown_request_are_errors_that_say_so,
        a_restart_while_a_request_waits_interrupts_the_turn_saying_why,
        a_turn_out_of_time_is_stopped_and_fails_saying_so,
        an_accepted_patch_is_applied
    ]
);

// Permissions and questions exist on app-server only; so do turns under another policy than
// their thread's.
support::suite!(
    app_server_only,
    [
        app_server_0_169 = APP_SERVER,
        app_server_0_171 = APP_SERVER_171
    ],
    [
        granted_permissions_reach_codex,
        a_question_is_answered_by_its_id,
        two_requests_at_once_are_answered_in_reverse_order,
        a_reply_may_change_the_approval_policy
    ]
);

#[tokio::test]
async fn mcp_server_refuses_a_reply_under_another_approval_policy_naming_the_way_out() {
    let t = setup(MCP_SERVER, &[]).await;
    let job = t
        .start("SAY: first", json!({"approval_policy": "never"}))
        .await;
    t.ended(&job).await;
    let reply = json!({"job_id": job, "prompt": "SAY: again", "approval_policy": "on-request"});
    let e = t.server.err("job_reply", reply).await;
    assert!(
        e.contains("keeps the approval_policy a thread started with (never)"),
        "{e}"
    );
    assert!(e.contains("start a new job"), "{e}");
}

#[tokio::test]
async fn a_client_that_accepts_the_form_answers_the_request() {
    let content = json!({"decision": "accept", "note": "fine by me"});
    let t = setup_forms(APP_SERVER, &[], Some(Forms::Accept(content))).await;
    let job = t
        .start("ESCALATE: touch formed.txt", json!({"ask_client": true}))
        .await;
    let settled = t.ended(&job).await;
    assert_eq!(settled["status"], "completed", "{settled}");
    assert!(t.exists("formed.txt"));
    let asked = t.server.recorder.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    let resolved = &t.events(&job, "approval_resolved").await[0]["data"];
    assert_eq!(resolved["decided_by"], "client");
    assert_eq!(
        resolved["note"],
        "answered in the client's form: fine by me"
    );
}

#[tokio::test]
async fn a_client_that_declines_the_form_leaves_the_request_to_job_respond() {
    let t = setup_forms(APP_SERVER, &[], Some(Forms::Decline)).await;
    let job = t
        .start(
            "ESCALATE: touch declined_form.txt",
            json!({"ask_client": true}),
        )
        .await;
    let request = t.asked(&job).await;
    t.server
        .until_logged("the client did not accept the form")
        .await;
    t.respond(&job, &request, json!({"decision": "accept"}))
        .await;
    assert_eq!(t.ended(&job).await["status"], "completed");
    assert!(t.exists("declined_form.txt"));
}

#[tokio::test]
async fn a_form_nobody_answers_leaves_the_request_to_job_respond_and_then_the_timeout() {
    let t = setup_forms(
        APP_SERVER,
        &["--approval-timeout", "2s"],
        Some(Forms::Ignore),
    )
    .await;
    let job = t
        .start("ESCALATE: touch ignored.txt", json!({"ask_client": true}))
        .await;
    t.asked(&job).await;
    t.server
        .until_logged("the client did not answer the form")
        .await;
    let settled = t.ended(&job).await;
    assert_eq!(settled["status"], "completed", "{settled}");
    let resolved = &t.events(&job, "approval_resolved").await[0]["data"];
    assert_eq!(resolved["decided_by"], "timeout");
}

#[tokio::test]
async fn ask_client_is_refused_for_a_client_without_elicitation() {
    let t = setup(APP_SERVER, &[]).await;
    let args = json!({"prompt": "SAY: hi", "cwd": t.sandbox.work(), "ask_client": true});
    let e = t.server.err("job_start", args).await;
    assert!(
        e.contains("elicitation capability") && e.contains("job_respond"),
        "{e}"
    );
}

#[tokio::test]
async fn when_the_asking_session_is_gone_another_session_answers_with_job_respond() {
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, "gpt-5.5");
    let bin = codex("0.169.0");
    let launch = Launch::new(&bin, &sandbox)
        .arg("--backend")
        .arg("app-server")
        .arg("--transport")
        .arg("streamable-http");
    let server = HttpServer::start(launch, "/mcp").await;
    let args = json!({"prompt": "ESCALATE: touch orphan.txt", "cwd": sandbox.work(),
                      "approval_policy": "on-request", "sandbox": "read-only", "ask_client": true});
    // The SDK client declares elicitation, starts the job and leaves.
    let started = server
        .sdk(
            "http",
            &[("SDK_ELICITATION", "1")],
            &["call", "job_start", &args.to_string()],
        )
        .await;
    let job = started["job_id"].as_str().unwrap();
    let wait = json!({"job_id": job, "timeout_seconds": 60}).to_string();
    let waited = server.sdk("http", &[], &["call", "job_wait", &wait]).await;
    let request = &waited["notifications"][0]["request"];
    assert_eq!(
        waited["notifications"][0]["status"], "input_required",
        "{waited}"
    );
    server
        .until_logged("the client did not answer the form")
        .await;

    let respond = json!({"job_id": job, "request_id": request["request_id"], "decision": "accept"});
    server
        .sdk("http", &[], &["call", "job_respond", &respond.to_string()])
        .await;
    let waited = server.sdk("http", &[], &["call", "job_wait", &wait]).await;
    assert_eq!(
        waited["notifications"][0]["status"], "completed",
        "{waited}"
    );
    assert!(sandbox.work().join("orphan.txt").exists());
}
