//! End to end: the built server over stdio, driven by an MCP client, running the real Codex
//! against the mock model server. Every case runs on `codex mcp-server` 0.153.4 and
//! `codex app-server` 0.169.0, and all but those that need deltas or approvals on `codex exec`
//! 0.169.0; the `suite!` lines at the end say which case runs where.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failed test

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::codex_install::codex;
use support::real::{APP_SERVER, EXEC, Flavor, MCP_SERVER, Setup, setup, setup_with};
use support::server::{Server, alive, is_turn_end, within};

impl Flavor {
    /// An event that shows a long turn is under way: exec streams nothing, so its turn start.
    fn midturn_event(self) -> &'static str {
        if self.backend == "exec" {
            "turn_started"
        } else {
            "agent_message_delta"
        }
    }
}

impl Setup {
    async fn start(&self, prompt: &str) -> String {
        let started = self.server.start_job(&self.sandbox, prompt).await;
        started["job_id"].as_str().unwrap().to_owned()
    }

    /// Waits until the job has an event of `kind`.
    async fn until_event(&self, job_id: &str, kind: &str) {
        self.server.until_event(job_id, kind).await;
    }

    /// Runs a job whose command needs approval (read-only sandbox, `on-request`) to its end and
    /// returns its events.
    async fn escalated_job(&self, command: &str) -> Vec<Value> {
        let started = self
            .server
            .ok(
                "job_start",
                json!({"prompt": format!("ESCALATE: {command}"), "cwd": self.sandbox.work(),
                       "approval_policy": "on-request", "sandbox": "read-only"}),
            )
            .await;
        let job_id = started["job_id"].as_str().unwrap();
        assert_eq!(self.server.settle(job_id).await["status"], "completed");
        self.server.all_events(job_id, 1000).await
    }

    /// Every user prompt text the mock model has seen, per request.
    fn prompts_seen(&self) -> Vec<String> {
        self.model
            .requests()
            .iter()
            .map(|r| r["input"].to_string())
            .collect()
    }
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

mod cases {
    use super::*;

    pub async fn a_job_runs_to_completion_with_codex_answer_as_result(f: Flavor) {
        let t = setup(f, &[]).await;
        let job_id = t.start("SAY: hello from the mock").await;
        let settled = t.server.settle(&job_id).await;
        assert_eq!(settled["status"], "completed");
        assert_eq!(settled["result"], "hello from the mock");
        let events = t.server.ok("job_events", json!({"job_id": job_id})).await;
        assert_eq!(events["status"], "completed");
        // The page holds the turn's end, which says the result: it is not said twice.
        assert!(events.get("result").is_none(), "{events}");
        let result = t.server.ok("job_result", json!({"job_id": job_id})).await;
        assert_eq!(result["text"], "hello from the mock");
        assert_eq!(
            (&result["turn"], &result["status"]),
            (&json!(1), &json!("completed"))
        );
        let later = t
            .server
            .ok(
                "job_events",
                json!({"job_id": job_id, "cursor": events["cursor"]}),
            )
            .await;
        assert_eq!(
            later["result"], "hello from the mock",
            "a page without the end says it"
        );
        let kinds = types(events["events"].as_array().unwrap());
        for expected in [
            "thread_started",
            "turn_started",
            "user_message",
            "agent_message",
            "turn_completed",
        ] {
            assert!(
                kinds.contains(&expected.to_owned()),
                "{expected} missing from {kinds:?}"
            );
        }
        assert_eq!(kinds.last().unwrap(), "turn_completed");
        let message = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "agent_message")
            .unwrap();
        assert_eq!(message["data"]["text"], "hello from the mock");
        assert!(message["data"].get("codex").is_none(), "our fields only");
        // Codex's own message is kept, for whoever asks.
        let raw = t
            .server
            .ok("job_events", json!({"job_id": job_id, "raw": true}))
            .await;
        let raw_events = raw["events"].as_array().unwrap();
        assert!(
            raw_events.iter().all(|e| e["data"]["codex"].is_object()),
            "{raw_events:?}"
        );
    }

    pub async fn start_answers_before_the_turn_ends(f: Flavor) {
        let t = setup(f, &[]).await;
        let started = t.server.start_job(&t.sandbox, "SLEEP: 3").await;
        assert_eq!(started["status"], "running");
        assert!(started.get("result").is_none());
        let job_id = started["job_id"].as_str().unwrap();
        let settled = t.server.settle(job_id).await;
        assert_eq!(settled["status"], "completed");
        assert!(settled["result"].as_str().unwrap().ends_with("slept 3"));
        // The answer did not wait for Codex to name its thread; the job names it once Codex has.
        let events = t
            .server
            .ok(
                "job_events",
                json!({"job_id": job_id, "event_types": ["thread_started"]}),
            )
            .await;
        let thread_id = &events["events"][0]["data"]["thread_id"];
        assert!(thread_id.is_string(), "{events}");
        let listed = t.server.ok("job_list", json!({})).await;
        assert_eq!(&listed["jobs"][0]["thread_id"], thread_id);
        assert_eq!(&settled["thread_id"], thread_id, "job_wait names it too");
    }

