//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::codex::{BackendKind, CodexSettings};
use crate::jobs::{Approvals, Caps, Decision, Effort, EngineSettings, Isolation};
use crate::server::ServerSettings;
use crate::server::http::{HttpSettings, HttpTransport};

/// An MCP server that runs OpenAI Codex coding tasks as background jobs.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Without a command: serve MCP.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// A settings file (TOML; its keys are these flags' names) beneath the environment and the
    /// flags [default: $XDG_CONFIG_HOME/codex-async-mcp/config.toml, else
    /// ~/.config/codex-async-mcp/config.toml, when it exists].
    #[arg(long, env = "CODEX_ASYNC_MCP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// How clients reach the server.
    #[arg(long, value_enum, default_value_t = Transport::Stdio)]
    pub transport: Transport,

    /// The address to listen on (HTTP transports). Anything but loopback needs --auth-token.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// The port to listen on (HTTP transports).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,

    /// Where the MCP endpoint lives (HTTP transports): streamable HTTP at the path itself, legacy
    /// SSE at `{path}/sse` and `{path}/messages`, health at `{path}/healthz`.
    #[arg(long, default_value = "/mcp", value_parser = parse_mount_path)]
    pub mount_path: String,

    /// The bearer token HTTP clients must send (`Authorization: Bearer …`).
    #[arg(long, env = "CODEX_ASYNC_MCP_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// Another host name clients may address the server by (the Host header). Repeatable.
    #[arg(long = "allowed-host", value_name = "HOST")]
    pub allowed_hosts: Vec<String>,

    /// A browser origin allowed to call the server (e.g. `https://app.example.com`); enables CORS
    /// for it. Repeatable. Loopback origins are always allowed.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,

    /// The most HTTP sessions open at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sessions: u32,

    /// Streamable HTTP sessions idle for this long are closed, in seconds (at most a week).
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub session_idle_seconds: u64,

    /// The largest request body accepted over HTTP, in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// The Codex CLI to run.
    #[arg(long, env = "CODEX_BIN", default_value = "codex")]
    pub codex_bin: String,

    /// How to drive Codex: `auto` picks `mcp-server` when this Codex has it, else `app-server`
    /// when it answers the handshake, else `exec`.
    #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
    pub backend: BackendKind,

    /// A Codex config override, passed to Codex as `-c KEY=VALUE`. Repeatable.
    #[arg(long = "codex-config", value_name = "KEY=VALUE", value_parser = parse_override)]
    pub codex_config: Vec<String>,

    /// Who answers Codex's requests (run a command, apply a patch, grant permissions, answer a
    /// question) for jobs that do not say: `relay` them to clients (job_respond), or `decline` or
    /// `approve` them all.
    #[arg(long, value_enum, default_value_t = Approvals::Relay)]
    pub approvals: Approvals,

    /// How long a relayed request waits for an answer (e.g. 10m, 90s); then it gets
    /// --approval-timeout-decision. Cannot be turned off: a turn never waits forever.
    #[arg(long, default_value = "10m", value_parser = parse_approval_timeout)]
    pub approval_timeout: Duration,

    /// What a request nobody answered in time gets: decline (the turn carries on without it),
    /// cancel (the turn ends as cancelled) or accept (a question is declined instead).
    #[arg(long, default_value = "decline", value_parser = parse_timeout_decision)]
    pub approval_timeout_decision: Decision,

    /// The longest a turn may run, in seconds, for turns that do not say (`max_turn_seconds`);
    /// time spent waiting for answers to Codex's requests does not count. 0: no limit.
    #[arg(long, default_value_t = 0)]
    pub max_turn_seconds: u64,

    /// Stop the long-lived `codex app-server` once it has run no turn for this long (e.g. 10m,
    /// 1h; 0s: never): Codex keeps every thread it ran in memory, and a new child resumes a
    /// thread from disk on its next turn.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub codex_idle_restart: Duration,

    /// A sandbox clients may ask for (read-only, workspace-write, danger-full-access). Given
    /// once or more, no other is taken, in `sandbox` or in `config`. Repeatable.
    #[arg(long = "allowed-sandbox", value_name = "SANDBOX", value_parser = ["read-only", "workspace-write", "danger-full-access"])]
    pub allowed_sandboxes: Vec<String>,

    /// An approval policy clients may ask for (untrusted, on-failure, on-request, never); given
    /// once or more, no other is taken. Repeatable.
    #[arg(long = "allowed-approval-policy", value_name = "POLICY", value_parser = ["untrusted", "on-failure", "on-request", "never"])]
    pub allowed_approval_policies: Vec<String>,

    /// A model clients may ask for; given once or more, no other is taken. Repeatable.
    #[arg(long = "allowed-model", value_name = "MODEL")]
    pub allowed_models: Vec<String>,

    /// The highest reasoning effort clients may ask for.
    #[arg(long, value_enum)]
    pub max_effort: Option<Effort>,

    /// A directory jobs may run in, with everything under it; given once or more, a `cwd`
    /// elsewhere is refused. Repeatable.
    #[arg(long = "allowed-cwd-root", value_name = "DIR")]
    pub allowed_cwd_roots: Vec<PathBuf>,

    /// The most jobs one MCP session may have queued, running or waiting for an answer at once
    /// (clients on the sessionless 2026-07-28 protocol count as one session).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_jobs_per_session: Option<u32>,

    /// Where jobs run that do not say (`isolation`): in their cwd, or each in a git worktree of
    /// its own (under the state directory's `worktrees/`) on a new branch.
    #[arg(long, value_enum, default_value_t = Isolation::None)]
    pub isolation: Isolation,

    /// Turns running in Codex at once; more wait as `queued`.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_jobs: u16,

    /// The longest a single job_wait, or job_events with wait_seconds, may block, in seconds (at
    /// most a day).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub max_wait_seconds: u64,

    /// The most one tool answer may take, in bytes, when a call does not say (`max_bytes`):
    /// longer answers are paged or cut, saying how to read the rest.
    #[arg(long, default_value_t = 24 * 1024, value_parser = clap::value_parser!(u64).range(1024..=262_144))]
    pub max_answer_bytes: u64,

    /// How often a client with MCP tasks should poll a task (`pollIntervalMs`), in milliseconds.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub task_poll_ms: u64,

    /// How often job_wait sends progress notifications while it waits, in milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub progress_interval_ms: u64,

    /// How long job_cancel may take in all, asking Codex to stop and waiting for its word,
    /// before the job is settled anyway; also how long a `codex exec` asked to stop gets before
    /// it is killed. In milliseconds (at most 10 minutes).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub cancel_grace_ms: u64,

    /// Where jobs, events and notifications are kept [default: $XDG_STATE_HOME/codex-async-mcp,
    /// else ~/.local/state/codex-async-mcp].
    #[arg(long, env = "CODEX_ASYNC_MCP_STATE_DIR", global = true)]
    pub state_dir: Option<PathBuf>,

    /// What to log on stderr: error, warn, info, debug or trace [default: RUST_LOG when set,
    /// else info].
    #[arg(long, value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: Option<String>,

    /// Also write a debug log, with Codex's stderr, to `logs/` in the state directory: a file a
    /// day, kept for a week.
    #[arg(long)]
    pub debug: bool,

    /// Settled jobs not updated for this long are deleted with their events (e.g. 7d, 12h, 30m).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub retention: Duration,
}

