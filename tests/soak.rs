//! A bounded, seeded chaos soak on every backend: played by the fake Codex (with the faults the
//! real one shows: confirmations that come late, processes that ignore SIGTERM, crashes), and on
//! the real Codex (app-server 0.169, mcp-server 0.153) against the mock model. Workers
//! start jobs, reply, cancel and read at once; each round ends with a fault (SIGKILL, SIGTERM or
//! SIGINT of the server, its stdin closed, or Codex killed under running turns). After every
//! restart the durable record must hold what the engine promises:
//!
//! - every job is settled, its events are numbered 1..n without a gap, its turns follow each
//!   other, and each turn ends exactly once, with its terminal event last;
//! - a completed turn's result answers that turn's own prompt (nothing shifts by a turn);
//! - the feed has exactly one entry per ended turn;
//! - no Codex process outlives the server, and every call was answered.
//!
//! `SOAK_SECONDS` (default 8 per backend) and `SOAK_SEED` (default: the time) set how long and
//! which run; a failure names the seed (replaying it replays the choices, not the timing).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failed test

mod support;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use support::codex_install::codex;
use support::fake_codex;
use support::mock_model::MockModel;
use support::server::{Launch, Sandbox, Server, is_turn_end, within};

/// A small deterministic generator (xorshift64*), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Which Codex plays a backend.
#[derive(Clone, Copy)]
enum Codex {
    /// The fake, saying it is this version.
    Fake(&'static str),
    /// The real binary of this version, with a mock model that knows this slug.
    Real(&'static str, &'static str),
}

/// A backend, who plays it, and how its turns answer.
struct Flavor {
    backend: &'static str,
    codex: Codex,
    /// A prompt whose turn does not end by itself (and whose cancel the fake confirms late).
    stuck: &'static str,
    /// The prompt for a turn that answers `tag`...
    say: &'static str,
    /// ...and what that turn's result is, before the tag.
    answer_prefix: &'static str,
}

const FAKE_MCP_SERVER: Flavor = Flavor {
    backend: "mcp-server",
    codex: Codex::Fake("0.153.4"),
    stuck: "LATE_ABORT",
    say: "",
    answer_prefix: "fake: ",
};
const FAKE_APP_SERVER: Flavor = Flavor {
    backend: "app-server",
    codex: Codex::Fake("0.170.0"),
    stuck: "LATE_INTERRUPT",
    say: "",
    answer_prefix: "fake app: ",
};
const FAKE_EXEC: Flavor = Flavor {
    backend: "exec",
    codex: Codex::Fake("0.170.0"),
    stuck: "IGNORE_TERM",
    say: "",
    answer_prefix: "fake exec: ",
};
const REAL_APP_SERVER: Flavor = Flavor {
    backend: "app-server",
    codex: Codex::Real("0.169.0", "gpt-5.5"),
    stuck: "SLEEP: 30",
    say: "SAY: ",
    answer_prefix: "",
};
const REAL_MCP_SERVER: Flavor = Flavor {
    backend: "mcp-server",
    codex: Codex::Real("0.153.4", "gpt-5.2"),
    // A model that has not answered when the cancel comes: 0.153 then tags later turns with ids
    // of earlier calls.
    stuck: "WAIT: 30",
    say: "SAY: ",
    answer_prefix: "",
};

/// The prompt of each turn a client saw accepted: (job, turn) → prompt.
type Prompts = Mutex<HashMap<(String, u64), String>>;

fn launch<'a>(bin: &'a std::path::Path, sandbox: &'a Sandbox, flavor: &Flavor) -> Launch<'a> {
    let version = match flavor.codex {
        Codex::Fake(version) | Codex::Real(version, _) => version,
    };
    Launch::new(bin, sandbox)
        .env("FAKE_CODEX_VERSION", version)
        .env("FAKE_CODEX_APP_SERVER", "1")
        .arg("--backend")
        .arg(flavor.backend)
        .arg("--cancel-grace-ms")
        .arg("200")
        .arg("--max-concurrent-jobs")
        .arg("2")
}

fn settled(status: &Value) -> bool {
    ["completed", "failed", "cancelled", "interrupted"].contains(&status.as_str().unwrap_or(""))
}

/// One worker's share of a round: `ops` random calls.
async fn work(
    server: &Server,
    sandbox: &Sandbox,
    flavor: &Flavor,
    prompts: &Prompts,
    mut rng: Rng,
    ops: usize,
    name: usize,
) {
    let mut counter = 0;
    for _ in 0..ops {
        let jobs: Vec<String> = prompts
            .lock()
            .unwrap()
            .keys()
            .map(|(job, _)| job.clone())
            .collect();
        let pick = |rng: &mut Rng| (!jobs.is_empty()).then(|| jobs[rng.below(jobs.len())].clone());
        counter += 1;

        let prompt = if rng.below(4) == 0 {
            flavor.stuck.to_owned()
        } else {
            format!(
                "{}say w{name}-{counter}-{}",
                flavor.say,
                rng.next() % 10_000
            )
        };
        match rng.below(10) {
            0..=3 => {
                let answer = server
                    .call(
                        "job_start",
                        json!({"prompt": prompt, "cwd": sandbox.work()}),
                    )
                    .await;
                if let Some(started) = answer.structured_content {
                    let key = (started["job_id"].as_str().unwrap().to_owned(), 1);
                    prompts.lock().unwrap().insert(key, prompt);
                }
            }
            4..=5 => {
                let Some(job) = pick(&mut rng) else { continue };
                let answer = server
                    .call("job_reply", json!({"job_id": job, "prompt": prompt}))
                    .await;
                if let Some(replied) = answer.structured_content {
                    let turn = replied["turn"].as_u64().unwrap();
                    prompts.lock().unwrap().insert((job, turn), prompt);
                }
            }
            6..=7 => {
                let Some(job) = pick(&mut rng) else { continue };
                server.call("job_cancel", json!({"job_id": job})).await;
            }
            8 => {
                let Some(job) = pick(&mut rng) else { continue };
                server
                    .call(
                        "job_events",
                        json!({"job_id": job, "limit": 5, "cursor": 0}),
                    )
                    .await;
                server.call("job_notifications", json!({"limit": 5})).await;
            }
            _ => {
                let Some(job) = pick(&mut rng) else { continue };
                server
                    .call("job_wait", json!({"job_id": job, "timeout_seconds": 0.2}))
                    .await;
            }
        }
    }
}

/// Reads every job back from a server just started on the soak's state and checks the record.
async fn check(server: &Server, flavor: &Flavor, prompts: &Prompts, seed: u64) {
    let listed = server.ok("job_list", json!({"limit": 1000})).await;
    // The whole feed, page by page (each page fits the answer budget).
    let mut feed: Vec<Value> = Vec::new();
    let mut cursor = 0;
    loop {
        let page = server
            .ok(
                "job_notifications",
                json!({"cursor": cursor, "limit": 1000}),
            )
            .await;
        let entries = page["notifications"].as_array().unwrap();
        let next = page["cursor"].as_u64().unwrap();
        feed.extend(entries.iter().cloned());
        if entries.is_empty() || next == cursor {
            break;
        }
        cursor = next;
    }
    let feed_seqs: Vec<u64> = feed.iter().map(|n| n["seq"].as_u64().unwrap()).collect();
    assert!(
        feed_seqs.windows(2).all(|w| w[0] < w[1]),
        "seed {seed}: feed order {feed_seqs:?}"
    );
    for job in listed["jobs"].as_array().unwrap() {
        let id = job["job_id"].as_str().unwrap();
        let turns = job["turns"].as_u64().unwrap();
        assert!(
            settled(&job["status"]),
            "seed {seed}: {id} is {} after a restart",
            job["status"]
        );
        let events = server.all_events(id, 1000).await;
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=events.len() as u64).collect::<Vec<_>>(),
            "seed {seed}: {id} gaps"
        );
        let turn_of: Vec<u64> = events.iter().map(|e| e["turn"].as_u64().unwrap()).collect();
        assert!(
            turn_of.windows(2).all(|w| w[0] <= w[1]),
            "seed {seed}: {id} turns interleave"
        );
        for turn in 1..=turns {
            let of_turn: Vec<&Value> = events.iter().filter(|e| e["turn"] == turn).collect();
            let ends: Vec<&&Value> = of_turn
                .iter()
                .filter(|e| is_turn_end(e["type"].as_str().unwrap()))
                .collect();
            assert_eq!(
                ends.len(),
                1,
                "seed {seed}: {id} turn {turn} ended {} times: {of_turn:?}",
                ends.len()
            );
            assert!(
                is_turn_end(of_turn.last().unwrap()["type"].as_str().unwrap()),
                "seed {seed}: {id} turn {turn} has events after its end: {of_turn:?}"
            );
            let prompt = prompts.lock().unwrap().get(&(id.to_owned(), turn)).cloned();
            if ends[0]["type"] == "turn_completed"
                && let Some(prompt) = prompt
            {
                let tag = prompt.strip_prefix(flavor.say).unwrap_or(&prompt);
                let expected = format!("{}{tag}", flavor.answer_prefix);
                let read = server
                    .ok("job_result", json!({"job_id": id, "turn": turn}))
                    .await;
                assert_eq!(
                    read["text"], expected,
                    "seed {seed}: {id} turn {turn} answered another prompt"
                );
                assert_eq!(read["status"], "completed");
            }
        }
        let notes: Vec<&Value> = feed.iter().filter(|n| n["job_id"] == id).collect();
        assert_eq!(
            notes.len() as u64,
            turns,
            "seed {seed}: {id}: one feed entry per ended turn"
        );
    }
}

