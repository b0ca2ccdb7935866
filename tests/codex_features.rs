//! End to end: Codex's features beyond a plain turn (steer, fork, review, worktrees, reasoning
//! settings, structured output, token usage) and the caps on them, through the built server over
//! stdio (and HTTP for the caps), on the real Codex against the mock model.
//! Each case runs where the feature exists: app-server (0.169.0, and 0.171.0 for most) has all of
//! them, `codex exec` 0.169.0 most, `codex mcp-server` 0.153.4 refuses what it cannot do.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failed test

mod support;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::git::git;
use support::mock_model::USAGE;
use support::real::{APP_SERVER, APP_SERVER_171, EXEC, Flavor, MCP_SERVER, Setup, setup};

/// A schema the mock's answers are checked against: `{"answer": string, "score": integer}`.
fn answer_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"answer": {"type": "string"}, "score": {"type": "integer"}},
        "required": ["answer", "score"],
        "additionalProperties": false
    })
}

impl Setup {
    /// Starts a job with `prompt` and `extra` arguments, and waits until its turn settles.
    async fn run(&self, prompt: &str, extra: Value) -> (String, Value) {
        let mut args = json!({"prompt": prompt, "cwd": self.sandbox.work(),
                              "sandbox": "workspace-write", "approval_policy": "never"});
        args.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let started = self.server.ok("job_start", args).await;
        let job_id = started["job_id"].as_str().unwrap().to_owned();
        let settled = self.server.settle(&job_id).await;
        (job_id, settled)
    }

    /// The newest request Codex sent the model.
    fn last_model_request(&self) -> Value {
        self.model.requests().pop().expect("Codex asked the model")
    }
}

/// A git repository on `main` with one commit, in the sandbox's work directory.
fn git_repository(t: &Setup) -> PathBuf {
    support::git::repository(&t.sandbox.work())
}

/// The input of the model request whose newest user message is `prompt`.
fn request_for(t: &Setup, prompt: &str) -> String {
    t.model
        .requests()
        .iter()
        .map(|r| r["input"].to_string())
        .rfind(|input| input.contains(prompt))
        .unwrap_or_else(|| panic!("no request for {prompt}"))
}

/// What `USAGE` says, `times` over, in our words.
fn usage_times(times: u64) -> Value {
    let [input, cached, output, reasoning] = USAGE.map(|n| n * times);
    json!({"input": input, "cached": cached, "output": output, "reasoning": reasoning})
}

mod cases {
    use super::*;

    pub async fn steering_reaches_the_running_turn_which_ends_on_it(f: Flavor) {
        let t = setup(f, &[]).await;
        let started = t
            .server
            .ok(
                "job_start",
                json!({"prompt": "SLEEP: 3", "cwd": t.sandbox.work()}),
            )
            .await;
        let job_id = started["job_id"].as_str().unwrap();
        t.server.until_event(job_id, "agent_message_delta").await;
        let steered = t
            .server
            .ok(
                "job_steer",
                json!({"job_id": job_id, "prompt": "SAY: steered"}),
            )
            .await;
        assert_eq!(
            (&steered["status"], &steered["turn"]),
            (&json!("running"), &json!(1))
        );
        let settled = t.server.settle(job_id).await;
        assert_eq!(
            (&settled["turn"], &settled["result"]),
            (&json!(1), &json!("steered")),
            "{settled}"
        );
        // The model saw both inputs in the one thread, the steer last.
        let input = t.last_model_request()["input"].to_string();
        let (first, then) = (input.find("SLEEP: 3"), input.find("SAY: steered"));
        assert!(first.is_some() && then > first, "{input}");
    }

    pub async fn a_fork_sees_the_parents_history_and_the_parent_goes_on_unaffected(f: Flavor) {
        let t = setup(f, &[]).await;
        let (parent, _) = t.run("SAY: parent-secret", json!({})).await;
        let fork = t
            .server
            .ok(
                "job_fork",
                json!({"job_id": parent, "prompt": "SAY: forked"}),
            )
            .await;
        let fork_id = fork["job_id"].as_str().unwrap();
        assert_ne!(fork_id, parent);
        let settled = t.server.settle(fork_id).await;
        assert_eq!(settled["result"], "forked", "{settled}");
        assert!(request_for(&t, "SAY: forked").contains("parent-secret"));
        // The parent's thread did not get the fork's turn.
        t.server
            .ok(
                "job_reply",
                json!({"job_id": parent, "prompt": "SAY: parent-again"}),
            )
            .await;
        assert_eq!(t.server.settle(&parent).await["result"], "parent-again");
        let parents_turn = request_for(&t, "SAY: parent-again");
        assert!(
            parents_turn.contains("parent-secret") && !parents_turn.contains("SAY: forked"),
            "{parents_turn}"
        );
        let listed = t.server.ok("job_list", json!({})).await;
        let jobs = listed["jobs"].as_array().unwrap();
        let listed_fork = jobs.iter().find(|j| j["job_id"] == fork_id).unwrap();
        let listed_parent = jobs
            .iter()
            .find(|j| j["job_id"] == parent.as_str())
            .unwrap();
        assert_eq!(listed_fork["forked_from"], parent.as_str());
        assert_ne!(listed_fork["thread_id"], listed_parent["thread_id"]);
    }