/// What to do instead of serving MCP.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check that this set-up can serve: Codex and its backend, Codex's config and model, the
    /// state directory, and for HTTP the address. Exits 1 on a problem, saying how to fix it.
    Doctor {
        /// Write the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the settings the server would run with, and where each comes from (flag,
    /// environment, config file or default).
    Config {
        /// Write them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read the jobs of the state directory, also while a server runs on it.
    Jobs(JobsArgs),
    /// Register this server with a client (Claude Code, Codex, Cursor, Claude Desktop) as its
    /// users do, saying what changed. An entry of that name already there is left alone.
    Install(InstallArgs),
    /// Take this server out of a client's configuration.
    Uninstall(UninstallArgs),
    /// Print a completion script for `shell` (e.g. `completions bash > /etc/bash_completion.d/codex-async-mcp`).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (e.g. `man > ~/.local/share/man/man1/codex-async-mcp.1`).
    Man,
}

/// The clients `install` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Client {
    /// `claude mcp add -s user` (set CLAUDE_BIN if `claude` is not on PATH).
    ClaudeCode,
    /// `[mcp_servers.NAME]` in `$CODEX_HOME/config.toml`.
    Codex,
    /// `mcpServers` in `~/.cursor/mcp.json`.
    Cursor,
    /// `mcpServers` in Claude Desktop's `claude_desktop_config.json` (stdio only).
    ClaudeDesktop,
}