    pub async fn wait_times_out_while_the_job_runs_and_returns_its_notification_when_it_settles(
        f: Flavor,
    ) {
        let t = setup(f, &[]).await;
        let job_id = t.start("SLEEP: 2").await;
        let early = t
            .server
            .ok(
                "job_wait",
                json!({"job_id": job_id, "timeout_seconds": 0.2}),
            )
            .await;
        assert_eq!(early["timed_out"], true);
        assert_eq!(early["notifications"], json!([]));
        let later = t
            .server
            .ok(
                "job_wait",
                json!({"cursor": early["cursor"], "timeout_seconds": 30}),
            )
            .await;
        assert_eq!(later["timed_out"], false);
        let notes = later["notifications"].as_array().unwrap();
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0]["job_id"], job_id);
        assert_eq!(notes[0]["status"], "completed");
        assert_eq!(later["cursor"], notes[0]["seq"]);
        // The job is settled now: waiting on it without a cursor answers at once.
        let again = t
            .server
            .ok("job_wait", json!({"job_id": job_id, "timeout_seconds": 30}))
            .await;
        assert_eq!(again["notifications"], later["notifications"]);
        // The global feed has the same entry.
        let feed = t.server.ok("job_notifications", json!({})).await;
        assert_eq!(feed["notifications"], later["notifications"]);
    }

    pub async fn paging_with_small_limits_reads_every_event_once_in_order(f: Flavor) {
        let t = setup(f, &[]).await;
        let job_id = t.start("RUN: echo paged").await;
        t.server.settle(&job_id).await;
        let whole = t.server.all_events(&job_id, 1000).await;
        assert!(
            whole.len() >= 7,
            "a command run has many events: {}",
            whole.len()
        );
        let seqs: Vec<u64> = whole.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=whole.len() as u64).collect::<Vec<_>>(),
            "no gap, no duplicate"
        );
        // The same events in the same order whatever the page size (a page says a long text
        // once, so the data of an event may refer to another event of its page).
        let shape = |events: &[Value]| -> Vec<(Value, Value, Value)> {
            events
                .iter()
                .map(|e| (e["seq"].clone(), e["type"].clone(), e["turn"].clone()))
                .collect()
        };
        for page in [1, 2, 3] {
            assert_eq!(
                shape(&t.server.all_events(&job_id, page).await),
                shape(&whole),
                "page size {page}"
            );
        }
        let kinds = types(&whole);
        for expected in ["command_started", "command_completed"] {
            assert!(
                kinds.contains(&expected.to_owned()),
                "{expected} missing from {kinds:?}"
            );
        }
        let ran = whole
            .iter()
            .find(|e| e["type"] == "command_completed")
            .unwrap();
        assert!(ran["data"]["output"].as_str().unwrap().contains("paged"));
        assert_eq!(ran["data"]["exit_code"], 0);
    }

    pub async fn a_message_streamed_in_many_pieces_arrives_whole_in_a_few_events(f: Flavor) {
        let t = setup(f, &[]).await;
        // The mock streams 2,000 deltas `w0 `, `w1 `, … at once.
        let job_id = t.start("DELTAS: 2000").await;
        t.server.settle(&job_id).await;
        let events = t.server.all_events(&job_id, 1000).await;
        let pieces: Vec<&str> = events
            .iter()
            .filter(|e| e["type"] == "agent_message_delta")
            .filter_map(|e| e["data"]["delta"].as_str())
            .collect();
        let message = events
            .iter()
            .find(|e| e["type"] == "agent_message")
            .and_then(|e| e["data"]["text"].as_str())
            .unwrap();
        let expected: String = (0..2000).map(|i| format!("w{i} ")).collect();
        assert!(
            pieces.concat() == expected,
            "the pieces lost or moved a word"
        );
        assert_eq!(message.trim(), expected.trim());
        assert!(
            pieces.len() < 200,
            "{} events for 2,000 pieces: they were not joined",
            pieces.len()
        );
    }

    pub async fn deltas_are_hidden_unless_asked_for_and_filters_and_truncation_apply(f: Flavor) {
        let t = setup(f, &[]).await;
        let job_id = t.start("SLEEP: 1").await;
        t.server.settle(&job_id).await;
        let default = t.server.ok("job_events", json!({"job_id": job_id})).await;
        assert!(
            !types(default["events"].as_array().unwrap())
                .contains(&"agent_message_delta".to_owned())
        );
        let deltas = t
            .server
            .ok(
                "job_events",
                json!({"job_id": job_id, "event_types": ["agent_message_delta"]}),
            )
            .await;
        let deltas = deltas["events"].as_array().unwrap();
        assert!(deltas.len() >= 2);
        assert!(deltas.iter().all(|e| e["type"] == "agent_message_delta"));
        let short = t
            .server
            .ok(
                "job_events",
                json!({"job_id": job_id, "event_types": ["agent_message"], "truncate": 4}),
            )
            .await;
        let text = short["events"][0]["data"]["text"].as_str().unwrap();
        assert!(
            text.starts_with("tick") && text.contains("truncated"),
            "{text}"
        );
    }

    pub async fn reply_continues_the_same_thread_with_its_history(f: Flavor) {
        let t = setup(f, &[]).await;
        let job_id = t.start("SAY: first answer").await;
        t.server.settle(&job_id).await;
        let thread = t.server.ok("job_list", json!({})).await["jobs"][0]["thread_id"].clone();
        assert!(thread.is_string());
        let reply = t
            .server
            .ok(
                "job_reply",
                json!({"job_id": job_id, "prompt": "SAY: second answer"}),
            )
            .await;
        assert_eq!(reply["turn"], 2);
        let settled = t.server.settle(&job_id).await;
        assert_eq!(settled["status"], "completed");
        assert_eq!(settled["turn"], 2);
        assert_eq!(settled["result"], "second answer");
        // Codex sent the first turn back as history: its prompt, and the assistant's answer.
        let last_request = t.model.requests().pop().unwrap();
        let history = last_request["input"].as_array().unwrap();
        let said = |role: &str, text: &str| {
            history.iter().any(|item| {
                item["role"] == role
                    && item["content"]
                        .as_array()
                        .is_some_and(|parts| parts.iter().any(|p| p["text"] == text))
            })
        };
        assert!(
            said("user", "SAY: first answer"),
            "the first prompt: {history:?}"
        );
        assert!(
            said("assistant", "first answer"),
            "the first answer: {history:?}"
        );
        let listed = t.server.ok("job_list", json!({})).await;
        assert_eq!(listed["jobs"][0]["thread_id"], thread, "same Codex thread");
        assert_eq!(listed["jobs"][0]["turns"], 2);
        let turn2 = t
            .server
            .ok(
                "job_events",
                json!({"job_id": job_id, "cursor": reply["cursor"]}),
            )
            .await;
        let turn2 = turn2["events"].as_array().unwrap();
        assert!(!turn2.is_empty(), "the reply's events follow its cursor");
        assert!(turn2.iter().all(|e| e["turn"] == 2), "{turn2:?}");
    }

    pub async fn five_concurrent_jobs_each_get_their_own_events(f: Flavor) {
        let t = setup(f, &["--max-concurrent-jobs", "5"]).await;
        let mut jobs = Vec::new();
        for i in 0..5 {
            jobs.push(t.start(&format!("RUN: echo marker-{i}")).await);
        }
        for (i, job_id) in jobs.iter().enumerate() {
            let settled = t.server.settle(job_id).await;
            assert_eq!(settled["status"], "completed");
            let result = settled["result"].as_str().unwrap();
            assert!(result.contains(&format!("marker-{i}")), "{result}");
            let events = t.server.all_events(job_id, 1000).await;
            let text = serde_json::to_string(&events).unwrap();
            for other in (0..5).filter(|o| *o != i) {
                assert!(
                    !text.contains(&format!("marker-{other}")),
                    "job {i} got job {other}'s events"
                );
            }
        }
    }

    pub async fn jobs_beyond_the_concurrency_limit_queue_and_then_run(f: Flavor) {
        let t = setup(f, &["--max-concurrent-jobs", "1"]).await;
        let first = t.start("SLEEP: 1").await;
        let second = t.server.start_job(&t.sandbox, "SAY: after the first").await;
        assert_eq!(second["status"], "queued");
        assert!(
            second["thread_id"].is_null(),
            "no thread until the job runs: {second}"
        );
        let second = second["job_id"].as_str().unwrap();
        let queued = t.server.ok("job_list", json!({"status": "queued"})).await;
        assert_eq!(queued["jobs"][0]["job_id"], second);
        let e = t
            .server
            .err(
                "job_reply",
                json!({"job_id": second, "prompt": "SAY: too early"}),
            )
            .await;
        assert!(e.contains("queued") && e.contains("job_wait"), "{e}");
        assert_eq!(t.server.settle(&first).await["status"], "completed");
        let settled = t.server.settle(second).await;
        assert_eq!(settled["status"], "completed");
        assert_eq!(settled["result"], "after the first");
    }

    pub async fn cancel_stops_a_long_turn_and_the_thread_and_server_stay_usable(f: Flavor) {
        let t = setup(f, &[]).await;
        let job_id = t.start("SLEEP: 60").await;
        t.until_event(&job_id, f.midturn_event()).await;
        let cancelled = t.server.ok("job_cancel", json!({"job_id": job_id})).await;
        assert_eq!(cancelled["status"], "cancelled");
        let events = t.server.all_events(&job_id, 1000).await;
        assert_eq!(types(&events).last().unwrap(), "turn_cancelled");
        let feed = t
            .server
            .ok("job_notifications", json!({"job_id": job_id}))
            .await;
        assert_eq!(feed["notifications"][0]["status"], "cancelled");

        for (turn, said) in [(2, "back again"), (3, "and again"), (4, "once more")] {
            t.server
                .ok(
                    "job_reply",
                    json!({"job_id": job_id, "prompt": format!("SAY: {said}")}),
                )
                .await;
            let replied = t.server.settle(&job_id).await;
            assert_eq!(replied["turn"], turn);
            assert_eq!(replied["status"], "completed", "{replied}");
            assert_eq!(replied["result"], said);
        }

        let next = t.start("SAY: a new job").await;
        assert_eq!(t.server.settle(&next).await["result"], "a new job");
    }

    pub async fn replies_after_a_cancel_before_the_model_answered_each_land_on_their_turn(
        f: Flavor,
    ) {
        let t = setup(f, &[]).await;
        // The model has not even answered when the cancel comes.
        let job_id = t.start("WAIT: 30").await;
        t.until_event(&job_id, "turn_started").await;
        let cancelled = t.server.ok("job_cancel", json!({"job_id": job_id})).await;
        assert_eq!(cancelled["status"], "cancelled");
        // 0.153 then tags later turns' events, and answers their calls, with ids of earlier
        // calls (measured: turn 4's answer came under turn 2's id).
        for (turn, said) in [(2, "back again"), (3, "and again"), (4, "once more")] {
            t.server
                .ok(
                    "job_reply",
                    json!({"job_id": job_id, "prompt": format!("SAY: {said}")}),
                )
                .await;
            let replied = t.server.settle(&job_id).await;
            assert_eq!(replied["turn"], turn);
            assert_eq!(replied["status"], "completed", "{replied}");
            assert_eq!(replied["result"], said);
        }
    }

    pub async fn reply_while_the_turn_runs_is_refused_with_the_way_out(f: Flavor) {
        let t = setup(f, &[]).await;
        let job_id = t.start("SLEEP: 3").await;
        let refused = t
            .server
            .err(
                "job_reply",
                json!({"job_id": job_id, "prompt": "SAY: too early"}),
            )
            .await;
        assert!(
            refused.contains("job_wait") && refused.contains("job_cancel"),
            "{refused}"
        );
        let settled = t.server.settle(&job_id).await;
        assert_eq!(settled["status"], "completed");
        assert!(
            !t.prompts_seen().iter().any(|p| p.contains("too early")),
            "never forwarded"
        );
    }

    pub async fn a_retried_start_with_the_same_client_request_id_starts_nothing_new(f: Flavor) {
        let t = setup(f, &[]).await;
        let args =
            json!({"prompt": "SAY: once", "cwd": t.sandbox.work(), "client_request_id": "retry-1"});
        let first = t.server.ok("job_start", args.clone()).await;
        let second = t.server.ok("job_start", args).await;
        assert_eq!(first["job_id"], second["job_id"]);
        t.server.settle(first["job_id"].as_str().unwrap()).await;
        assert_eq!(t.model.requests().len(), 1, "one Codex turn");
        assert_eq!(
            t.server.ok("job_list", json!({})).await["jobs"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    pub async fn with_approvals_decline_the_command_is_refused_and_the_turn_finishes(f: Flavor) {
        let t = setup(f, &["--approvals", "decline"]).await;
        let events = t.escalated_job("touch declined.txt").await;
        let requested = events
            .iter()
            .find(|e| e["type"] == "approval_requested")
            .expect("approval_requested");
        let command = requested["data"]["command"].as_str().unwrap();
        assert!(command.contains("touch declined.txt"), "{command}");
        let resolved = events
            .iter()
            .find(|e| e["type"] == "approval_resolved")
            .expect("approval_resolved");
        assert_eq!(resolved["data"]["decision"], "decline");
        assert_eq!(resolved["data"]["decided_by"], "policy");
        assert_eq!(
            resolved["data"]["request_id"],
            requested["data"]["request_id"]
        );
        assert!(!t.sandbox.work().join("declined.txt").exists());
    }

    pub async fn with_approvals_approve_the_command_runs(f: Flavor) {
        let t = setup(f, &["--approvals", "approve"]).await;
        let events = t.escalated_job("touch approved.txt").await;
        let resolved = events
            .iter()
            .find(|e| e["type"] == "approval_resolved")
            .expect("approval_resolved");
        assert_eq!(resolved["data"]["decision"], "accept");
        assert!(t.sandbox.work().join("approved.txt").exists());
    }

    pub async fn a_killed_codex_fails_its_jobs_with_the_reason_and_the_next_job_works(f: Flavor) {
        let t = setup(f, &[]).await;
        let job_id = t.start("SLEEP: 60").await;
        t.until_event(&job_id, f.midturn_event()).await;
        let children = t.server.children();
        assert!(!children.is_empty(), "codex runs as a child of the server");
        for pid in &children {
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        let settled = t.server.settle(&job_id).await;
        assert_eq!(settled["status"], "failed");
        let error = settled["error"].as_str().unwrap();
        assert!(
            error.contains("Codex exited") && error.contains("signal 9"),
            "{error}"
        );
        let next = t.start("SAY: still here").await;
        assert_eq!(t.server.settle(&next).await["result"], "still here");
    }

    pub async fn closing_stdin_mid_turn_stops_the_server_and_its_codex(f: Flavor) {
        let t = setup(f, &[]).await;
        let job_id = t.start("SLEEP: 60").await;
        t.until_event(&job_id, f.midturn_event()).await;
        let children = t.server.children();
        assert!(!children.is_empty());
        let Setup {
            server,
            model: _model,
            ..
        } = t;
        let Server {
            client, mut child, ..
        } = server;
        client.cancel().await.ok();
        let status = within("server exit", child.wait()).await.unwrap();
        assert!(status.success(), "{status}");
        for pid in children {
            assert!(!alive(pid), "codex child {pid} outlived the server");
        }
    }

    pub async fn sigterm_stops_the_server_and_its_codex(f: Flavor) {
        let mut t = setup(f, &[]).await;
        let job_id = t.start("SLEEP: 60").await;
        t.until_event(&job_id, f.midturn_event()).await;
        let children = t.server.children();
        let pid = t.server.child.id().unwrap();
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let status = within("server exit", t.server.child.wait()).await.unwrap();
        assert!(status.success(), "{status}");
        for pid in children {
            assert!(!alive(pid), "codex child {pid} outlived the server");
        }
    }

    pub async fn sigint_with_stdin_open_settles_the_job_stops_codex_and_exits(f: Flavor) {
        let mut t = setup(f, &[]).await;
        let job_id = t.start("SLEEP: 60").await;
        t.until_event(&job_id, f.midturn_event()).await;
        assert!(!t.sandbox.codex_processes().is_empty());
        // stdin stays open: the signal alone stops the server.
        t.server.signal(libc::SIGINT);
        let status = within("server exit", t.server.child.wait()).await.unwrap();
        assert!(status.success(), "{status}");
        assert_eq!(
            t.sandbox.codex_processes(),
            Vec::<u32>::new(),
            "codex outlived the server"
        );
        let jobs = t.sandbox.jobs_in_database();
        let (_, status, kinds) = jobs.iter().find(|(id, ..)| *id == job_id).unwrap();
        assert_eq!(status, "interrupted");
        let ends: Vec<&String> = kinds.iter().filter(|k| is_turn_end(k)).collect();
        assert_eq!(ends, ["turn_interrupted"], "{kinds:?}");
        assert_eq!(kinds.last().unwrap(), "turn_interrupted");
    }

    pub async fn sigint_then_sigkill_100ms_later_leaves_no_codex_process(f: Flavor) {
        let mut t = setup(f, &[]).await;
        let job_id = t.start("SLEEP: 60").await;
        t.until_event(&job_id, f.midturn_event()).await;
        assert!(!t.sandbox.codex_processes().is_empty());
        // How Claude Code stops a stdio server: SIGINT, then (after a SIGTERM) SIGKILL to the
        // server alone, 100 ms later.
        t.server.signal(libc::SIGINT);
        tokio::time::sleep(Duration::from_millis(100)).await;
        t.server.signal(libc::SIGKILL);
        within("server exit", t.server.child.wait()).await.unwrap();
        t.sandbox.until_no_codex().await;
    }

    pub async fn thread_options_reach_codex(f: Flavor) {
        let t = setup(f, &[]).await;
        // A profile is a file beside Codex's config, selected per Codex process.
        std::fs::write(
            t.sandbox.codex_home().join("marked.config.toml"),
            "model = \"mock-from-profile\"\n",
        )
        .unwrap();
        let mut jobs = vec![
            json!({"prompt": "SAY: direct", "model": "mock-direct",
                   "base_instructions": "BASE-MARK", "developer_instructions": "DEV-MARK"}),
            json!({"prompt": "SAY: by config", "config": {"model": "mock-from-config"}}),
        ];
        let by_profile =
            json!({"prompt": "SAY: by profile", "profile": "marked", "cwd": t.sandbox.work()});
        if f.backend == "exec" {
            jobs.push(by_profile);
        } else {
            let e = t.server.err("job_start", by_profile).await;
            assert!(e.contains("per process") && e.contains("config"), "{e}");
        }
        for mut args in jobs {
            args["cwd"] = json!(t.sandbox.work());
            let job_id = t.server.ok("job_start", args).await["job_id"].clone();
            let settled = t.server.settle(job_id.as_str().unwrap()).await;
            assert_eq!(settled["status"], "completed", "{settled}");
        }
        let request_for = |prompt: &str| {
            t.model
                .requests()
                .into_iter()
                .find(|r| r["input"].to_string().contains(prompt))
                .unwrap_or_else(|| panic!("no request for {prompt}"))
        };
        let direct = request_for("SAY: direct");
        assert_eq!(direct["model"], "mock-direct");
        // Where Codex puts them differs by version (`instructions`, or a message in `input`).
        let sent = direct.to_string();
        assert!(sent.contains("BASE-MARK"), "no base instructions: {sent}");
        assert!(
            direct["input"].to_string().contains("DEV-MARK"),
            "no developer instructions"
        );
        assert_eq!(request_for("SAY: by config")["model"], "mock-from-config");
        if f.backend == "exec" {
            assert_eq!(request_for("SAY: by profile")["model"], "mock-from-profile");
        }
    }

    pub async fn job_wait_sends_progress_while_it_waits(f: Flavor) {
        let t = setup(f, &["--progress-interval-ms", "100"]).await;
        let job_id = t.start("SLEEP: 1").await;
        t.server
            .ok("job_wait", json!({"job_id": job_id, "timeout_seconds": 30}))
            .await;
        let progress = t.server.recorder.progress.lock().unwrap().clone();
        assert!(
            !progress.is_empty(),
            "no progress notification while waiting"
        );
        let values: Vec<f64> = progress.iter().map(|p| p.progress).collect();
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "progress increases: {values:?}"
        );
    }

    pub async fn a_failing_model_fails_the_job_with_its_message(f: Flavor) {
        let t = setup(f, &[]).await;
        let job_id = t.start("HTTP400: the model refuses").await;
        let settled = t.server.settle(&job_id).await;
        assert_eq!(settled["status"], "failed");
        assert!(
            settled["error"]
                .as_str()
                .unwrap()
                .contains("the model refuses")
        );
        let events = t.server.all_events(&job_id, 1000).await;
        assert_eq!(types(&events).last().unwrap(), "turn_failed");
        assert!(types(&events).contains(&"error".to_owned()));
    }

    pub async fn list_shows_jobs_newest_first_with_shortened_text(f: Flavor) {
        let t = setup(f, &[]).await;
        let long = format!("SAY: {}", "x".repeat(500));
        let first = t.start(&long).await;
        t.server.settle(&first).await;
        let second = t.start("SAY: second").await;
        t.server.settle(&second).await;
        let listed = t.server.ok("job_list", json!({})).await;
        let jobs = listed["jobs"].as_array().unwrap();
        assert_eq!(jobs[0]["job_id"], second);
        assert_eq!(jobs[1]["job_id"], first);
        assert!(jobs[1]["prompt"].as_str().unwrap().contains("truncated"));
        assert!(
            jobs[1]["last_message"]
                .as_str()
                .unwrap()
                .contains("truncated")
        );
        assert_eq!(jobs[1]["cwd"], t.sandbox.work().to_str().unwrap());
        let limited = t.server.ok("job_list", json!({"limit": 1})).await;
        assert_eq!(limited["jobs"].as_array().unwrap().len(), 1);
    }

    pub async fn bad_input_gets_an_error_that_names_the_problem_and_the_fix(f: Flavor) {
        let t = setup(f, &[]).await;
        let s = &t.server;
        let work = t.sandbox.work();
        let file = work.join("a-file");
        std::fs::write(&file, "").unwrap();

        let e = s.err("job_events", json!({"job_id": "job-nope"})).await;
        assert!(e.contains("job-nope") && e.contains("job_list"), "{e}");
        let e = s
            .err("job_reply", json!({"job_id": "job-nope", "prompt": "hi"}))
            .await;
        assert!(e.contains("job_list"), "{e}");
        let e = s.err("job_cancel", json!({"job_id": "job-nope"})).await;
        assert!(e.contains("job_list"), "{e}");

        let e = s
            .err("job_start", json!({"prompt": "  ", "cwd": work}))
            .await;
        assert!(e.contains("prompt"), "{e}");
        let e = s.err("job_start", json!({"cwd": work})).await;
        assert!(e.contains("prompt"), "{e}");
        let e = s
            .err("job_start", json!({"prompt": "hi", "promt": "typo"}))
            .await;
        assert!(e.contains("promt"), "{e}");
        let e = s
            .err("job_start", json!({"prompt": "hi", "cwd": "relative/dir"}))
            .await;
        assert!(e.contains("absolute"), "{e}");
        let e = s
            .err("job_start", json!({"prompt": "hi", "cwd": "/no/such/dir"}))
            .await;
        assert!(e.contains("does not exist"), "{e}");
        let e = s
            .err("job_start", json!({"prompt": "hi", "cwd": file}))
            .await;
        assert!(e.contains("not a directory"), "{e}");
        let e = s
            .err(
                "job_start",
                json!({"prompt": "hi", "approval_policy": "on-failure"}),
            )
            .await;
        assert!(e.contains("approval_policy") && e.contains("never"), "{e}");

        let job_id = t.start("SAY: done").await;
        s.settle(&job_id).await;
        let e = s
            .err("job_events", json!({"job_id": job_id, "cursor": 10_000}))
            .await;
        assert!(
            e.contains("cursor 10000") && e.contains("0 to read from the start"),
            "{e}"
        );
        let e = s
            .err(
                "job_events",
                json!({"job_id": job_id, "event_types": ["nonsense"]}),
            )
            .await;
        assert!(e.contains("nonsense") && e.contains("agent_message"), "{e}");
        let e = s
            .err("job_events", json!({"job_id": job_id, "limit": 0}))
            .await;
        assert!(e.contains("limit"), "{e}");
        let e = s.err("job_notifications", json!({"cursor": 99})).await;
        assert!(e.contains("cursor 99"), "{e}");
        let e = s.err("job_wait", json!({"cursor": 99})).await;
        assert!(e.contains("cursor 99"), "{e}");
        let e = s.err("job_wait", json!({"timeout_seconds": -1})).await;
        assert!(e.contains("timeout_seconds"), "{e}");
        let e = s.err("job_cancel", json!({"job_id": job_id})).await;
        assert!(
            e.contains("already completed") && e.contains("job_reply"),
            "{e}"
        );

        // The server keeps serving.
        assert_eq!(s.job_count().await, 1);
    }

    pub async fn wait_without_arguments_waits_for_the_next_notification_from_now(f: Flavor) {
        let t = setup(f, &[]).await;
        let earlier = t.start("SAY: earlier").await;
        t.server.settle(&earlier).await;
        let later = t.start("SLEEP: 1").await;
        let answer = t
            .server
            .ok("job_wait", json!({"timeout_seconds": 60}))
            .await;
        let notes = answer["notifications"].as_array().unwrap();
        assert_eq!(
            notes.len(),
            1,
            "only what happened after the call: {notes:?}"
        );
        assert_eq!(notes[0]["job_id"], later);
    }

    pub async fn wait_is_capped_by_max_wait_seconds(f: Flavor) {
        let t = setup(f, &["--max-wait-seconds", "1"]).await;
        let job_id = t.start("SLEEP: 60").await;
        // Uncapped, this would outlast the test's own 90 s limit on every call.
        let answer = t
            .server
            .ok(
                "job_wait",
                json!({"job_id": job_id, "timeout_seconds": 100000}),
            )
            .await;
        assert_eq!(answer["timed_out"], true);
        t.server.ok("job_cancel", json!({"job_id": job_id})).await;
    }

    pub async fn the_npm_shim_is_replaced_by_the_native_codex_it_would_start(f: Flavor) {
        let native = codex(f.version);
        let shim = support::codex_install::target_dir()
            .join("codex-cache")
            .join(f.version)
            .join("node_modules/.bin/codex");
        let t = setup_with(f, &shim, &[]).await;
        // exec starts its Codex per turn: look while one runs.
        let job_id = t.start("SLEEP: 60").await;
        t.until_event(&job_id, f.midturn_event()).await;
        let children = t.server.children();
        assert_eq!(children.len(), 1, "one Codex child, no Node in between");
        let exe = std::fs::read_link(format!("/proc/{}/exe", children[0])).unwrap();
        assert_eq!(exe, native.canonicalize().unwrap());
        t.server.ok("job_cancel", json!({"job_id": job_id})).await;
        let next = t.start("SAY: native").await;
        assert_eq!(t.server.settle(&next).await["result"], "native");
    }
}

support::suite!(
    every_backend,
    [
        mcp_server_0_153 = MCP_SERVER,
        app_server_0_169 = APP_SERVER,
        exec_0_169 = EXEC
    ],
    [
        a_job_runs_to_completion_with_codex_answer_as_result,
        start_answers_before_the_turn_ends,
        wait_times_out_while_the_job_runs_and_returns_its_notification_when_it_settles,
        paging_with_small_limits_reads_every_event_once_in_order,
        reply_continues_the_same_thread_with_its_history,
        five_concurrent_jobs_each_get_their_own_events,
        jobs_beyond_the_concurrency_limit_queue_and_then_run,
        cancel_stops_a_long_turn_and_the_thread_and_server_stay_usable,
        replies_after_a_cancel_before_the_model_answered_each_land_on_their_turn,
        reply_while_the_turn_runs_is_refused_with_the_way_out,
        a_retried_start_with_the_same_client_request_id_starts_nothing_new,
        a_killed_codex_fails_its_jobs_with_the_reason_and_the_next_job_works,
        closing_stdin_mid_turn_stops_the_server_and_its_codex,
        sigterm_stops_the_server_and_its_codex,
        sigint_with_stdin_open_settles_the_job_stops_codex_and_exits,
        sigint_then_sigkill_100ms_later_leaves_no_codex_process,
        thread_options_reach_codex,
        job_wait_sends_progress_while_it_waits,
        a_failing_model_fails_the_job_with_its_message,
        list_shows_jobs_newest_first_with_shortened_text,
        bad_input_gets_an_error_that_names_the_problem_and_the_fix,
        wait_without_arguments_waits_for_the_next_notification_from_now,
        wait_is_capped_by_max_wait_seconds,
        the_npm_shim_is_replaced_by_the_native_codex_it_would_start
    ]
);

// exec streams no deltas and cannot ask for approvals (see the README).
support::suite!(
    streaming_backends,
    [mcp_server_0_153 = MCP_SERVER, app_server_0_169 = APP_SERVER],
    [
        deltas_are_hidden_unless_asked_for_and_filters_and_truncation_apply,
        a_message_streamed_in_many_pieces_arrives_whole_in_a_few_events,
        with_approvals_decline_the_command_is_refused_and_the_turn_finishes,
        with_approvals_approve_the_command_runs
    ]
);

/// The types of the events a scenario leaves, as `job_events` shows them by default.
async fn event_types_of(f: Flavor, prompt: &str) -> Vec<String> {
    let t = setup(f, &[]).await;
    let job_id = t.start(prompt).await;
    t.server.settle(&job_id).await;
    let events = t
        .server
        .ok("job_events", json!({"job_id": job_id, "limit": 1000}))
        .await;
    types(events["events"].as_array().unwrap())
}

#[tokio::test]
async fn the_same_scenario_gives_the_same_event_types_on_every_backend() {
    for prompt in [
        "SAY: same everywhere",
        "RUN: echo same",
        "HTTP400: same failure",
    ] {
        let mcp = event_types_of(MCP_SERVER, prompt).await;
        let app = event_types_of(APP_SERVER, prompt).await;
        let exec = event_types_of(EXEC, prompt).await;
        assert_eq!(mcp, app, "{prompt}: mcp-server vs app-server");
        // exec reports token usage once, at the end of the turn, not after each model response.
        let without_usage = |types: &[String]| -> Vec<String> {
            types
                .iter()
                .filter(|t| *t != "token_usage")
                .cloned()
                .collect()
        };
        assert_eq!(
            without_usage(&mcp),
            without_usage(&exec),
            "{prompt}: mcp-server vs exec"
        );
    }
}

#[tokio::test]
async fn app_server_takes_the_untrusted_approval_policy() {
    let t = setup(APP_SERVER, &[]).await;
    let started = t
        .server
        .ok(
            "job_start",
            json!({"prompt": "SAY: trusted enough", "cwd": t.sandbox.work(), "approval_policy": "untrusted"}),
        )
        .await;
    let settled = t.server.settle(started["job_id"].as_str().unwrap()).await;
    assert_eq!(settled["result"], "trusted enough");
}

#[tokio::test]
async fn mcp_server_a_thread_whose_turn_failed_is_not_continued_so_no_result_shifts() {
    let t = setup(MCP_SERVER, &[]).await;
    let job_id = t.start("HTTP400: the model refuses").await;
    assert_eq!(t.server.settle(&job_id).await["status"], "failed");
    // 0.153 would answer this reply with the failed turn's stale result and run the prompt only
    // with the call after it.
    let e = t
        .server
        .err(
            "job_reply",
            json!({"job_id": job_id, "prompt": "SAY: second"}),
        )
        .await;
    assert!(e.contains("stale result") && e.contains("job_start"), "{e}");
    // A new job is fine.
    let next = t.start("SAY: fresh").await;
    assert_eq!(t.server.settle(&next).await["result"], "fresh");
}

#[tokio::test]
async fn app_server_continues_a_thread_whose_turn_failed() {
    let t = setup(APP_SERVER, &[]).await;
    let job_id = t.start("HTTP400: the model refuses").await;
    assert_eq!(t.server.settle(&job_id).await["status"], "failed");
    t.server
        .ok(
            "job_reply",
            json!({"job_id": job_id, "prompt": "SAY: second"}),
        )
        .await;
    let settled = t.server.settle(&job_id).await;
    assert_eq!(
        (&settled["turn"], &settled["result"]),
        (&json!(2), &json!("second"))
    );
}

#[tokio::test]
async fn app_server_a_turn_cancelled_as_soon_as_it_starts_is_stopped_in_codex() {
    // Codex answers turn/start before it begins the turn, and refuses an interrupt until then
    // ("no active turn") while the turn goes on: the interrupt must reach it once it has begun.
    let t = setup(APP_SERVER, &[]).await;
    let started = t
        .server
        .ok(
            "job_start",
            json!({"prompt": "SLEEP: 30", "cwd": t.sandbox.work()}),
        )
        .await;
    let job_id = started["job_id"].as_str().unwrap();
    let cancelled = t.server.ok("job_cancel", json!({"job_id": job_id})).await;
    assert_eq!(cancelled["status"], "cancelled");
    let events = t.server.all_events(job_id, 1000).await;
    let end = events.last().unwrap();
    assert_eq!(end["type"], "turn_cancelled", "{end}");
    // Codex confirmed it: the turn stopped there, not only in our records.
    assert!(
        end["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("Codex: interrupted"),
        "{end}"
    );
}