async fn soak(flavor: &Flavor) {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("soak {}: seed {seed}, {seconds} s", flavor.backend);
    let mut rng = Rng::new(seed);
    let sandbox = Sandbox::new();
    let _model = match flavor.codex {
        Codex::Real(_, slug) => {
            let model = MockModel::start().await;
            sandbox.use_model(&model, slug);
            Some(model)
        }
        Codex::Fake(_) => None,
    };
    let bin = match flavor.codex {
        Codex::Fake(_) => fake_codex(),
        Codex::Real(version, _) => codex(version),
    };
    let prompts = Prompts::default();
    let began = tokio::time::Instant::now();
    let deadline = began + Duration::from_secs(seconds);
    let mut round = 0;
    while tokio::time::Instant::now() < deadline {
        round += 1;
        let mut server = launch(&bin, &sandbox, flavor).start().await;
        check(&server, flavor, &prompts, seed).await;
        let workers = (0..3).map(|w| {
            let rng = Rng::new(rng.next());
            work(&server, &sandbox, flavor, &prompts, rng, 6, w)
        });
        futures::future::join_all(workers).await;
        let fault = rng.below(5);
        eprintln!(
            "soak {}: round {round} ends with fault {fault} at {:?}",
            flavor.backend,
            began.elapsed()
        );
        match fault {
            0 => server.signal(libc::SIGKILL),
            1 => server.signal(libc::SIGTERM),
            2 => server.signal(libc::SIGINT),
            3 => {
                // Codex dies under the running turns; the server carries on, then stops.
                for pid in sandbox.codex_processes() {
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
                let more = Rng::new(rng.next());
                work(&server, &sandbox, flavor, &prompts, more, 4, 9).await;
                server.signal(libc::SIGTERM);
            }
            _ => {
                server.stop().await;
                sandbox.until_no_codex().await;
                continue;
            }
        }
        within("server exit", server.child.wait()).await.unwrap();
        sandbox.until_no_codex().await;
    }
    let server = launch(&bin, &sandbox, flavor).start().await;
    check(&server, flavor, &prompts, seed).await;
    assert!(!prompts.lock().unwrap().is_empty(), "the soak ran no job");
    server.stop().await;
    sandbox.until_no_codex().await;
}

#[tokio::test]
async fn soak_fake_mcp_server() {
    soak(&FAKE_MCP_SERVER).await;
}

#[tokio::test]
async fn soak_fake_app_server() {
    soak(&FAKE_APP_SERVER).await;
}

#[tokio::test]
async fn soak_fake_exec() {
    soak(&FAKE_EXEC).await;
}

#[tokio::test]
async fn soak_real_app_server() {
    soak(&REAL_APP_SERVER).await;
}

#[tokio::test]
async fn soak_real_mcp_server() {
    soak(&REAL_MCP_SERVER).await;
}
