//! The built `codex-async-mcp` binary run as a child, driven over stdio by rmcp's MCP client.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ElicitRequestParams,
    ElicitResult, ElicitationAction, ErrorData, Implementation, ProgressNotificationParam,
    ProtocolVersion,
};
use rmcp::service::{
    ClientLifecycleMode, ClientServiceExt as _, NotificationContext, RequestContext, RunningService,
};
use rmcp::{ClientHandler, RoleClient};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, Command};

use super::mock_model::MockModel;

/// Every await in a test is bounded by this: a hang fails the test instead of stalling CI.
pub const STEP: Duration = Duration::from_secs(90);

pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A fresh HOME, CODEX_HOME and working directory, so nothing of the machine leaks in.
pub struct Sandbox {
    pub dir: TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cam-test-")
            .tempdir()
            .expect("tempdir");
        for sub in ["home", "codex-home", "work"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Self { dir }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn codex_home(&self) -> PathBuf {
        self.dir.path().join("codex-home")
    }

    /// The working directory jobs run in.
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Every process started with this sandbox's `CODEX_HOME`: the Codex processes of its server,
    /// however they were started and whoever their parent is now.
    pub fn codex_processes(&self) -> Vec<u32> {
        let marker = format!("CODEX_HOME={}", self.codex_home().display());
        let own = std::process::id();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
            .filter(|pid| *pid != own && alive(*pid))
            .filter(|pid| {
                // The server has the same environment. Its binary may have been rebuilt while it
                // runs, which makes the link read `codex-async-mcp (deleted)`.
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
                let server = exe
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("codex-async-mcp"));
                let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                !server
                    && environ
                        .split(|b| *b == 0)
                        .any(|var| var == marker.as_bytes())
            })
            .collect()
    }

    /// Waits until no Codex process of this sandbox runs.
    pub async fn until_no_codex(&self) {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let left = self.codex_processes();
            if left.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "codex processes outlived the server: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's state directory, unless a test passes another `--state-dir`.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Each job's status and its events' types in seq order, read from the database itself.
    pub fn jobs_in_database(&self) -> Vec<(String, String, Vec<String>)> {
        let db = rusqlite::Connection::open(self.state().join("jobs.sqlite")).unwrap();
        let mut jobs = db
            .prepare("SELECT id, status FROM jobs ORDER BY id")
            .unwrap();
        let jobs: Vec<(String, String)> = jobs
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        jobs.into_iter()
            .map(|(id, status)| {
                let mut events = db
                    .prepare("SELECT kind FROM events WHERE job_id = ?1 ORDER BY seq")
                    .unwrap();
                let kinds = events
                    .query_map([&id], |r| r.get(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                (id, status, kinds)
            })
            .collect()
    }

    /// Points Codex at `model` with retries off, so failures are immediate.
    pub fn use_model(&self, model: &MockModel, slug: &str) {
        let config = format!(
            r#"model = "{slug}"
model_provider = "mock"

[model_providers.mock]
name = "mock"
base_url = "{}"
wire_api = "responses"
env_key = "MOCK_KEY"
request_max_retries = 0
stream_max_retries = 0
"#,
            model.base_url()
        );
        std::fs::write(self.codex_home().join("config.toml"), config).unwrap();
    }
}

/// How the test client answers elicitation forms; a client with none does not declare the
/// capability.
#[derive(Clone, Debug)]
pub enum Forms {
    /// Accept each form with this content.
    Accept(Value),
    /// Decline each form.
    Decline,
    /// Never answer.
    Ignore,
}

/// Collects what the server sends besides answers, and answers its forms as told.
#[derive(Clone, Default)]
pub struct Recorder {
    pub progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
    pub forms: Option<Forms>,
    /// Declares the MCP tasks extension (and connects with `server/discover`, as Claude Code).
    pub tasks: bool,
    /// The forms the server sent.
    pub asked: Arc<Mutex<Vec<ElicitRequestParams>>>,
}

impl ClientHandler for Recorder {
    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        self.asked.lock().unwrap().push(request);
        match &self.forms {
            Some(Forms::Accept(content)) => {
                Ok(ElicitResult::new(ElicitationAction::Accept).with_content(content.clone()))
            }
            Some(Forms::Decline) | None => Ok(ElicitResult::new(ElicitationAction::Decline)),
            Some(Forms::Ignore) => std::future::pending().await,
        }
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }

    fn get_info(&self) -> ClientConfig {
        let capabilities = match (&self.forms, self.tasks) {
            (Some(_), true) => ClientCapabilities::builder()
                .enable_elicitation()
                .enable_tasks()
                .build(),
            (Some(_), false) => ClientCapabilities::builder().enable_elicitation().build(),
            (None, true) => ClientCapabilities::builder().enable_tasks().build(),
            (None, false) => ClientCapabilities::default(),
        };
        ClientConfig::new(
            capabilities,
            Implementation::new("codex-async-mcp-tests", "0"),
        )
        .with_protocol_version(ProtocolVersion::V_2025_06_18)
    }
}

pub struct Server {
    pub client: RunningService<RoleClient, Recorder>,
    pub recorder: Recorder,
    pub child: Child,
    stderr: Arc<Mutex<String>>,
}

/// How to start the server under test.
pub struct Launch<'a> {
    pub codex_bin: &'a Path,
    pub sandbox: &'a Sandbox,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// How the client answers forms (`None`: it declares no elicitation).
    pub forms: Option<Forms>,
    /// The client connects with `server/discover` (2026-07-28) and declares the MCP tasks
    /// extension, as interactive Claude Code does.
    pub tasks: bool,
}

impl<'a> Launch<'a> {
    pub fn new(codex_bin: &'a Path, sandbox: &'a Sandbox) -> Self {
        Self {
            codex_bin,
            sandbox,
            args: Vec::new(),
            env: Vec::new(),
            forms: None,
            tasks: false,
        }
    }

