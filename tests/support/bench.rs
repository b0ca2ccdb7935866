//! The overhead benchmark: the built server, run as a user runs it (a child process spoken to
//! over stdio), against the scriptable fake Codex, so what is measured is this server's cost and
//! not Codex's. `cargo bench` runs it at full size (`benches/overhead.rs`); a smoke run with tiny
//! sizes is part of `cargo test` (`tests/bench_smoke.rs`), so it cannot rot. Nothing here asserts
//! a timing: figures are reported, with their spread, as a table and as JSON.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
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
    /// Deltas of the flood job.
    pub big_flood: usize,
    /// Deltas of the real Codex's turn (`run_real_codex`).
    pub real_deltas: usize,
    /// Those turns through the server, each followed by one on bare Codex (and the same pair
    /// with a second bare Codex in the server's place). More than `runs`:
    /// a turn's time swings by a tenth from one to the next, and the figure asks for 5 %.
    pub real_runs: usize,
    /// Jobs run one after another on the real Codex, for its memory.
    pub real_jobs: usize,
    /// Turns ended while `job_wait` waits, on each fake. More than `runs`: each is under a
    /// millisecond, and a median of ten moved by a fifth with the VM's hiccups. Two hundred, so
    /// that the p99 is not merely the largest.
    pub wake_ups: usize,
    /// Streamable HTTP clients reading `job_events` at once during a flood.
    pub http_clients: usize,
    /// Jobs running at once (`--max-concurrent-jobs` as many).
    pub concurrent_jobs: usize,
}

impl Sizes {
    pub fn full() -> Self {
        Self {
            runs: 10,
            starts: 200,
            flood: 20_000,
            big_flood: 1_000_000,
            real_deltas: 20_000,
            real_runs: 20,
            real_jobs: 1_000,
            wake_ups: 200,
            http_clients: 32,
            concurrent_jobs: 1_000,
        }
    }

