//! Jobs, events and notifications survive restarts and crashes of the server: the real binary,
//! run twice on one state directory, with the real Codex (and the fake one for what it cannot
//! be made to do).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failed test

mod support;

use serde_json::{Value, json};
use support::codex_install::{CODEX_MCP_SERVER_VERSION, codex};
use support::fake_codex;
use support::mock_model::MockModel;
use support::server::{Launch, STEP, Sandbox, Server, alive, within};

async fn job(server: &Server, sandbox: &Sandbox, prompt: &str) -> String {
    server.start_job(sandbox, prompt).await["job_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn feed(server: &Server) -> Vec<Value> {
    server.ok("job_notifications", json!({"limit": 1000})).await["notifications"]
        .as_array()
        .unwrap()
        .clone()
}

async fn status(server: &Server, job_id: &str) -> Value {
    server
        .ok("job_events", json!({"job_id": job_id, "limit": 1}))
        .await["status"]
        .clone()
}

/// Starts a job that finishes and one that is still running, and reads everything back.
struct Before {
    done: String,
    running: String,
    done_events: Vec<Value>,
    running_events: Vec<Value>,
    feed: Vec<Value>,
}

/// Checks that `server`, started on the state of a server that went away after [`two_jobs`],
/// reads back everything as it was and says the running job was cut short by `cause`.
async fn check_after_restart(server: &Server, before: &Before, cause: &str) {
    // Read as before (a page's view says a long text once per answer).
    assert_eq!(server.all_events(&before.done, 7).await, before.done_events);
    let running_after = server.all_events(&before.running, 7).await;
    assert_eq!(
        running_after[..before.running_events.len()],
        before.running_events[..]
    );
    let last = running_after.last().unwrap();
    assert_eq!(last["type"], "turn_interrupted");
    let reason = last["data"]["reason"].as_str().unwrap();
    assert!(reason.contains(cause), "{reason}");
    assert_eq!(status(server, &before.running).await, "interrupted");
    assert_eq!(status(server, &before.done).await, "completed");
}

async fn two_jobs(server: &Server, sandbox: &Sandbox) -> Before {
    let done = job(server, sandbox, "RUN: echo durable").await;
    server.settle(&done).await;
    let running = job(server, sandbox, "SLEEP: 60").await;
    server.until_event(&running, "agent_message_delta").await;
    Before {
        done_events: server.all_events(&done, 7).await,
        running_events: server.all_events(&running, 7).await,
        feed: feed(server).await,
        done,
        running,
    }
}

#[tokio::test]
async fn after_kill_9_every_event_read_reads_back_the_same_and_the_running_job_is_interrupted() {
    let bin = codex(CODEX_MCP_SERVER_VERSION);
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, "gpt-5.2");

    let mut first = Launch::new(&bin, &sandbox).start().await;
    let before = two_jobs(&first, &sandbox).await;
    let codex_children = first.children();
    first.child.start_kill().unwrap();
    within("killed server", first.child.wait()).await.unwrap();
    for pid in codex_children {
        let deadline = tokio::time::Instant::now() + STEP;
        while alive(pid) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "codex {pid} outlived a killed server"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    let second = Launch::new(&bin, &sandbox).start().await;
    check_after_restart(&second, &before, "restarted or it crashed").await;

    let feed_after = feed(&second).await;
    assert_eq!(
        feed_after[..before.feed.len()],
        before.feed[..],
        "old cursors stay valid"
    );
    let interrupted = &feed_after[before.feed.len()];
    assert_eq!(interrupted["job_id"], before.running.as_str());
    assert_eq!(interrupted["status"], "interrupted");
    let old_cursor = before.feed.last().unwrap()["seq"].clone();
    let next = second
        .ok(
            "job_wait",
            json!({"cursor": old_cursor, "timeout_seconds": 0}),
        )
        .await;
    assert_eq!(next["notifications"][0], *interrupted);

    let new_job = job(&second, &sandbox, "SAY: after the crash").await;
    assert!(new_job != before.done && new_job != before.running);
    let settled = second.settle(&new_job).await;
    assert_eq!(settled["result"], "after the crash");
    assert!(
        settled["seq"].as_u64() > interrupted["seq"].as_u64(),
        "the feed counts on"
    );
    assert_eq!(second.job_count().await, 3);
}

#[tokio::test]
async fn a_clean_restart_keeps_every_job_and_says_the_running_one_was_cut_by_the_shutdown() {
    let bin = codex(CODEX_MCP_SERVER_VERSION);
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, "gpt-5.2");

    let first = Launch::new(&bin, &sandbox).start().await;
    let before = two_jobs(&first, &sandbox).await;
    first.stop().await;

    let second = Launch::new(&bin, &sandbox).start().await;
    check_after_restart(&second, &before, "shut down").await;
}