    /// The client speaks the 2026-07-28 handshake and declares the MCP tasks extension.
    pub fn with_tasks(mut self) -> Self {
        self.tasks = true;
        self
    }

    /// The client declares elicitation and answers forms so.
    pub fn forms(mut self, forms: Forms) -> Self {
        self.forms = Some(forms);
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The server process, not yet connected: for start-up failures.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_codex-async-mcp"));
        command
            .args(&self.args)
            .env("CODEX_BIN", self.codex_bin)
            .env("HOME", self.sandbox.home())
            // The sandbox's own config directory: no settings file of the machine's applies.
            .env("XDG_CONFIG_HOME", self.sandbox.home().join(".config"))
            .env("CODEX_HOME", self.sandbox.codex_home())
            .env("MOCK_KEY", "test-key")
            .env("CODEX_ASYNC_MCP_STATE_DIR", self.sandbox.state())
            .env("RUST_LOG", "codex_async_mcp=debug,codex_stderr=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.sandbox.work())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs the server expecting it to refuse to start; returns what it wrote to stderr.
    pub async fn refused(&self) -> String {
        let output = within("a refused start-up", self.command().output())
            .await
            .unwrap();
        assert!(
            !output.status.success(),
            "the server should refuse to start"
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    pub async fn start(self) -> Server {
        let mut child = self.command().spawn().expect("spawn codex-async-mcp");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let recorder = Recorder {
            forms: self.forms.clone(),
            tasks: self.tasks,
            ..Recorder::default()
        };
        let lifecycle = if self.tasks {
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            }
        } else {
            ClientLifecycleMode::Initialize
        };
        let handshake = recorder
            .clone()
            .serve_with_lifecycle((stdout, stdin), lifecycle);
        let client = match within("initialize", handshake).await {
            Ok(client) => client,
            Err(e) => panic!(
                "MCP handshake failed: {e}\nserver stderr:\n{}",
                stderr.lock().unwrap()
            ),
        };
        Server {
            client,
            recorder,
            child,
            stderr,
        }
    }
}

impl Server {
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub async fn call(&self, tool: &str, args: Value) -> CallToolResult {
        let Value::Object(args) = args else {
            panic!("arguments must be an object")
        };
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(args);
        within(&format!("{tool} call"), self.client.call_tool(params))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{tool} failed at the protocol level: {e}\n{}",
                    self.stderr()
                )
            })
    }

    /// Calls a tool that must succeed and returns its structured content.
    pub async fn ok(&self, tool: &str, args: Value) -> Value {
        let result = self.call(tool, args).await;
        assert_ne!(
            result.is_error,
            Some(true),
            "{tool} answered with an error: {:?}",
            result.content
        );
        result
            .structured_content
            .unwrap_or_else(|| panic!("{tool} gave no structuredContent"))
    }

