//! The overhead benchmark: the built server, run as a user runs it (a child process spoken to
//! over stdio), against the scriptable fake Codex, so what is measured is this server's cost and
//! not Codex's. `cargo bench` runs it at full size (`benches/overhead.rs`); a smoke run with tiny
//! sizes is part of `cargo test` (`tests/bench_smoke.rs`), so it cannot rot. Nothing here asserts
//! a timing: figures are reported, with their spread, as a table and as JSON.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

/// How much of each thing to measure.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Fresh servers started (start-up and idle memory), and jobs run to their end.
    pub runs: usize,
    /// `job_start` calls timed one after another.
    pub starts: usize,
    /// Deltas of the flood turn.
    pub flood: usize,
}

impl Sizes {
    pub fn full() -> Self {
        Self {
            runs: 10,
            starts: 200,
            flood: 20_000,
        }
    }

    pub fn smoke() -> Self {
        Self {
            runs: 2,
            starts: 3,
            flood: 50,
        }
    }
}

/// One measured figure: its samples, summarised by median and spread.
#[derive(Clone, Debug)]
pub struct Figure {
    pub name: &'static str,
    pub unit: &'static str,
    pub samples: Vec<f64>,
}

impl Figure {
    fn new(name: &'static str, unit: &'static str, samples: Vec<f64>) -> Self {
        Self {
            name,
            unit,
            samples,
        }
    }

    /// The value at `q` (0 to 1) of the sorted samples.
    pub fn quantile(&self, q: f64) -> f64 {
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return f64::NAN;
        }
        let at = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[at.min(sorted.len() - 1)]
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "unit": self.unit,
            "n": self.samples.len(),
            "median": self.quantile(0.5),
            "min": self.quantile(0.0),
            "p90": self.quantile(0.9),
            "p99": self.quantile(0.99),
            "max": self.quantile(1.0),
        })
    }
}

/// The figures as a Markdown table.
pub fn table(figures: &[Figure]) -> String {
    let mut out = String::from(
        "| figure | median | min | p90 | p99 | max | n |\n|---|---|---|---|---|---|---|\n",
    );
    for f in figures {
        let cell = |v: f64| format!("{v:.2} {}", f.unit);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            f.name,
            cell(f.quantile(0.5)),
            cell(f.quantile(0.0)),
            cell(f.quantile(0.9)),
            cell(f.quantile(0.99)),
            cell(f.quantile(1.0)),
            f.samples.len()
        ));
    }
    out
}

/// The fake Codex the benchmark runs against.
fn fake_codex() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fake_codex.py")
}

/// A server under measurement, with a minimal JSON-RPC client of our own over its stdio (so the
/// client's cost is small and known).
struct Served {
    child: Child,
    stdin: ChildStdin,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
    next_id: u64,
    _state: tempfile::TempDir,
}