    pub fn smoke() -> Self {
        Self {
            runs: 2,
            starts: 3,
            flood: 50,
            big_flood: 200,
            real_deltas: 50,
            real_runs: 2,
            real_jobs: 3,
            wake_ups: 2,
            http_clients: 2,
            concurrent_jobs: 5,
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

/// Where the benchmark's jobs run: the temporary directory.
fn work_dir() -> String {
    std::env::temp_dir().to_string_lossy().into_owned()
}

/// The fake Codex the benchmark runs against.
fn fake_codex() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fake_codex.py")
}

/// The server on `codex`, its state in `state`, `HOME` at `home` (where Codex finds its config),
/// logging at `log`, with `extra` arguments.
fn server_command(
    server: &Path,
    codex: &Path,
    (state, home): (&Path, &Path),
    extra: &[&str],
    log: &str,
) -> Command {
    let mut command = Command::new(server);
    command
        .arg("--codex-bin")
        .arg(codex)
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("MOCK_KEY", "mock")
        .env("RUST_LOG", log)
        .kill_on_drop(true);
    command
}

/// What makes the fake Codex play `codex app-server` 0.169.
const APP_SERVER_FAKE: &[(&str, &str)] = &[
    ("FAKE_CODEX_APP_SERVER", "1"),
    ("FAKE_CODEX_VERSION", "0.169.0"),
];

/// A message from the server, and when its line reached the client (before the client's own
/// parsing and hand-over to the task that asked, which are not the server's cost).
struct Answer {
    message: Value,
    arrived: SystemTime,
}

/// A server under measurement, with a minimal JSON-RPC client of our own over its stdio (so the
/// client's cost is small and known).
struct Served {
    child: Child,
    stdin: ChildStdin,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>>,
    next_id: u64,
    _state: tempfile::TempDir,
}

impl Served {
    /// Starts the server and returns it once it has answered `initialize`, with how long that
    /// took from the spawn.
    async fn start(server: &Path, extra: &[&str]) -> (Self, Duration) {
        let state = tempfile::tempdir().expect("a state directory");
        Self::start_on(server, &fake_codex(), state, None, (extra, &[])).await
    }

    /// The server on the fake Codex playing `codex app-server` 0.169, the backend of the Codex
    /// users run today (the fake plays `mcp-server` 0.153 otherwise).
    async fn start_on_app_server(server: &Path) -> Self {
        let state = tempfile::tempdir().expect("a state directory");
        let (mut served, _) =
            Self::start_on(server, &fake_codex(), state, None, (&[], APP_SERVER_FAKE)).await;
        let job_id = served.start_job("warm up").await;
        served.until_completed(&job_id).await;
        served
    }

    /// The server on `codex`, with `HOME` at `home` (else the state directory), these extra
    /// arguments and environment (which the server passes on to Codex).
    async fn start_on(
        server: &Path,
        codex: &Path,
        state: tempfile::TempDir,
        home: Option<&Path>,
        (extra, env): (&[&str], &[(&str, &str)]),
    ) -> (Self, Duration) {
        let spawned = Instant::now();
        let home = home.unwrap_or(state.path());
        let mut child = server_command(server, codex, (state.path(), home), extra, "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the server");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>> = Arc::default();
        let routes = waiting.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let arrived = SystemTime::now();
                let Ok(message) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let Some(id) = message.get("id").and_then(Value::as_u64) else {
                    continue;
                };
                if let Some(reply) = routes.lock().expect("routes").remove(&id) {
                    let _ = reply.send(Answer { message, arrived });
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

    /// A new server that has run one job to its end, so what a measurement then costs is not
    /// the first job's.
    async fn warm(server: &Path) -> Self {
        let (mut served, _) = Self::start(server, &[]).await;
        let job_id = served.start_job("warm up").await;
        served.until_completed(&job_id).await;
        served
    }

    /// Starts a job of `prompt` in the temporary directory; returns its id.
    async fn start_job(&mut self, prompt: &str) -> Value {
        let job = self
            .call("job_start", json!({"prompt": prompt, "cwd": work_dir()}))
            .await;
        job["job_id"].clone()
    }

    /// Waits with `job_wait` until the job's turn has completed.
    async fn until_completed(&mut self, job_id: &Value) {
        loop {
            let waited = self
                .call("job_wait", json!({"job_id": job_id, "timeout_seconds": 60}))
                .await;
            if waited["notifications"][0]["status"] == "completed" {
                return;
            }
        }
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
        self.answer(method, params).await.message
    }

    async fn answer(&mut self, method: &str, params: Value) -> Answer {
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
        self.call_arrived(tool, args).await.0
    }

    /// A tool's structured answer, and when it reached the client.
    async fn call_arrived(&mut self, tool: &str, args: Value) -> (Value, SystemTime) {
        let Answer { message, arrived } = self
            .answer("tools/call", json!({"name": tool, "arguments": args}))
            .await;
        let result = &message["result"];
        assert_ne!(result["isError"], true, "{tool}: {message}");
        (result["structuredContent"].clone(), arrived)
    }

    /// The server's resident memory, in MiB.
    fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    /// The server's highest resident memory since [`Served::reset_peak`] (or its start), in MiB:
    /// the true peak, which sampling between calls could miss.
    fn peak_mib(&self) -> f64 {
        self.status_mib("VmHWM:")
    }

    /// Starts a new [`Served::peak_mib`] from the present resident memory.
    fn reset_peak(&self) {
        let pid = self.child.id().expect("the server runs");
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak RSS");
    }

    fn status_mib(&self, field: &str) -> f64 {
        let pid = self.child.id().expect("the server runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

/// What a flood of deltas cost: how fast they became durable, how fast a client read them back,
/// and how much the server grew at its peak.
struct Flood {
    durable_per_sec: f64,
    read_per_sec: f64,
    growth_mib: f64,
}

/// Jobs whose turn the fake Codex ends while `job_wait` waits for it; returns how long each
/// answer took to reach the client from the moment the fake wrote the turn's end (ms).
async fn wake_ups(served: &mut Served, runs: usize) -> Vec<f64> {
    let mut wakeups = Vec::new();
    for _ in 0..runs {
        let job_id = served.start_job("TIME_AFTER: 0.05").await;
        let (waited, arrived) = served
            .call_arrived("job_wait", json!({"job_id": job_id, "timeout_seconds": 60}))
            .await;
        let now = unix_seconds(arrived);
        let ended = waited["notifications"][0]["result"]
            .as_str()
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        wakeups.push((now - ended) * 1000.0);
    }
    wakeups
}

/// One busy loop per CPU at the lowest priority, for as long as it lives: no CPU halts, yet any
/// other work takes the CPU from them at once.
///
/// The VM the figures come from (Firecracker, KVM) halts an idle vCPU and the host must schedule
/// it again before a thread woken on it runs: a wake-up crosses four threads (the fake's, the
/// server's reader, its SQLite writer, the client's), and each crossing may wait so. Measured in
/// turn, 50 wake-ups each: a median of 1.4 to 2.1 ms without these loops and 0.58 to 0.76 ms
/// with them. The same wake-up with and without them tells the server's own path from the
/// machine's cost of waking a CPU.
struct BusyCpus(Vec<std::process::Child>);

impl BusyCpus {
    fn start() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let loops = (0..cpus)
            .map(|_| {
                std::process::Command::new("nice")
                    .args(["-n", "19", "sh", "-c", "while :; do :; done"])
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("a busy loop (nice and sh)")
            })
            .collect();
        Self(loops)
    }
}

impl Drop for BusyCpus {
    fn drop(&mut self) {
        for busy in &mut self.0 {
            let _ = busy.kill();
            let _ = busy.wait();
        }
    }
}

/// The floor of [`wake_ups`] on this machine: the same line, written as the fake writes a
/// turn's end after the same quiet, relayed by `cat` instead of the server. It crosses as many
/// processes (the writer's, the relay's, the client's) and does no work of its own, so what it
/// takes is the machine's cost of waking them, which no server can go below.
async fn relayed_by_cat(runs: usize) -> Vec<f64> {
    // Python, as the fake is: it stamps the time as it writes, and so does this.
    let stamper = format!(
        r"import sys, time
for _ in range({runs}):
    time.sleep(0.05)
    sys.stdout.write(repr(time.time()) + '\n')
    sys.stdout.flush()"
    );
    let mut writer = std::process::Command::new("python3")
        .args(["-c", &stamper])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3, to write the stamped lines");
    let lines = writer.stdout.take().expect("the writer's stdout");
    let mut relay = Command::new("cat")
        .stdin(Stdio::from(lines))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cat, to relay them");
    let mut relayed = BufReader::new(relay.stdout.take().expect("cat's stdout")).lines();
    let mut took = Vec::new();
    while let Ok(Some(line)) = relayed.next_line().await {
        let arrived = unix_seconds(SystemTime::now());
        if let Ok(written) = line.trim().parse::<f64>() {
            took.push((arrived - written) * 1000.0);
        }
    }
    let _ = writer.wait();
    took
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(f64::NAN, |d| d.as_secs_f64())
}

/// [`wake_ups`], then as many with [`BusyCpus`].
async fn wake_ups_idle_and_busy(served: &mut Served, runs: usize) -> (Vec<f64>, Vec<f64>) {
    let idle = wake_ups(served, runs).await;
    let _busy = BusyCpus::start();
    (idle, wake_ups(served, runs).await)
}

/// A turn of `deltas` deltas written as fast as the fake Codex can. Durable: from `job_start`
/// until `job_wait` sees the turn completed (its events are committed before its end is).
/// Then every delta is read back with `job_events`, 1,000 events to a page, and its text counted
/// (the server joins the pieces that come together).
async fn flood(served: &mut Served, deltas: usize) -> Flood {
    let before = served.rss_mib();
    served.reset_peak();
    let asked = Instant::now();
    let job_id = served.start_job(&format!("FLOOD: {deltas}")).await;
    served.until_completed(&job_id).await;
    let durable = asked.elapsed().as_secs_f64();
    let reading = Instant::now();
    let (mut cursor, mut read) = (0u64, 0usize);
    loop {
        let page = served
            .call(
                "job_events",
                json!({"job_id": job_id, "cursor": cursor, "limit": 1000, "include_deltas": true,
                       "event_types": ["agent_message_delta"], "max_bytes": 262_144}),
            )
            .await;
        read += page["events"].as_array().map_or(0, |events| {
            events
                .iter()
                .filter_map(|e| e["data"]["delta"].as_str())
                .map(str::len)
                .sum()
        });
        cursor = page["cursor"].as_u64().unwrap_or(cursor);
        if page["has_more"] != true {
            break;
        }
    }
    // The fake's pieces are "0", "1", …
    let sent: usize = (0..deltas).map(|i| i.to_string().len()).sum();
    assert_eq!(read, sent, "every delta of the flood is read back");
    Flood {
        durable_per_sec: deltas as f64 / durable,
        read_per_sec: deltas as f64 / reading.elapsed().as_secs_f64(),
        growth_mib: served.peak_mib() - before,
    }
}

/// A server on streamable HTTP.
struct HttpServed {
    _child: Child,
    port: u16,
    _state: tempfile::TempDir,
}

impl HttpServed {
    async fn start(server: &Path, extra: &[&str]) -> Self {
        let state = tempfile::tempdir().expect("a state directory");
        let log = "warn,codex_async_mcp::server::http=info";
        let mut child = server_command(
            server,
            &fake_codex(),
            (state.path(), state.path()),
            extra,
            log,
        )
        .args(["--transport", "streamable-http", "--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the server");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut port = None;
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("serving MCP over HTTP address=").nth(1) {
                let address = rest.split_whitespace().next().unwrap_or_default();
                port = address.rsplit(':').next().and_then(|p| p.parse().ok());
                break;
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            _child: child,
            port: port.expect("the server listens"),
            _state: state,
        }
    }

    /// A connection of its own, kept alive as a client's is.
    async fn connect(&self, era: Era) -> HttpSession {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to the server");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (read, write) = stream.into_split();
        HttpSession {
            reader: BufReader::new(read),
            writer: write,
            port: self.port,
            id: None,
            era,
        }
    }

    /// A client of `era`: on a session of its own it has initialized, or sessionless.
    async fn session(&self, era: Era) -> HttpSession {
        let mut session = self.connect(era).await;
        if era == Era::Discover {
            return session;
        }
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "bench", "version": "0"}}});
        session.post(&init).await;
        assert!(session.id.is_some(), "the server names a session");
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        session.post(&initialized).await;
        session
    }
}

/// The two handshakes of MCP clients.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Era {
    /// `initialize` (2025-06-18, as Codex): a session, named by `Mcp-Session-Id`.
    Initialize,
    /// `server/discover` (2026-07-28, as Claude Code): no session; every request carries its
    /// protocol version, in its headers and `_meta`.
    Discover,
}

/// One streamable-HTTP client over one HTTP/1.1 connection, spoken to with raw requests (so the
/// client's cost is small and known).
struct HttpSession {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    port: u16,
    id: Option<String>,
    era: Era,
}

impl HttpSession {
    /// POSTs one JSON-RPC message; returns the JSON-RPC answer (`Null` for a notification).
    async fn post(&mut self, message: &Value) -> Value {
        let body = message.to_string();
        let mut head = format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        if let Some(id) = &self.id {
            head.push_str(&format!("Mcp-Session-Id: {id}\r\n"));
        }
        if self.era == Era::Discover {
            head.push_str(&format!(
                "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: {}\r\n",
                message["method"].as_str().unwrap_or_default()
            ));
            if let Some(name) = message["params"]["name"].as_str() {
                head.push_str(&format!("Mcp-Name: {name}\r\n"));
            }
        }
        head.push_str("\r\n");
        self.writer
            .write_all(format!("{head}{body}").as_bytes())
            .await
            .expect("send the request");
        let body = tokio::time::timeout(Duration::from_secs(120), self.response_body())
            .await
            .expect("the server answers within 2 minutes");
        String::from_utf8_lossy(&body)
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
            .find(|m| m.get("id").is_some())
            .unwrap_or(Value::Null)
    }

    /// Reads one response: its head (noting the session id), then its body, whole, by its
    /// length or its chunks.
    async fn response_body(&mut self) -> Vec<u8> {
        let (mut length, mut chunked) = (0, false);
        loop {
            let mut line = String::new();
            self.reader
                .read_line(&mut line)
                .await
                .expect("read a header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "mcp-session-id" => self.id = Some(value.to_owned()),
                "content-length" => length = value.parse().expect("a length"),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if !chunked {
            body.resize(length, 0);
            self.reader
                .read_exact(&mut body)
                .await
                .expect("read the body");
            return body;
        }
        loop {
            let mut size = String::new();
            self.reader
                .read_line(&mut size)
                .await
                .expect("read a chunk size");
            let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
            let mut chunk = vec![0; size + 2];
            self.reader
                .read_exact(&mut chunk)
                .await
                .expect("read a chunk");
            if size == 0 {
                return body;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }

    /// A tool's structured answer.
    async fn call(&mut self, tool: &str, args: Value) -> Value {
        let mut request = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                 "params": {"name": tool, "arguments": args}});
        if self.era == Era::Discover {
            request["params"]["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
                "io.modelcontextprotocol/clientCapabilities": {}});
        }
        let answer = self.post(&request).await;
        let result = &answer["result"];
        assert!(result.is_object(), "{tool}: no answer read: {answer}");
        assert_ne!(result["isError"], true, "{tool}: {answer}");
        result["structuredContent"].clone()
    }
}

/// `clients` streamable-HTTP clients of `era`, each on its own kept-alive connection, call
/// `job_events` as fast as they can while a flood of `flood` deltas is written; returns the calls
/// per second and each call's latency (ms).
async fn http_reads_during_a_flood(
    server: &Path,
    era: Era,
    clients: usize,
    flood: usize,
) -> (f64, Vec<f64>) {
    let served = HttpServed::start(server, &[]).await;
    let mut main = served.session(Era::Initialize).await;
    let mut sessions = Vec::new();
    for _ in 0..clients {
        sessions.push(served.session(era).await);
    }
    let job = main
        .call(
            "job_start",
            json!({"prompt": format!("FLOOD: {flood}"), "cwd": work_dir()}),
        )
        .await;
    let job_id = job["job_id"].clone();
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let began = Instant::now();
    let mut readers = Vec::new();
    for mut session in sessions {
        let (flooding, job_id) = (flooding.clone(), job_id.clone());
        readers.push(tokio::spawn(async move {
            let (mut latencies, mut cursor) = (Vec::new(), 0);
            // Each follows the job as a client would, from its cursor on; at least one call
            // each, so a tiny flood still measures something.
            while latencies.is_empty() || flooding.load(std::sync::atomic::Ordering::Relaxed) {
                let asked = Instant::now();
                let page = session
                    .call(
                        "job_events",
                        json!({"job_id": job_id, "cursor": cursor, "limit": 20}),
                    )
                    .await;
                latencies.push(ms(asked.elapsed()));
                cursor = page["cursor"].as_u64().unwrap_or(cursor);
            }
            latencies
        }));
    }
    loop {
        let waited = main
            .call("job_wait", json!({"job_id": job_id, "timeout_seconds": 60}))
            .await;
        if waited["notifications"][0]["status"] == "completed" {
            break;
        }
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut latencies = Vec::new();
    for reader in readers {
        latencies.extend(reader.await.expect("a reader"));
    }
    let calls_per_sec = latencies.len() as f64 / began.elapsed().as_secs_f64();
    (calls_per_sec, latencies)
}

/// `jobs` jobs started at once (`--max-concurrent-jobs` as many); returns how long until the
/// last completed (ms), how many completed, and the server's peak RSS (MiB).
async fn many_jobs_at_once(server: &Path, jobs: usize) -> (f64, usize, f64) {
    let slots = jobs.to_string();
    let (mut served, _) = Served::start(server, &["--max-concurrent-jobs", &slots]).await;
    let began = Instant::now();
    let mut peak = served.rss_mib();
    for i in 0..jobs {
        served.start_job(&format!("SLEEP: 1 {i}")).await;
        peak = peak.max(served.rss_mib());
    }
    let (mut completed, mut cursor) = (0, 0u64);
    while completed < jobs {
        let waited = served
            .call("job_wait", json!({"cursor": cursor, "timeout_seconds": 60}))
            .await;
        let news = waited["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if news.is_empty() {
            break;
        }
        completed += news.iter().filter(|n| n["status"] == "completed").count();
        cursor = waited["cursor"].as_u64().unwrap_or(cursor);
        peak = peak.max(served.rss_mib());
    }
    (ms(began.elapsed()), completed, peak)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Measures every figure at `sizes` and returns them in table order.
/// Every figure, in groups `BENCH_ONLY` can name one at a time (`cargo bench` with
/// `BENCH_ONLY=http`, say), to measure or profile one path in a short run.
pub const GROUPS: &[&str] = &["start", "turns", "floods", "http", "many"];

pub async fn run(server: &Path, sizes: Sizes) -> Vec<Figure> {
    let mut figures = Vec::new();
    for group in GROUPS {
        figures.extend(run_group(server, sizes, group).await);
    }
    figures
}

/// One group of figures (see [`GROUPS`]); none for a name that is not one.
pub async fn run_group(server: &Path, sizes: Sizes, group: &str) -> Vec<Figure> {
    match group {
        "start" => run_start(server, sizes).await,
        "turns" => run_turns(server, sizes).await,
        "floods" => run_floods(server, sizes).await,
        "http" => run_http(server, sizes).await,
        "many" => {
            let (ms, done, peak) = many_jobs_at_once(server, sizes.concurrent_jobs).await;
            vec![
                Figure::new("concurrent jobs: all completed", "ms", vec![ms]),
                Figure::new("concurrent jobs completed", "jobs", vec![done as f64]),
                Figure::new("concurrent jobs: peak RSS", "MiB", vec![peak]),
            ]
        }
        _ => Vec::new(),
    }
}

/// Start-up and idle memory, on fresh servers.
async fn run_start(server: &Path, sizes: Sizes) -> Vec<Figure> {
    let (mut startup, mut idle) = (Vec::new(), Vec::new());
    for _ in 0..sizes.runs {
        let (served, ready) = Served::start(server, &[]).await;
        startup.push(ms(ready));
        tokio::time::sleep(Duration::from_millis(300)).await;
        idle.push(served.rss_mib());
    }
    vec![
        Figure::new("spawn → initialize answered", "ms", startup),
        Figure::new("idle RSS", "MiB", idle),
    ]
}

/// `job_start`'s round trip, start to completion seen, and the wake-up on both fakes.
async fn run_turns(server: &Path, sizes: Sizes) -> Vec<Figure> {
    let (mut served, _) = Served::start(server, &["--max-concurrent-jobs", "64"]).await;
    // job_start, one after another.
    let mut starts = Vec::new();
    for i in 0..sizes.starts {
        let asked = Instant::now();
        served.start_job(&format!("hi {i}")).await;
        starts.push(ms(asked.elapsed()));
    }
    // Start to the client seeing completion.
    let mut completions = Vec::new();
    for i in 0..sizes.runs {
        let asked = Instant::now();
        let job_id = served.start_job(&format!("done {i}")).await;
        served.until_completed(&job_id).await;
        completions.push(ms(asked.elapsed()));
    }
    let (wakeups, busy_wakeups) = wake_ups_idle_and_busy(&mut served, sizes.wake_ups).await;
    drop(served);
    let (app_server_wakeups, app_server_busy_wakeups) = wake_ups_idle_and_busy(
        &mut Served::start_on_app_server(server).await,
        sizes.wake_ups,
    )
    .await;
    let floor = relayed_by_cat(sizes.wake_ups).await;
    vec![
        Figure::new("job_start round trip", "ms", starts),
        Figure::new("job_start → completion seen (job_wait)", "ms", completions),
        Figure::new(
            "Codex ends a turn → job_wait returns (fake mcp-server 0.153)",
            "ms",
            wakeups,
        ),
        Figure::new(
            "the same on the fake app-server 0.169",
            "ms",
            app_server_wakeups,
        ),
        Figure::new(
            "the same on the fake mcp-server, no CPU idle (a nice-19 busy loop on each)",
            "ms",
            busy_wakeups,
        ),
        Figure::new(
            "the same on the fake app-server, no CPU idle",
            "ms",
            app_server_busy_wakeups,
        ),
        Figure::new(
            "the floor: the same line relayed by cat, not the server (as it comes)",
            "ms",
            floor,
        ),
    ]
}

/// Floods of deltas: a turn's worth, each on a new server that has run one job; then a job's
/// worth.
async fn run_floods(server: &Path, sizes: Sizes) -> Vec<Figure> {
    let mut turn_floods = Vec::new();
    for _ in 0..sizes.runs {
        turn_floods.push(flood(&mut Served::warm(server).await, sizes.flood).await);
    }
    let job_flood = flood(&mut Served::warm(server).await, sizes.big_flood).await;
    let of_turns = |f: fn(&Flood) -> f64| turn_floods.iter().map(f).collect::<Vec<_>>();
    vec![
        Figure::new(
            "flood (a turn) durable",
            "events/s",
            of_turns(|f| f.durable_per_sec),
        ),
        Figure::new(
            "flood (a turn) read back, 1,000-event pages",
            "events/s",
            of_turns(|f| f.read_per_sec),
        ),
        Figure::new(
            "flood (a turn): peak RSS growth",
            "MiB",
            of_turns(|f| f.growth_mib),
        ),
        Figure::new(
            "flood (a job) durable",
            "events/s",
            vec![job_flood.durable_per_sec],
        ),
        Figure::new(
            "flood (a job): peak RSS growth",
            "MiB",
            vec![job_flood.growth_mib],
        ),
    ]
}

/// `job_events` from many HTTP clients on sessions of their own, then as many sessionless ones,
/// each during a flood.
async fn run_http(server: &Path, sizes: Sizes) -> Vec<Figure> {
    let http_flood = sizes.flood * 10;
    let (http_rate, http_latencies) =
        http_reads_during_a_flood(server, Era::Initialize, sizes.http_clients, http_flood).await;
    let (sessionless_rate, sessionless_latencies) =
        http_reads_during_a_flood(server, Era::Discover, sizes.http_clients, http_flood).await;
    vec![
        Figure::new(
            "job_events over HTTP during a flood",
            "calls/s",
            vec![http_rate],
        ),
        Figure::new(
            "job_events over HTTP during a flood, latency",
            "ms",
            http_latencies,
        ),
        Figure::new(
            "the same, sessionless (2026-07-28, as Claude Code)",
            "calls/s",
            vec![sessionless_rate],
        ),
        Figure::new(
            "the same, sessionless, latency",
            "ms",
            sessionless_latencies,
        ),
    ]
}

/// A `HOME` whose Codex config points at a mock model on 127.0.0.1, so the real Codex runs
/// without an account.
struct MockedHome {
    dir: tempfile::TempDir,
    _model: super::mock_model::MockModel,
}

impl MockedHome {
    async fn new() -> Self {
        let model = super::mock_model::MockModel::start().await;
        let dir = tempfile::tempdir().expect("a home directory");
        let codex_home = dir.path().join(".codex");
        std::fs::create_dir_all(&codex_home).expect("create .codex");
        let config = format!(
            "model = \"mock-model\"\nmodel_provider = \"mock\"\n\n[model_providers.mock]\n\
             name = \"mock\"\nbase_url = \"{}\"\nwire_api = \"responses\"\nenv_key = \"MOCK_KEY\"\n\
             request_max_retries = 0\nstream_max_retries = 0\n",
            model.base_url()
        );
        std::fs::write(codex_home.join("config.toml"), config).expect("write Codex's config");
        Self { dir, _model: model }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// `codex app-server` driven directly, as the floor: one client that writes a request and reads
/// what Codex writes until the answer it waits for.
struct BareCodex {
    _child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    next_id: u64,
}

impl BareCodex {
    async fn start(codex: &Path, home: &Path) -> Self {
        let mut child = Command::new(codex)
            .arg("app-server")
            .env("HOME", home)
            .env("MOCK_KEY", "mock")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn codex app-server");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut bare = Self {
            _child: child,
            stdin,
            lines,
            next_id: 0,
        };
        let info = json!({"clientInfo": {"name": "bench", "version": "0"}});
        bare.request("initialize", info).await;
        bare.send(&json!({"method": "initialized"})).await;
        bare
    }

    async fn send(&mut self, message: &Value) {
        self.stdin
            .write_all(format!("{message}\n").as_bytes())
            .await
            .expect("write to codex");
    }

    /// Sends a request and reads until its answer; returns the answer and how many agent
    /// message deltas came before it.
    async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"id": id, "method": method, "params": params}))
            .await;
        loop {
            let message = self.next().await;
            if message["id"] == id {
                return message;
            }
        }
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(120), self.lines.next_line())
            .await
            .expect("codex writes within 2 minutes")
            .expect("read from codex")
            .expect("codex is running");
        serde_json::from_str(&line).unwrap_or(Value::Null)
    }

    /// A new thread's turn of `prompt`, to its end; returns how many deltas it streamed.
    async fn turn(&mut self, prompt: &str) -> usize {
        let thread = self
            .request("thread/start", json!({"cwd": work_dir()}))
            .await;
        let thread_id = thread["result"]["thread"]["id"].clone();
        let input = json!({"threadId": thread_id, "input": [{"type": "text", "text": prompt}]});
        self.next_id += 1;
        self.send(&json!({"id": self.next_id, "method": "turn/start", "params": input}))
            .await;
        let mut deltas = 0;
        loop {
            let message = self.next().await;
            match message["method"].as_str() {
                Some("item/agentMessage/delta") => deltas += 1,
                Some("turn/completed") => return deltas,
                _ => {}
            }
        }
    }
}

/// A job of `prompt` through the server, followed as a client would until every delta of its
/// turn is in hand (each call waits for the next events when it has read them all); returns how
/// many of the mock's `DELTAS` pieces (`w0 `, `w1 `, …) it read.
async fn job_read_whole(served: &mut Served, prompt: &str) -> usize {
    let job_id = served.start_job(prompt).await;
    let (mut cursor, mut deltas) = (0u64, 0usize);
    loop {
        let page = served
            .call(
                "job_events",
                json!({"job_id": job_id, "cursor": cursor, "limit": 1000,
                       "include_deltas": true, "max_bytes": 262_144, "wait_seconds": 30}),
            )
            .await;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        deltas += events
            .iter()
            .filter(|e| e["type"] == "agent_message_delta")
            .filter_map(|e| e["data"]["delta"].as_str())
            .map(|text| text.split_whitespace().count())
            .sum::<usize>();
        cursor = page["cursor"].as_u64().unwrap_or(cursor);
        if events.iter().any(|e| e["type"] == "turn_completed") {
            return deltas;
        }
        // A wait answers at once for a job that is not queued or running: no turn_completed to
        // come, and no reason to ask again.
        let going = ["queued", "running"].contains(&page["status"].as_str().unwrap_or(""));
        assert!(
            going || page["has_more"] == true,
            "the turn stopped without completing: {page}"
        );
    }
}

/// The resident memory of `pid`'s children (the Codex processes a server runs), in MB.
fn children_rss_mb(pid: u32) -> f64 {
    let mut kib = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().trim_end_matches("kB").trim().to_owned())
        };
        if field("PPid:").and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            kib += field("VmRSS:")
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    kib * 1024.0 / 1_000_000.0
}