    /// Calls a tool that must answer with `isError` and returns its text.
    pub async fn err(&self, tool: &str, args: Value) -> String {
        let result = self.call(tool, args).await;
        assert_eq!(
            result.is_error,
            Some(true),
            "{tool} should have failed: {result:?}"
        );
        result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts a job in the sandbox's work directory.
    pub async fn start_job(&self, sandbox: &Sandbox, prompt: &str) -> Value {
        self.ok(
            "job_start",
            json!({"prompt": prompt, "cwd": sandbox.work(), "sandbox": "workspace-write", "approval_policy": "never"}),
        )
        .await
    }

    /// Waits until the job's current turn has settled, or waits for an answer to a request of
    /// Codex's, and returns the notification that says so.
    pub async fn settle(&self, job_id: &str) -> Value {
        self.next_news(job_id, None).await
    }

    /// The job's next notification after `cursor` (`None`: the settled job's last, else the
    /// next).
    pub async fn next_news(&self, job_id: &str, cursor: Option<u64>) -> Value {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {job_id} did not settle\n{}",
                self.stderr()
            );
            let mut args = json!({"job_id": job_id, "timeout_seconds": 30});
            if let Some(cursor) = cursor {
                args["cursor"] = json!(cursor);
            }
            let answer = self.ok("job_wait", args).await;
            if let Some(last) = answer["notifications"].as_array().and_then(|n| n.last()) {
                return last.clone();
            }
        }
    }

    /// Waits until the job's turn has ended, past any requests it waits on meanwhile, and returns
    /// the notification.
    pub async fn turn_end(&self, job_id: &str) -> Value {
        let mut news = self.settle(job_id).await;
        while news["status"] == "input_required" {
            news = self.next_news(job_id, news["seq"].as_u64()).await;
        }
        news
    }

    /// Waits until the job has an event of `kind`. No API waits for an event (job_wait waits for
    /// settlements), so this looks every 50 ms, across the process boundary.
    pub async fn until_event(&self, job_id: &str, kind: &str) {
        self.until_events(job_id, kind, 1).await;
    }

    /// Waits until the job has `n` events of `kind`, as [`Self::until_event`].
    pub async fn until_events(&self, job_id: &str, kind: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let events = self
                .ok(
                    "job_events",
                    json!({"job_id": job_id, "event_types": [kind]}),
                )
                .await;
            if events["events"].as_array().unwrap().len() >= n {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "no {kind} event");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many jobs `job_list` shows.
    pub async fn job_count(&self) -> usize {
        self.ok("job_list", json!({})).await["jobs"]
            .as_array()
            .unwrap()
            .len()
    }

    /// All of a job's events, read in pages of `page`.
    pub async fn all_events(&self, job_id: &str, page: usize) -> Vec<Value> {
        let mut cursor = 0;
        let mut events = Vec::new();
        loop {
            let answer = self
                .ok("job_events", json!({"job_id": job_id, "cursor": cursor, "limit": page, "include_deltas": true}))
                .await;
            let batch = answer["events"].as_array().unwrap().clone();
            assert!(batch.len() <= page);
            events.extend(batch);
            cursor = answer["cursor"].as_u64().unwrap();
            if !answer["has_more"].as_bool().unwrap() {
                return events;
            }
        }
    }

    /// Stops the server as a client does, by closing its stdin, and waits until it has exited
    /// (and let go of its state directory).
    pub async fn stop(self) {
        let Server {
            client, mut child, ..
        } = self;
        client.cancel().await.ok();
        let status = within("server exit", child.wait()).await.unwrap();
        assert!(status.success(), "{status}");
    }

    /// Waits until the server has logged a line containing `needle`.
    pub async fn until_logged(&self, needle: &str) {
        until_logged(|| self.stderr(), needle, STEP).await;
    }

    /// Sends `signal` to the server process.
    pub fn signal(&self, signal: i32) {
        let pid = self.child.id().expect("the server runs") as i32;
        // SAFETY: a plain syscall on our own child's pid.
        unsafe { libc::kill(pid, signal) };
    }

    /// The pids of the server's child processes (the Codex child).
    pub fn children(&self) -> Vec<u32> {
        let Some(pid) = self.child.id() else {
            return Vec::new();
        };
        children_of(pid)
    }
}

/// Waits until `log()` (what a server wrote to stderr so far) contains `needle`, at most `bound`.
/// The server is another process: this looks every 20 ms.
pub async fn until_logged(log: impl Fn() -> String, needle: &str, bound: Duration) {
    let deadline = tokio::time::Instant::now() + bound;
    while !log().contains(needle) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server did not log {needle:?} within {bound:?}:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether an event type ends a turn.
pub fn is_turn_end(kind: &str) -> bool {
    [
        "turn_completed",
        "turn_failed",
        "turn_cancelled",
        "turn_interrupted",
    ]
    .contains(&kind)
}

/// Processes whose parent is `pid`, read from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// Waits until none of `pids` runs any more (a process killed by the kernel for its parent's death
/// goes a moment after the parent).
pub async fn until_gone(pids: &[u32]) {
    let deadline = tokio::time::Instant::now() + STEP;
    for pid in pids {
        while alive(*pid) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "process {pid} outlived the server"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// True while a process with this pid exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