/// How an installed client reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InstallTransport {
    /// The client starts the server itself.
    Stdio,
    /// A running server's streamable HTTP endpoint (the top-level --host, --port, --mount-path
    /// and --auth-token, or --url).
    Http,
    /// A running server's legacy SSE endpoint.
    Sse,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    pub client: Client,

    /// The name of the entry in the client.
    #[arg(long, default_value = "codex_async")]
    pub name: String,

    #[arg(long, value_enum, default_value_t = InstallTransport::Stdio)]
    pub transport: InstallTransport,

    /// The server's URL, for --transport http or sse.
    #[arg(long)]
    pub url: Option<String>,

    /// Print what would change, and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// The flags the client starts the server with (stdio), after `--`.
    #[arg(last = true)]
    pub server_args: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    pub client: Client,

    /// The name of the entry in the client.
    #[arg(long, default_value = "codex_async")]
    pub name: String,

    /// Print what would change, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub action: JobsAction,

    /// Write JSON (a line per event for `events`) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum JobsAction {
    /// The jobs, newest first.
    List,
    /// One job: its status, options, prompt, and its latest turn's result or error.
    Show { job_id: String },
    /// A job's events, oldest first.
    Events {
        job_id: String,
        /// Go on writing events as they come until the job settles (or its server stops).
        #[arg(long, short)]
        follow: bool,
        /// Also the streamed pieces (`*_delta`) that the whole messages repeat.
        #[arg(long)]
        deltas: bool,
        /// Only events after this seq.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// The final message of the job's latest turn, whole.
    Result { job_id: String },
    /// Stop the job's running turn, through the server that runs it (the job goes on taking
    /// replies).
    Cancel { job_id: String },
    /// Delete settled jobs not updated for a while, with their events: through the running
    /// server, or on the state directory when none runs.
    Prune {
        /// How long unchanged (e.g. 7d, 12h) [default: --retention].
        #[arg(long, value_parser = parse_duration)]
        older_than: Option<Duration>,
    },
}

fn parse_approval_timeout(value: &str) -> Result<Duration, String> {
    let timeout = parse_duration(value)?;
    if timeout.is_zero() || timeout > Duration::from_secs(7 * 24 * 3600) {
        return Err(format!(
            "{value:?} is out of range; write a duration from 1s to 7d, e.g. 10m"
        ));
    }
    Ok(timeout)
}

fn parse_timeout_decision(value: &str) -> Result<Decision, String> {
    match value {
        "decline" => Ok(Decision::Decline),
        "cancel" => Ok(Decision::Cancel),
        "accept" => Ok(Decision::Accept),
        _ => Err(format!("{value:?} is not one of decline, cancel, accept")),
    }
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("{value:?} is not a duration ({e}); write e.g. 7d, 12h or 30m"))
}

/// How clients reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// MCP over stdin/stdout.
    Stdio,
    /// Streamable HTTP (MCP 2025-06-18 and later).
    #[value(alias = "http")]
    StreamableHttp,
    /// The legacy HTTP+SSE transport (MCP 2024-11-05).
    Sse,
}

fn parse_mount_path(value: &str) -> Result<String, String> {
    if value.starts_with('/') && !value.contains(['?', '#', ' ']) {
        Ok(value.to_owned())
    } else {
        Err(format!("{value:?} is not a path; write e.g. /mcp or /"))
    }
}