impl Served {
    /// Starts the server and returns it once it has answered `initialize`, with how long that
    /// took from the spawn.
    async fn start(server: &Path, extra: &[&str]) -> (Self, Duration) {
        let state = tempfile::tempdir().expect("a state directory");
        let spawned = Instant::now();
        let mut child = Command::new(server)
            .arg("--codex-bin")
            .arg(fake_codex())
            .arg("--state-dir")
            .arg(state.path())
            .args(extra)
            .env("HOME", state.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the server");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>> = Arc::default();
        let routes = waiting.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(message) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let Some(id) = message.get("id").and_then(Value::as_u64) else {
                    continue;
                };
                if let Some(reply) = routes.lock().expect("routes").remove(&id) {
                    let _ = reply.send(message);
                }
            }
        });
        let mut served = Self {
            child,
            stdin,
            waiting,
            next_id: 0,
            _state: state,
        };
        let params = json!({"protocolVersion": "2025-06-18", "capabilities": {},
                            "clientInfo": {"name": "bench", "version": "0"}});
        served.request("initialize", params).await;
        let ready = spawned.elapsed();
        served.notify("notifications/initialized", json!({})).await;
        (served, ready)
    }

    async fn send(&mut self, message: Value) {
        let line = format!("{message}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to the server");
    }

    async fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await;
    }

    async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let (reply, answer) = oneshot::channel();
        self.waiting.lock().expect("routes").insert(id, reply);
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        tokio::time::timeout(Duration::from_secs(120), answer)
            .await
            .expect("the server answers within 2 minutes")
            .expect("the server answers")
    }

    /// A tool's structured answer.
    async fn call(&mut self, tool: &str, args: Value) -> Value {
        let answer = self
            .request("tools/call", json!({"name": tool, "arguments": args}))
            .await;
        let result = &answer["result"];
        assert_ne!(result["isError"], true, "{tool}: {answer}");
        result["structuredContent"].clone()
    }

    /// The server's resident memory, in MiB.
    fn rss_mib(&self) -> f64 {
        let pid = self.child.id().expect("the server runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Measures every figure at `sizes` and returns them in table order.
pub async fn run(server: &Path, sizes: Sizes) -> Vec<Figure> {
    let cwd = std::env::temp_dir();
    let cwd = cwd.to_string_lossy();

    // Start-up and idle memory, on fresh servers.
    let (mut startup, mut idle) = (Vec::new(), Vec::new());
    for _ in 0..sizes.runs {
        let (served, ready) = Served::start(server, &[]).await;
        startup.push(ms(ready));
        tokio::time::sleep(Duration::from_millis(300)).await;
        idle.push(served.rss_mib());
    }

    let (mut served, _) = Served::start(server, &["--max-concurrent-jobs", "64"]).await;
    // job_start, one after another.
    let mut starts = Vec::new();
    for i in 0..sizes.starts {
        let asked = Instant::now();
        served
            .call(
                "job_start",
                json!({"prompt": format!("hi {i}"), "cwd": cwd}),
            )
            .await;
        starts.push(ms(asked.elapsed()));
    }
    // Start to the client seeing completion.
    let mut completions = Vec::new();
    for i in 0..sizes.runs {
        let asked = Instant::now();
        let job = served
            .call(
                "job_start",
                json!({"prompt": format!("done {i}"), "cwd": cwd}),
            )
            .await;
        let job_id = job["job_id"].clone();
        loop {
            let waited = served
                .call("job_wait", json!({"job_id": job_id, "timeout_seconds": 60}))
                .await;
            if waited["notifications"][0]["status"] == "completed" {
                break;
            }
        }
        completions.push(ms(asked.elapsed()));
    }
    // A flood of deltas, durable and read back through job_events.
    let before = served.rss_mib();
    let asked = Instant::now();
    let job = served
        .call(
            "job_start",
            json!({"prompt": format!("FLOOD: {}", sizes.flood), "cwd": cwd}),
        )
        .await;
    let job_id = job["job_id"].clone();
    let (mut cursor, mut deltas, mut peak) = (0u64, 0usize, before);
    while deltas < sizes.flood {
        let page = served
            .call(
                "job_events",
                json!({"job_id": job_id, "cursor": cursor, "limit": 1000, "include_deltas": true,
                       "event_types": ["agent_message_delta"], "max_bytes": 262_144}),
            )
            .await;
        deltas += page["events"].as_array().map_or(0, Vec::len);
        cursor = page["cursor"].as_u64().unwrap_or(cursor);
        peak = peak.max(served.rss_mib());
    }
    let flood_secs = asked.elapsed().as_secs_f64();

    vec![
        Figure::new("spawn → initialize answered", "ms", startup),
        Figure::new("idle RSS", "MiB", idle),
        Figure::new("job_start round trip", "ms", starts),
        Figure::new("job_start → completion seen (job_wait)", "ms", completions),
        Figure::new(
            "flood relayed and read (job_events)",
            "events/s",
            vec![sizes.flood as f64 / flood_secs],
        ),
        Figure::new("RSS growth during the flood", "MiB", vec![peak - before]),
    ]
}