#[tokio::test]
async fn a_second_server_on_the_same_state_dir_is_refused_with_what_to_do() {
    let bin = fake_codex();
    let sandbox = Sandbox::new();
    let _first = Launch::new(&bin, &sandbox).start().await;
    let stderr = Launch::new(&bin, &sandbox).refused().await;
    assert!(
        stderr.contains("another codex-async-mcp") && stderr.contains("--state-dir"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_damaged_database_stops_start_up_with_what_to_do() {
    let bin = fake_codex();
    let sandbox = Sandbox::new();
    let state = sandbox.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("jobs.sqlite"), vec![0x42; 4096]).unwrap();
    let launch = Launch::new(&bin, &sandbox)
        .arg("--state-dir")
        .arg(state.to_str().unwrap());
    let stderr = launch.refused().await;
    assert!(
        stderr.contains("damaged") && stderr.contains("aside"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_state_dir_flag_puts_the_database_where_asked_and_keeps_it_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = fake_codex();
    let sandbox = Sandbox::new();
    let state = sandbox.dir.path().join("elsewhere/state");
    let server = Launch::new(&bin, &sandbox)
        .arg("--state-dir")
        .arg(state.to_str().unwrap())
        .start()
        .await;
    let job_id = job(&server, &sandbox, "hello").await;
    server.settle(&job_id).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    // SQLite's own files, there while the server runs, are as private as the database.
    for file in ["jobs.sqlite", "jobs.sqlite-wal", "jobs.sqlite-shm"] {
        assert_eq!(mode(&state.join(file)), 0o600, "{file}");
    }
    assert!(!sandbox.home().join(".local/state/codex-async-mcp").exists());
}

#[tokio::test]
async fn settled_jobs_past_the_retention_are_deleted_at_start_up() {
    let bin = fake_codex();
    let sandbox = Sandbox::new();
    let first = Launch::new(&bin, &sandbox).start().await;
    let job_id = job(&first, &sandbox, "hello").await;
    first.settle(&job_id).await;
    first.stop().await;
    // Kept by the default retention...
    let kept = Launch::new(&bin, &sandbox).start().await;
    assert_eq!(kept.job_count().await, 1);
    kept.stop().await;
    // ...and gone, with its feed entries, once older than the retention.
    let second = Launch::new(&bin, &sandbox)
        .arg("--retention")
        .arg("0s")
        .start()
        .await;
    assert_eq!(second.ok("job_list", json!({})).await["jobs"], json!([]));
    assert!(feed(&second).await.is_empty());
    let e = second.err("job_events", json!({"job_id": job_id})).await;
    assert!(e.contains("job_list"), "{e}");
}

#[tokio::test]
async fn settled_jobs_past_the_retention_are_deleted_while_the_server_runs() {
    let bin = fake_codex();
    let sandbox = Sandbox::new();
    let server = Launch::new(&bin, &sandbox)
        .arg("--retention")
        .arg("0s")
        .start()
        .await;
    let job_id = job(&server, &sandbox, "hello").await;
    server.settle(&job_id).await;
    let deadline = tokio::time::Instant::now() + STEP;
    while !server.ok("job_list", json!({})).await["jobs"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired job was never deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_flood_of_events_does_not_grow_the_server_by_more_than_a_few_mib() {
    let bin = fake_codex();
    let sandbox = Sandbox::new();
    let server = Launch::new(&bin, &sandbox).start().await;
    let rss_kib = || {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", server.child.id().unwrap()))
                .unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    // Warm up: the first job allocates what every job needs.
    let warm = job(&server, &sandbox, "FLOOD: 2000").await;
    server.settle(&warm).await;
    let before = rss_kib();
    let flood = job(&server, &sandbox, "FLOOD: 200000").await;
    assert_eq!(server.settle(&flood).await["status"], "completed");
    let after = rss_kib();
    let streamed: String = server
        .all_events(&flood, 1000)
        .await
        .iter()
        .filter_map(|e| e["data"]["delta"].as_str().map(str::to_owned))
        .collect();
    let expected: String = (0..200_000).map(|i| i.to_string()).collect();
    assert!(streamed == expected, "a piece of the flood was lost");
    let grown_mib = after.saturating_sub(before) / 1024;
    eprintln!("rss before {before} KiB, after {after} KiB");
    assert!(
        grown_mib < 16,
        "200,000 events grew the server by {grown_mib} MiB"
    );
}

#[tokio::test]
async fn a_reply_to_a_thread_codex_mcp_server_has_forgotten_says_to_start_a_new_job() {
    let bin = fake_codex();
    let sandbox = Sandbox::new();
    let first = Launch::new(&bin, &sandbox).start().await;
    let job_id = job(&first, &sandbox, "hello").await;
    first.settle(&job_id).await;
    first.stop().await;
    let second = Launch::new(&bin, &sandbox).start().await;
    let e = second
        .err("job_reply", json!({"job_id": job_id, "prompt": "again"}))
        .await;
    assert!(
        e.contains("cannot be continued") && e.contains("job_start"),
        "{e}"
    );
}

#[tokio::test]
async fn a_reply_to_a_thread_of_a_codex_that_crashed_says_to_start_a_new_job() {
    let bin = fake_codex();
    let sandbox = Sandbox::new();
    let server = Launch::new(&bin, &sandbox).start().await;
    let job_id = job(&server, &sandbox, "hello").await;
    server.settle(&job_id).await;
    let crashed = job(&server, &sandbox, "CRASH").await;
    server.settle(&crashed).await;
    let e = server
        .err("job_reply", json!({"job_id": job_id, "prompt": "again"}))
        .await;
    assert!(e.contains("cannot be continued"), "{e}");
}

/// A job's thread, after the server restarted, takes a reply, and Codex sees its first turn.
async fn after_a_restart_a_reply_resumes_the_thread(backend: &str) {
    let bin = codex("0.169.0");
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, "gpt-5.5");
    let launch = || Launch::new(&bin, &sandbox).arg("--backend").arg(backend);
    let first = launch().start().await;
    let job_id = job(&first, &sandbox, "SAY: remembered").await;
    first.settle(&job_id).await;
    first.stop().await;

    let second = launch().start().await;
    second
        .ok(
            "job_reply",
            json!({"job_id": job_id, "prompt": "SAY: after the restart"}),
        )
        .await;
    let settled = second.settle(&job_id).await;
    assert_eq!(settled["status"], "completed");
    assert_eq!(settled["result"], "after the restart");
    let last = model.requests().pop().unwrap();
    assert!(
        last["input"].to_string().contains("SAY: remembered"),
        "Codex saw the first turn"
    );
}

#[tokio::test]
async fn after_a_restart_a_reply_resumes_the_app_server_thread_with_its_history() {
    after_a_restart_a_reply_resumes_the_thread("app-server").await;
}

#[tokio::test]
async fn after_a_restart_a_reply_resumes_the_exec_thread_with_its_history() {
    after_a_restart_a_reply_resumes_the_thread("exec").await;
}