    pub async fn a_review_of_a_worktree_jobs_work_is_a_job_whose_result_is_the_review(f: Flavor) {
        let t = setup(f, &[]).await;
        let repo = git_repository(&t);
        let (job_id, _) = t
            .run(
                "RUN: echo draft > notes.txt",
                json!({"cwd": repo, "isolation": "worktree"}),
            )
            .await;
        let review = t
            .server
            .ok(
                "job_review",
                json!({"job_id": job_id, "target": "uncommitted"}),
            )
            .await;
        let review_id = review["job_id"].as_str().unwrap();
        assert_ne!(review_id, job_id);
        let settled = t.server.settle(review_id).await;
        assert_eq!(settled["status"], "completed", "{settled}");
        // The mock's findings, as Codex words them.
        assert_eq!(
            settled["result"], "mock review: nothing to flag",
            "{settled}"
        );
        let asked = t.last_model_request().to_string();
        assert!(asked.contains("# Review guidelines"), "{asked}");
        let listed = t.server.ok("job_list", json!({})).await;
        let listed = &listed["jobs"][0];
        assert_eq!(listed["prompt"], "review the uncommitted changes");
        assert_eq!(listed["forked_from"], job_id.as_str());
    }

    pub async fn cleanup_refuses_to_lose_uncommitted_work_unless_forced(f: Flavor) {
        let t = setup(f, &[]).await;
        let repo = git_repository(&t);
        let (job_id, settled) = t
            .run(
                "RUN: echo draft > notes.txt",
                json!({"cwd": repo, "isolation": "worktree"}),
            )
            .await;
        assert_eq!(settled["changes"]["files"], 1, "{settled}");
        let listed = t.server.ok("job_list", json!({})).await;
        let worktree = PathBuf::from(listed["jobs"][0]["worktree"].as_str().unwrap());
        let branch = format!("codex-async/{job_id}");
        let e = t.server.err("job_cleanup", json!({"job_id": job_id})).await;
        assert!(
            e.contains("uncommitted changes in 1 file(s)") && e.contains("force: true"),
            "{e}"
        );
        assert!(worktree.join("notes.txt").exists(), "nothing was lost");
        // Committed, the work is safe: the worktree goes, the branch stays.
        git(&worktree, &["add", "."]);
        git(&worktree, &["commit", "-q", "-m", "notes"]);
        let cleaned = t.server.ok("job_cleanup", json!({"job_id": job_id})).await;
        assert!(cleaned.get("worktree").is_none(), "{cleaned}");
        assert_eq!(cleaned["branch"], branch.as_str());
        assert!(!worktree.exists());
        assert!(git(&repo, &["branch", "--list", &branch]).contains(&branch));
        let e = t
            .server
            .err(
                "job_reply",
                json!({"job_id": job_id, "prompt": "SAY: more"}),
            )
            .await;
        assert!(e.contains("worktree was removed"), "{e}");
        let e = t
            .server
            .err("job_fork", json!({"job_id": job_id, "prompt": "SAY: more"}))
            .await;
        assert!(e.contains("worktree was removed"), "{e}");
    }

