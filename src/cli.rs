//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::codex::{ApprovalAnswer, BackendKind, CodexSettings};
use crate::jobs::EngineSettings;
use crate::server::ServerSettings;

/// An MCP server that runs OpenAI Codex coding tasks as background jobs.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The Codex CLI to run.
    #[arg(long, env = "CODEX_BIN", default_value = "codex")]
    pub codex_bin: String,

    /// How to drive Codex: `auto` picks `mcp-server` when this Codex has it, else `app-server`.
    #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
    pub backend: BackendKind,

    /// A Codex config override, passed to Codex as `-c KEY=VALUE`. Repeatable.
    #[arg(long = "codex-config", value_name = "KEY=VALUE", value_parser = parse_override)]
    pub codex_config: Vec<String>,

    /// How to answer Codex's requests to run a command or apply a patch.
    #[arg(long, value_enum, default_value_t = ApprovalAnswer::Decline)]
    pub approvals: ApprovalAnswer,

    /// Turns running in Codex at once; more wait as `queued`.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_jobs: u16,

    /// The longest a single job_wait call may block, in seconds.
    #[arg(long, default_value_t = 300)]
    pub max_wait_seconds: u64,

    /// How often job_wait sends progress notifications while it waits, in milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..))]
    pub progress_interval_ms: u64,

    /// How long Codex gets to confirm a cancel before the job is settled anyway, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub cancel_grace_ms: u64,

    /// Where jobs, events and notifications are kept [default: $XDG_STATE_HOME/codex-async-mcp,
    /// else ~/.local/state/codex-async-mcp].
    #[arg(long, env = "CODEX_ASYNC_MCP_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Settled jobs not updated for this long are deleted with their events (e.g. 7d, 12h, 30m).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub retention: Duration,
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("{value:?} is not a duration ({e}); write e.g. 7d, 12h or 30m"))
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
    pub fn codex_settings(&self) -> CodexSettings {
        CodexSettings {
            bin: self.codex_bin.clone(),
            config_overrides: self.codex_config.clone(),
            approvals: self.approvals,
        }
    }

    pub fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            max_concurrent_jobs: usize::from(self.max_concurrent_jobs),
            cancel_grace: Duration::from_millis(self.cancel_grace_ms),
            default_cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            retention: self.retention,
        }
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

    pub fn server_settings(&self) -> ServerSettings {
        ServerSettings {
            max_wait: Duration::from_secs(self.max_wait_seconds),
            progress_interval: Duration::from_millis(self.progress_interval_ms),
        }
    }
}