/// The CPU time all of `pid`'s threads have run so far, in ms (the kernel's per-thread count, in
/// ns). A thread that ends drops out of the sum; tokio's blocking threads end only after 10 s
/// without work, and the store's keep working through a turn.
fn cpu_ms(pid: u32) -> f64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server runs");
    let ns: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e6
}

/// The figures against the real Codex (`codex app-server`, with a mock model): a turn of
/// `real_deltas` deltas in the client's hands through this server and from bare Codex, taken in
/// turn; the same ratio between two bare app-servers, which is what the first figure would
/// show for a server that cost nothing; and Codex's memory over `real_jobs` jobs run one after
/// another.
pub async fn run_real_codex(server: &Path, codex: &Path, sizes: Sizes) -> Vec<Figure> {
    let home = MockedHome::new().await;
    let prompt = format!("DELTAS: {}", sizes.real_deltas);
    let state = tempfile::tempdir().expect("a state directory");
    let (mut served, _) =
        Served::start_on(server, codex, state, Some(home.path()), (&[], &[])).await;
    let mut bare = BareCodex::start(codex, home.path()).await;
    let mut twin = BareCodex::start(codex, home.path()).await;
    // Warm all three: Codex's first turn loads what every turn needs.
    job_read_whole(&mut served, "SAY: warm").await;
    bare.turn("SAY: warm").await;
    twin.turn("SAY: warm").await;
    let pid = served.child.id().expect("the server runs");
    let (mut ours, mut bare_ms, mut cpu, mut twins) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let bare_turn = async |bare: &mut BareCodex| {
        let began = Instant::now();
        let streamed = bare.turn(&prompt).await;
        assert_eq!(streamed, sizes.real_deltas, "every delta from bare Codex");
        ms(began.elapsed())
    };
    for _ in 0..sizes.real_runs {
        let (began, cpu_before) = (Instant::now(), cpu_ms(pid));
        let read = job_read_whole(&mut served, &prompt).await;
        ours.push(ms(began.elapsed()));
        cpu.push(cpu_ms(pid) - cpu_before);
        assert_eq!(read, sizes.real_deltas, "every delta through the server");
        bare_ms.push(bare_turn(&mut bare).await);
        // The same pair with a second bare app-server in the server's place.
        let first = bare_turn(&mut twin).await;
        twins.push(first / bare_turn(&mut bare).await);
    }
    drop((bare, twin));
    let ratio: Vec<f64> = ours.iter().zip(&bare_ms).map(|(o, b)| o / b).collect();

    // Codex's memory: jobs one after another, its children's RSS every 25 jobs.
    let mut codex_rss = Vec::new();
    for i in 0..sizes.real_jobs {
        let job_id = served.start_job(&format!("SAY: job {i}")).await;
        served.until_completed(&job_id).await;
        if (i + 1) % 25 == 0 || i + 1 == sizes.real_jobs {
            codex_rss.push(children_rss_mb(pid));
        }
    }
    vec![
        Figure::new("real Codex: deltas turn in the client's hands", "ms", ours),
        Figure::new("real Codex: the same turn, bare app-server", "ms", bare_ms),
        Figure::new("real Codex: through the server / bare", "×", ratio),
        Figure::new(
            "real Codex: bare / bare, taken the same way (the ratio's floor)",
            "×",
            twins,
        ),
        Figure::new("real Codex: the server's CPU time in that turn", "ms", cpu),
        Figure::new(
            "real Codex: its RSS, sampled every 25 jobs",
            "MB",
            codex_rss,
        ),
    ]
}