    pub async fn two_worktree_jobs_in_one_repository_write_one_file_on_their_own_branches(
        f: Flavor,
    ) {
        let t = setup(f, &[]).await;
        let repo = git_repository(&t);
        let start = |word: &str| {
            json!({"prompt": format!("RUN: echo {word} > same.txt"), "cwd": repo,
                   "sandbox": "workspace-write", "approval_policy": "never",
                   "isolation": "worktree"})
        };
        let (a, b) = tokio::join!(
            t.server.ok("job_start", start("alpha")),
            t.server.ok("job_start", start("beta"))
        );
        for (job, word) in [(&a, "alpha"), (&b, "beta")] {
            let job_id = job["job_id"].as_str().unwrap();
            let branch = format!("codex-async/{job_id}");
            assert_eq!(job["branch"], branch.as_str(), "{job}");
            let settled = t.server.settle(job_id).await;
            assert_eq!(settled["status"], "completed", "{settled}");
            assert_eq!(
                settled["changes"],
                json!({"branch": branch, "files": 1, "insertions": 1, "deletions": 0,
                       "paths": ["same.txt"]}),
                "{settled}"
            );
            let worktree = job["worktree"].as_str().unwrap();
            let written = std::fs::read_to_string(Path::new(worktree).join("same.txt")).unwrap();
            assert_eq!(written.trim(), word);
            // Counting the new file left it untracked in the job's own index.
            assert_eq!(
                git(Path::new(worktree), &["status", "--porcelain"]),
                "?? same.txt"
            );
            assert_eq!(git(&repo, &["rev-parse", "--abbrev-ref", "HEAD"]), "main");
            let listed = t.server.ok("job_list", json!({})).await;
            let listed = listed["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|j| j["job_id"] == job_id)
                .cloned()
                .unwrap();
            assert_eq!(
                (&listed["worktree"], &listed["branch"]),
                (&json!(worktree), &json!(branch))
            );
            assert!(git(&repo, &["branch", "--list", &branch]).contains(&branch));
        }
        // The checkout the jobs were started in is untouched.
        assert!(!repo.join("same.txt").exists());
    }

    pub async fn effort_and_summary_reach_the_model(f: Flavor) {
        let t = setup(f, &[]).await;
        let (_, settled) = t
            .run(
                "SAY: thought",
                json!({"effort": "high", "summary": "concise"}),
            )
            .await;
        assert_eq!(settled["result"], "thought");
        let reasoning = &t.last_model_request()["reasoning"];
        assert_eq!(reasoning["effort"], "high", "{reasoning}");
        assert_eq!(reasoning["summary"], "concise", "{reasoning}");
    }

    pub async fn an_unknown_effort_is_refused_naming_the_choices(f: Flavor) {
        let t = setup(f, &[]).await;
        let e = t
            .server
            .err(
                "job_start",
                json!({"prompt": "SAY: x", "cwd": t.sandbox.work(), "effort": "extreme"}),
            )
            .await;
        assert!(
            e.contains(r#"$.effort: a string "extreme" is not one of"#) && e.contains("xhigh"),
            "{e}"
        );
    }

    pub async fn a_reply_changes_the_effort_for_its_turn(f: Flavor) {
        let t = setup(f, &[]).await;
        let (job_id, _) = t.run("SAY: first", json!({"effort": "low"})).await;
        t.server
            .ok(
                "job_reply",
                json!({"job_id": job_id, "prompt": "SAY: second", "effort": "xhigh"}),
            )
            .await;
        assert_eq!(t.server.settle(&job_id).await["result"], "second");
        assert_eq!(t.last_model_request()["reasoning"]["effort"], "xhigh");
    }

    pub async fn output_schema_gives_the_result_as_json(f: Flavor) {
        let t = setup(f, &[]).await;
        let (job_id, settled) = t
            .run(
                r#"SAY: {"answer": "yes", "score": 3}"#,
                json!({"output_schema": answer_schema()}),
            )
            .await;
        assert_eq!(settled["status"], "completed", "{settled}");
        assert_eq!(settled["result_json"], json!({"answer": "yes", "score": 3}));
        // Said once, as JSON.
        assert!(settled.get("result").is_none(), "{settled}");
        // Codex held the model to the schema.
        let format = &t.last_model_request()["text"]["format"];
        assert_eq!(format["type"], "json_schema", "{format}");
        assert_eq!(format["schema"]["required"], json!(["answer", "score"]));
        // job_result still reads the text.
        let result = t.server.ok("job_result", json!({"job_id": job_id})).await;
        assert_eq!(result["text"], r#"{"answer": "yes", "score": 3}"#);
    }

    pub async fn the_one_shot_codex_tool_answers_with_the_result_as_json(f: Flavor) {
        let t = setup(f, &[]).await;
        let answer = t
            .server
            .ok(
                "codex",
                json!({"prompt": r#"SAY: {"answer": "one shot", "score": 1}"#,
                       "cwd": t.sandbox.work(), "output_schema": answer_schema()}),
            )
            .await;
        assert_eq!(answer["result_json"]["answer"], "one shot", "{answer}");
        assert!(answer.get("result").is_none(), "{answer}");
    }

    pub async fn output_that_misses_the_schema_fails_the_turn_saying_how(f: Flavor) {
        let t = setup(f, &[]).await;
        let (job_id, settled) = t
            .run(
                r#"SAY: {"answer": "yes"}"#,
                json!({"output_schema": answer_schema()}),
            )
            .await;
        assert_eq!(settled["status"], "failed", "{settled}");
        let error = settled["error"].as_str().unwrap();
        assert!(
            error.contains("does not match output_schema: $: missing score"),
            "{error}"
        );
        let result = t.server.ok("job_result", json!({"job_id": job_id})).await;
        assert_eq!(result["text"], r#"{"answer": "yes"}"#);
    }

    pub async fn a_reply_can_ask_for_structured_output(f: Flavor) {
        let t = setup(f, &[]).await;
        let (job_id, _) = t.run("SAY: plain", json!({})).await;
        t.server
            .ok(
                "job_reply",
                json!({"job_id": job_id, "prompt": r#"SAY: {"answer": "no", "score": 0}"#,
                       "output_schema": answer_schema()}),
            )
            .await;
        let settled = t.server.settle(&job_id).await;
        assert_eq!(settled["result_json"]["answer"], "no", "{settled}");
    }

    pub async fn usage_is_what_the_model_reported_per_turn_and_summed_per_job(f: Flavor) {
        let t = setup(f, &[]).await;
        // One model call, then two (the command, then the answer to its output).
        let (job_id, _) = t.run("SAY: one call", json!({})).await;
        t.server
            .ok(
                "job_reply",
                json!({"job_id": job_id, "prompt": "RUN: echo two calls"}),
            )
            .await;
        assert_eq!(t.server.settle(&job_id).await["status"], "completed");
        let first = t
            .server
            .ok("job_result", json!({"job_id": job_id, "turn": 1}))
            .await;
        assert_eq!(first["usage"], usage_times(1), "{first}");
        let second = t.server.ok("job_result", json!({"job_id": job_id})).await;
        assert_eq!(second["usage"], usage_times(2), "{second}");
        let listed = t.server.ok("job_list", json!({})).await;
        assert_eq!(listed["jobs"][0]["usage"], usage_times(3), "{listed}");
    }
}

support::suite!(
    app_servers,
    [app_server = APP_SERVER, app_server_0_171 = APP_SERVER_171],
    [
        steering_reaches_the_running_turn_which_ends_on_it,
        a_fork_sees_the_parents_history_and_the_parent_goes_on_unaffected,
        a_review_of_a_worktree_jobs_work_is_a_job_whose_result_is_the_review,
        cleanup_refuses_to_lose_uncommitted_work_unless_forced,
    ]
);

support::suite!(
    worktrees,
    [
        app_server = APP_SERVER,
        exec = EXEC,
        mcp_server = MCP_SERVER
    ],
    [two_worktree_jobs_in_one_repository_write_one_file_on_their_own_branches]
);

support::suite!(
    everywhere,
    [
        app_server = APP_SERVER,
        exec = EXEC,
        mcp_server = MCP_SERVER
    ],
    [
        effort_and_summary_reach_the_model,
        an_unknown_effort_is_refused_naming_the_choices,
        usage_is_what_the_model_reported_per_turn_and_summed_per_job,
    ]
);

support::suite!(
    per_turn_settings,
    [
        app_server = APP_SERVER,
        app_server_0_171 = APP_SERVER_171,
        exec = EXEC
    ],
    [
        a_reply_changes_the_effort_for_its_turn,
        output_schema_gives_the_result_as_json,
        the_one_shot_codex_tool_answers_with_the_result_as_json,
        output_that_misses_the_schema_fails_the_turn_saying_how,
        a_reply_can_ask_for_structured_output,
    ]
);

#[tokio::test]
async fn mcp_server_refuses_output_schema_naming_the_backends_that_take_it() {
    let t = setup(MCP_SERVER, &[]).await;
    let e = t
        .server
        .err(
            "job_start",
            json!({"prompt": "SAY: x", "cwd": t.sandbox.work(), "output_schema": answer_schema()}),
        )
        .await;
    assert!(
        e.contains("output_schema is not supported by codex mcp-server")
            && e.contains("app-server"),
        "{e}"
    );
}

#[tokio::test]
async fn mcp_server_refuses_a_reply_that_changes_the_effort() {
    let t = setup(MCP_SERVER, &[]).await;
    let (job_id, _) = t.run("SAY: first", json!({"effort": "low"})).await;
    let e = t
        .server
        .err(
            "job_reply",
            json!({"job_id": job_id, "prompt": "SAY: second", "effort": "high"}),
        )
        .await;
    assert!(
        e.contains("keeps the effort a thread started with (low)"),
        "{e}"
    );
}

/// Policy caps: what an operator of a shared server lets clients ask for.
mod caps {
    use super::*;
    use support::codex_install::codex;
    use support::http::HttpServer;
    use support::mock_model::MockModel;
    use support::server::{Launch, Sandbox};

    /// The caps every case runs under: two sandboxes, one policy, one model, effort up to
    /// medium, and jobs only under the sandbox's work directory.
    fn cap_flags(sandbox: &Sandbox) -> Vec<String> {
        let work = sandbox.work().to_string_lossy().into_owned();
        [
            "--allowed-sandbox",
            "read-only",
            "--allowed-sandbox",
            "workspace-write",
            "--allowed-approval-policy",
            "never",
            "--allowed-model",
            APP_SERVER.model,
            "--max-effort",
            "medium",
            "--allowed-cwd-root",
            &work,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Each request outside a cap (by its own argument or by `config`), with the cap its refusal
    /// must name.
    fn outside(sandbox: &Sandbox) -> Vec<(Value, &'static str)> {
        let work = sandbox.work();
        let base = |extra: Value| {
            let mut args = json!({"prompt": "SAY: no", "cwd": work});
            args.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            args
        };
        vec![
            (
                base(json!({"sandbox": "danger-full-access"})),
                "--allowed-sandbox",
            ),
            (
                base(json!({"config": {"sandbox_mode": "danger-full-access"}})),
                "--allowed-sandbox",
            ),
            (
                base(json!({"approval_policy": "on-request"})),
                "--allowed-approval-policy",
            ),
            (base(json!({"model": "gpt-4.1"})), "--allowed-model"),
            (
                base(json!({"config": {"model": "gpt-4.1"}})),
                "--allowed-model",
            ),
            (base(json!({"effort": "high"})), "--max-effort"),
            (base(json!({"profile": "wide-open"})), "caps"),
            (
                base(json!({"config": {"sandbox_workspace_write.writable_roots": ["/"]}})),
                "caps",
            ),
            (
                json!({"prompt": "SAY: no", "cwd": sandbox.home()}),
                "--allowed-cwd-root",
            ),
        ]
    }

    /// A request within every cap.
    fn inside(sandbox: &Sandbox) -> Value {
        json!({"prompt": "SAY: allowed", "cwd": sandbox.work(), "sandbox": "workspace-write",
               "approval_policy": "never", "model": APP_SERVER.model, "effort": "low"})
    }

    #[tokio::test]
    async fn each_cap_refuses_what_it_should_and_allows_the_rest_over_stdio() {
        let sandbox = Sandbox::new();
        let model = MockModel::start().await;
        sandbox.use_model(&model, APP_SERVER.model);
        let bin = codex(APP_SERVER.version);
        let launch = cap_flags(&sandbox).iter().fold(
            Launch::new(&bin, &sandbox)
                .arg("--backend")
                .arg("app-server"),
            |launch, flag| launch.arg(flag),
        );
        let server = launch.start().await;
        for (args, cap) in outside(&sandbox) {
            let e = server.err("job_start", args.clone()).await;
            assert!(e.contains(cap), "{args}: {e}");
        }
        let started = server.ok("job_start", inside(&sandbox)).await;
        let settled = server.settle(started["job_id"].as_str().unwrap()).await;
        assert_eq!(settled["result"], "allowed");
        // A reply is held to the caps too.
        let e = server
            .err(
                "job_reply",
                json!({"job_id": started["job_id"], "prompt": "SAY: more", "effort": "xhigh"}),
            )
            .await;
        assert!(e.contains("--max-effort medium"), "{e}");
        assert_eq!(model.requests().len(), 1, "nothing refused reached Codex");
    }

    #[tokio::test]
    async fn each_cap_refuses_what_it_should_and_allows_the_rest_over_http() {
        let sandbox = Sandbox::new();
        let model = MockModel::start().await;
        sandbox.use_model(&model, APP_SERVER.model);
        let bin = codex(APP_SERVER.version);
        let launch = cap_flags(&sandbox).iter().fold(
            Launch::new(&bin, &sandbox)
                .arg("--backend")
                .arg("app-server")
                .arg("--transport")
                .arg("http"),
            |launch, flag| launch.arg(flag),
        );
        let server = HttpServer::start(launch, "/mcp").await;
        for (args, cap) in outside(&sandbox) {
            let e = server.sessionless_error("job_start", args.clone()).await;
            assert!(e.contains(cap), "{args}: {e}");
        }
        let started = server.call_sessionless("job_start", inside(&sandbox)).await;
        let waited = server
            .call_sessionless(
                "job_wait",
                json!({"job_id": started["job_id"], "timeout_seconds": 60}),
            )
            .await;
        assert_eq!(waited["notifications"][0]["result"], "allowed", "{waited}");
        // The server's health says the tokens its jobs used.
        let (status, health) = server.raw("GET", "/mcp/healthz", &[], b"").await;
        assert_eq!(status, 200);
        let health: Value = serde_json::from_str(&health).unwrap();
        assert_eq!(health["usage"], usage_times(1), "{health}");
    }

    #[tokio::test]
    async fn a_session_at_its_job_cap_is_refused_until_one_settles() {
        let sandbox = Sandbox::new();
        let model = MockModel::start().await;
        sandbox.use_model(&model, APP_SERVER.model);
        let bin = codex(APP_SERVER.version);
        let launch = Launch::new(&bin, &sandbox)
            .arg("--backend")
            .arg("app-server")
            .arg("--transport")
            .arg("http")
            .arg("--max-jobs-per-session")
            .arg("1");
        let server = HttpServer::start(launch, "/mcp").await;
        let job = |prompt: &str| json!({"prompt": prompt, "cwd": sandbox.work()});
        let first = server.call_sessionless("job_start", job("SLEEP: 1")).await;
        // Clients without a session share one count.
        let e = server
            .sessionless_error("job_start", job("SAY: too many"))
            .await;
        assert!(e.contains("--max-jobs-per-session 1"), "{e}");
        let waited = server
            .call_sessionless(
                "job_wait",
                json!({"job_id": first["job_id"], "timeout_seconds": 60}),
            )
            .await;
        assert_eq!(waited["notifications"][0]["status"], "completed");
        server.call_sessionless("job_start", job("SAY: next")).await;
    }

    #[tokio::test]
    async fn a_stdio_session_at_its_job_cap_is_refused() {
        let t = setup(APP_SERVER, &["--max-jobs-per-session", "1"]).await;
        let long = json!({"prompt": "SLEEP: 1", "cwd": t.sandbox.work()});
        let first = t.server.ok("job_start", long.clone()).await;
        let e = t.server.err("job_start", long.clone()).await;
        assert!(e.contains("this session already has 1 jobs"), "{e}");
        t.server.settle(first["job_id"].as_str().unwrap()).await;
        t.server.ok("job_start", long).await;
    }
}

/// `job_steer`: input for the turn Codex is running.
mod steer {
    use super::*;

    #[tokio::test]
    async fn steering_a_settled_job_is_refused_pointing_to_job_reply() {
        let t = setup(APP_SERVER, &[]).await;
        let (job_id, _) = t.run("SAY: done", json!({})).await;
        let e = t
            .server
            .err(
                "job_steer",
                json!({"job_id": job_id, "prompt": "SAY: late"}),
            )
            .await;
        assert!(
            e.contains("is completed: only a running turn takes input") && e.contains("job_reply"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn backends_that_cannot_steer_say_so_and_what_to_do_instead() {
        for flavor in [EXEC, MCP_SERVER] {
            let t = setup(flavor, &[]).await;
            let started = t
                .server
                .ok(
                    "job_start",
                    json!({"prompt": "SLEEP: 2", "cwd": t.sandbox.work()}),
                )
                .await;
            let job_id = started["job_id"].as_str().unwrap();
            t.server.until_event(job_id, "turn_started").await;
            let e = t
                .server
                .err("job_steer", json!({"job_id": job_id, "prompt": "SAY: x"}))
                .await;
            assert!(
                e.contains(&format!("codex {} ", flavor.backend))
                    && e.contains("cannot add input to a running turn")
                    && e.contains("job_cancel"),
                "{e}"
            );
        }
    }
}

/// `job_fork`: a new job on a copy of a job's thread.
mod fork {
    use super::*;

    #[tokio::test]
    async fn a_fork_without_a_prompt_is_made_at_once_and_takes_its_first_turn_from_job_reply() {
        let t = setup(APP_SERVER, &[]).await;
        let (parent, _) = t.run("SAY: parent-secret", json!({})).await;
        let fork = t.server.ok("job_fork", json!({"job_id": parent})).await;
        let fork_id = fork["job_id"].as_str().unwrap();
        assert_eq!(
            (&fork["status"], &fork["turn"]),
            (&json!("completed"), &json!(0))
        );
        // Settled, so a wait returns at once.
        let ready = t.server.settle(fork_id).await;
        assert_eq!(ready["status"], "completed", "{ready}");
        let model_calls = t.model.requests().len();
        assert_eq!(model_calls, 1, "the fork ran no turn");
        t.server
            .ok(
                "job_reply",
                json!({"job_id": fork_id, "prompt": "SAY: later"}),
            )
            .await;
        let settled = t.server.next_news(fork_id, ready["seq"].as_u64()).await;
        assert_eq!(
            (&settled["turn"], &settled["result"]),
            (&json!(1), &json!("later"))
        );
        assert!(request_for(&t, "SAY: later").contains("parent-secret"));
    }

    #[tokio::test]
    async fn a_running_job_is_forked_only_once_its_turn_settles() {
        let t = setup(APP_SERVER, &[]).await;
        let started = t
            .server
            .ok(
                "job_start",
                json!({"prompt": "SLEEP: 1", "cwd": t.sandbox.work()}),
            )
            .await;
        let e = t
            .server
            .err(
                "job_fork",
                json!({"job_id": started["job_id"], "prompt": "SAY: x"}),
            )
            .await;
        assert!(e.contains("forked between turns"), "{e}");
    }

    #[tokio::test]
    async fn backends_without_thread_fork_refuse_it_naming_the_one_that_has_it() {
        for flavor in [EXEC, MCP_SERVER] {
            let t = setup(flavor, &[]).await;
            let (job_id, _) = t.run("SAY: x", json!({})).await;
            let e = t
                .server
                .err("job_fork", json!({"job_id": job_id, "prompt": "SAY: y"}))
                .await;
            assert!(
                e.contains(&format!(
                    "forking a thread is not supported by codex {}",
                    flavor.backend
                )) && e.contains("app-server"),
                "{e}"
            );
        }
    }
}

/// `isolation: "worktree"` and `job_cleanup`.
mod worktree {
    use super::*;

    #[tokio::test]
    async fn forced_cleanup_discards_the_work_and_can_delete_the_branch() {
        let t = setup(APP_SERVER, &[]).await;
        let repo = git_repository(&t);
        let (job_id, _) = t
            .run(
                "RUN: echo draft > notes.txt",
                json!({"cwd": repo, "isolation": "worktree"}),
            )
            .await;
        let cleaned = t
            .server
            .ok(
                "job_cleanup",
                json!({"job_id": job_id, "force": true, "delete_branch": true}),
            )
            .await;
        assert!(cleaned.get("branch").is_none(), "{cleaned}");
        assert_eq!(git(&repo, &["branch", "--list", "codex-async/*"]), "");
        assert_eq!(git(&repo, &["worktree", "list"]).lines().count(), 1);
    }

    #[tokio::test]
    async fn a_worktree_starts_from_base_ref_and_a_cwd_outside_git_is_refused() {
        let t = setup(APP_SERVER, &[]).await;
        let repo = git_repository(&t);
        let first = git(&repo, &["rev-parse", "HEAD"]);
        std::fs::write(repo.join("later.txt"), "later\n").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "later"]);
        let (job_id, _) = t
            .run(
                "RUN: ls",
                json!({"cwd": repo, "isolation": "worktree", "base_ref": first}),
            )
            .await;
        let result = t.server.ok("job_result", json!({"job_id": job_id})).await;
        let listing = result["text"].as_str().unwrap();
        assert!(
            listing.contains("base.txt") && !listing.contains("later.txt"),
            "{listing}"
        );
        let e = t
            .server
            .err(
                "job_start",
                json!({"prompt": "SAY: x", "cwd": t.sandbox.home(), "isolation": "worktree"}),
            )
            .await;
        assert!(e.contains("is not in a git repository"), "{e}");
        let e = t
            .server
            .err(
                "job_start",
                json!({"prompt": "SAY: x", "cwd": repo, "isolation": "worktree", "base_ref": "nope"}),
            )
            .await;
        assert!(e.contains(r#"base_ref "nope" names no commit"#), "{e}");
        let e = t
            .server
            .err(
                "job_start",
                json!({"prompt": "SAY: x", "cwd": repo, "isolation": "worktree",
                       "base_ref": "--output=/tmp/x"}),
            )
            .await;
        assert!(e.contains("starts with '-'"), "{e}");
    }

    #[tokio::test]
    async fn a_fork_asked_to_be_isolated_gets_a_worktree_of_its_own() {
        let t = setup(APP_SERVER, &[]).await;
        let repo = git_repository(&t);
        let (parent, _) = t
            .run(
                "RUN: echo one > same.txt",
                json!({"cwd": repo, "isolation": "worktree"}),
            )
            .await;
        let fork = t
            .server
            .ok(
                "job_fork",
                json!({"job_id": parent, "prompt": "RUN: echo two > same.txt",
                       "isolation": "worktree"}),
            )
            .await;
        let fork_id = fork["job_id"].as_str().unwrap();
        let settled = t.server.settle(fork_id).await;
        assert_eq!(
            settled["changes"]["branch"],
            format!("codex-async/{fork_id}")
        );
        let listed = t.server.ok("job_list", json!({})).await;
        let worktree_of = |id: &str| {
            let jobs = listed["jobs"].as_array().unwrap();
            let job = jobs.iter().find(|j| j["job_id"] == id).unwrap();
            PathBuf::from(job["worktree"].as_str().unwrap())
        };
        let read = |id: &str| std::fs::read_to_string(worktree_of(id).join("same.txt")).unwrap();
        assert_eq!((read(&parent).trim(), read(fork_id).trim()), ("one", "two"));
    }

    #[tokio::test]
    async fn a_job_still_running_in_a_worktree_keeps_it() {
        let t = setup(APP_SERVER, &[]).await;
        let repo = git_repository(&t);
        let (parent, _) = t
            .run("SAY: first", json!({"cwd": repo, "isolation": "worktree"}))
            .await;
        // The fork shares the parent's worktree.
        let fork = t
            .server
            .ok("job_fork", json!({"job_id": parent, "prompt": "SLEEP: 2"}))
            .await;
        let e = t
            .server
            .err("job_cleanup", json!({"job_id": parent, "force": true}))
            .await;
        assert!(
            e.contains(&format!("job {}", fork["job_id"].as_str().unwrap())),
            "{e}"
        );
        t.server.settle(fork["job_id"].as_str().unwrap()).await;
        t.server
            .ok("job_cleanup", json!({"job_id": parent, "force": true}))
            .await;
    }

    #[tokio::test]
    async fn retention_removes_a_clean_worktree_with_its_job_and_keeps_one_with_work_in_it() {
        let t = setup(APP_SERVER, &["--retention", "1s"]).await;
        let repo = git_repository(&t);
        let isolated = json!({"cwd": repo, "isolation": "worktree"});
        let (clean, _) = t.run("SAY: nothing to change", isolated.clone()).await;
        let (dirty, _) = t.run("RUN: echo draft > notes.txt", isolated).await;
        let worktrees = t.sandbox.state().join("worktrees");
        let (clean, dirty) = (worktrees.join(clean), worktrees.join(dirty));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while clean.exists() || t.server.job_count().await > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "retention left {}",
                clean.display()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(
            dirty.join("notes.txt").exists(),
            "uncommitted work is never thrown away"
        );
    }
}

/// `job_review`: Codex's review as a job.
mod review {
    use super::*;

    #[tokio::test]
    async fn a_review_of_a_directory_runs_on_a_new_thread_with_custom_instructions() {
        let t = setup(APP_SERVER, &[]).await;
        let repo = git_repository(&t);
        let review = t
            .server
            .ok(
                "job_review",
                json!({"cwd": repo, "target": "custom", "instructions": "check the docs"}),
            )
            .await;
        let settled = t.server.settle(review["job_id"].as_str().unwrap()).await;
        assert_eq!(
            settled["result"], "mock review: nothing to flag",
            "{settled}"
        );
        let asked = t.last_model_request().to_string();
        assert!(asked.contains("check the docs"), "{asked}");
        let e = t
            .server
            .err("job_review", json!({"cwd": repo, "target": "commit"}))
            .await;
        assert!(e.contains(r#"target "commit" needs sha"#), "{e}");
    }

    #[tokio::test]
    async fn backends_without_review_refuse_it() {
        for flavor in [EXEC, MCP_SERVER] {
            let t = setup(flavor, &[]).await;
            let e = t
                .server
                .err(
                    "job_review",
                    json!({"cwd": t.sandbox.work(), "target": "uncommitted"}),
                )
                .await;
            assert!(
                e.contains(&format!(
                    "review is not supported by codex {}",
                    flavor.backend
                )),
                "{e}"
            );
        }
    }
}