fn parse_override(value: &str) -> Result<String, String> {
    match value.split_once('=') {
        Some((key, _)) if !key.trim().is_empty() => Ok(value.to_owned()),
        _ => Err(format!(
            "{value:?} is not KEY=VALUE; write e.g. --codex-config model=\"gpt-5.2\""
        )),
    }
}

impl Cli {
    pub(crate) fn codex_settings(&self) -> CodexSettings {
        CodexSettings {
            bin: self.codex_bin.clone(),
            config_overrides: self.codex_config.clone(),
            stop_grace: Duration::from_millis(self.cancel_grace_ms),
            idle_restart: (!self.codex_idle_restart.is_zero()).then_some(self.codex_idle_restart),
        }
    }

    /// The caps on what clients may ask; a cwd root that does not exist is an error.
    pub(crate) fn caps(&self) -> anyhow::Result<Caps> {
        let cwd_roots = self
            .allowed_cwd_roots
            .iter()
            .map(|root| {
                root.canonicalize().map_err(|e| {
                    anyhow::anyhow!(
                        "--allowed-cwd-root {}: {e}; name a directory that exists",
                        root.display()
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Caps {
            sandboxes: self.allowed_sandboxes.clone(),
            approval_policies: self.allowed_approval_policies.clone(),
            models: self.allowed_models.clone(),
            max_effort: self.max_effort,
            cwd_roots,
        })
    }

    pub(crate) fn engine_settings(&self) -> anyhow::Result<EngineSettings> {
        Ok(EngineSettings {
            max_concurrent_jobs: usize::from(self.max_concurrent_jobs),
            cancel_grace: Duration::from_millis(self.cancel_grace_ms),
            default_cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            retention: self.retention,
            approvals: self.approvals,
            approval_timeout: self.approval_timeout,
            approval_timeout_decision: self.approval_timeout_decision,
            max_turn: (self.max_turn_seconds > 0)
                .then(|| Duration::from_secs(self.max_turn_seconds)),
            caps: self.caps()?,
            isolation: self.isolation,
            worktrees: self.state_dir()?.join("worktrees"),
        })
    }

    /// Where to listen and how, for the HTTP transports; `None` for stdio.
    pub(crate) fn http_settings(&self) -> anyhow::Result<Option<(String, HttpSettings)>> {
        let transport = match self.transport {
            Transport::Stdio => return Ok(None),
            Transport::StreamableHttp => HttpTransport::StreamableHttp,
            Transport::Sse => HttpTransport::LegacySse,
        };
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let settings = HttpSettings {
            transport,
            mount_path: self.mount_path.clone(),
            auth_token: self.auth_token.clone().filter(|t| !t.is_empty()),
            allowed_hosts: self.allowed_hosts.clone(),
            allowed_origins: self.allowed_origins.clone(),
            max_sessions: usize::try_from(self.max_sessions).unwrap_or(usize::MAX),
            session_idle: Duration::from_secs(self.session_idle_seconds),
            max_body_bytes: self.max_body_bytes,
        };
        Ok(Some((format!("{host}:{}", self.port), settings)))
    }

    /// The state directory: `--state-dir`, else the XDG default.
    pub fn state_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.state_dir {
            Some(dir) => Ok(dir.clone()),
            None => crate::store::state_dir::default_dir().ok_or_else(|| {
                anyhow::anyhow!(
                    "no state directory: neither XDG_STATE_HOME nor HOME is set to an absolute \
                     path. Pass --state-dir"
                )
            }),
        }
    }

    pub(crate) fn server_settings(&self) -> ServerSettings {
        ServerSettings {
            max_wait: Duration::from_secs(self.max_wait_seconds),
            progress_interval: Duration::from_millis(self.progress_interval_ms),
            answer_budget: crate::server::Budget(
                usize::try_from(self.max_answer_bytes).unwrap_or(usize::MAX),
            ),
            task_poll: Duration::from_millis(self.task_poll_ms),
            task_ttl: self.retention,
            max_jobs_per_session: self.max_jobs_per_session.map(|n| n as usize),
            sessionless_jobs: Default::default(),
        }
    }
}
