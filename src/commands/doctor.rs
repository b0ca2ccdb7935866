//! `codex-async-mcp doctor`: is this set-up ready to serve? Each check says ok, or the problem
//! and how to fix it, so a set-up that a client would only show as "failed to connect" says why.
//!
//! It checks with the same settings (flags and environment) the server would run with, and
//! starts Codex the way the server does, so "ok" means the server would start and take turns.

use std::io::Write;
use std::path::Path;

use crate::cli::{Cli, Transport};
use crate::codex::{self, BackendKind};
use crate::readiness::{Check, Status, codex_config_checks};
use crate::store::SqliteStore;
use crate::store::state_dir::{self, DATABASE};

/// Runs every check; writes the report to `out`. True when all are ok.
pub async fn run(cli: &Cli, json: bool, out: &mut dyn Write) -> anyhow::Result<bool> {
    let mut checks = codex_checks(cli).await;
    checks.extend(codex_config_checks());
    checks.extend(state_checks(cli));
    if let Some(check) = http_check(cli).await {
        checks.push(check);
    }
    checks.push(caps_check(cli));
    let healthy = checks.iter().all(|c| c.status == Status::Ok);
    if json {
        let report = serde_json::json!({"ok": healthy, "checks": checks});
        serde_json::to_writer(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        for check in &checks {
            let status = match check.status {
                Status::Ok => "ok",
                Status::Problem => "problem",
            };
            writeln!(out, "{status:<8} {:<16} {}", check.name, check.detail)?;
            if let Some(fix) = &check.fix {
                writeln!(out, "{:<25} fix: {fix}", "")?;
            }
        }
    }
    Ok(healthy)
}

/// The caps on what clients may ask, as the server would enforce them.
fn caps_check(cli: &Cli) -> Check {
    let per_session = cli
        .max_jobs_per_session
        .map(|n| format!("--max-jobs-per-session: {n}"));
    match cli.caps() {
        Ok(caps) => {
            let lines: Vec<String> = caps.describe().into_iter().chain(per_session).collect();
            if lines.is_empty() {
                Check::ok(
                    "caps",
                    "none: clients may ask for any sandbox, policy, model or cwd",
                )
            } else {
                Check::ok("caps", lines.join("; "))
            }
        }
        Err(e) => Check::problem(
            "caps",
            e.to_string(),
            "fix the flag or the config file's setting",
        ),
    }
}

/// Codex itself, and the backend the server would drive it with, found by starting it as the
/// server does (and stopping it again).
async fn codex_checks(cli: &Cli) -> Vec<Check> {
    let settings = cli.codex_settings();
    let (events, _ignored) = codex::event_channel();
    let found = codex::detect::version(&settings.bin).await;
    let version = match found {
        Ok(version) => version,
        Err(e) => {
            return vec![Check::problem(
                "codex",
                format!("`{}` is not a usable Codex", settings.bin),
                e.to_string(),
            )];
        }
    };
    let mut checks = vec![Check::ok(
        "codex",
        format!("`{}` is Codex {version}", settings.bin),
    )];
    let picked = match cli.backend {
        BackendKind::Auto => "auto picks",
        _ => "--backend",
    };
    checks.push(
        match codex::start_backend(settings, cli.backend, events).await {
            Ok(backend) => {
                let info = backend.info();
                backend.shutdown().await;
                Check::ok(
                    "backend",
                    format!("{picked} {} (it started and answered)", info.name),
                )
            }
            Err(e) => Check::problem(
                "backend",
                format!("Codex {version} does not start as the server would start it"),
                format!("{e:#}"),
            ),
        },
    );
    checks
}

/// The state directory, its database, and whether a server runs on it.
fn state_checks(cli: &Cli) -> Vec<Check> {
    let dir = match cli.state_dir() {
        Ok(dir) => dir,
        Err(e) => {
            return vec![Check::problem(
                "state directory",
                e.to_string(),
                "pass --state-dir",
            )];
        }
    };
    if !dir.exists() {
        let creatable = dir.ancestors().find(|a| a.exists()).is_some_and(writable);
        return vec![if creatable {
            Check::ok(
                "state directory",
                format!("{} (made on the first run)", dir.display()),
            )
        } else {
            Check::problem(
                "state directory",
                format!("{} is missing and cannot be made here", dir.display()),
                "pass a --state-dir this user may write",
            )
        }];
    }
    if !dir.is_dir() || !writable(&dir) {
        return vec![Check::problem(
            "state directory",
            format!("{} is not a directory this user may write", dir.display()),
            "pass another --state-dir",
        )];
    }
    let database = match SqliteStore::open_to_read(&dir.join(DATABASE)) {
        Ok(store) => match crate::store::Store::load(&store) {
            Ok(loaded) => Check::ok(
                "database",
                format!(
                    "{} jobs in {}",
                    loaded.jobs.len(),
                    dir.join(DATABASE).display()
                ),
            ),
            Err(e) => Check::problem("database", e.to_string(), "move the database aside"),
        },
        Err(_) if !dir.join(DATABASE).exists() => {
            Check::ok("database", "none yet (made on the first run)")
        }
        Err(e) => Check::problem(
            "database",
            e.to_string(),
            "see the message; a damaged one can be moved aside",
        ),
    };
    let server = match state_dir::server_pid(&dir) {
        Some(pid) => Check::ok(
            "server",
            format!(
                "pid {pid} runs on this state directory; another server needs its own --state-dir"
            ),
        ),
        None => Check::ok("server", "none runs on this state directory"),
    };
    vec![
        Check::ok("state directory", dir.display().to_string()),
        database,
        server,
    ]
}

fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(name) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `name` is a valid C string for the call's duration.
    unsafe { libc::access(name.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// For the HTTP transports: the address rules and whether the port is free, by binding it as the
/// server would (and letting it go).
async fn http_check(cli: &Cli) -> Option<Check> {
    if cli.transport == Transport::Stdio {
        return None;
    }
    let (addr, settings) = match cli.http_settings() {
        Ok(Some(found)) => found,
        Ok(None) => return None,
        Err(e) => return Some(Check::problem("http", e.to_string(), "fix the HTTP flags")),
    };
    Some(match crate::server::http::bind(&addr, &settings).await {
        Ok(_listener) => Check::ok(
            "http",
            format!(
                "{addr} is free and allowed{}",
                match settings.auth_token {
                    Some(_) => ", with a token",
                    None => " (loopback, no token needed)",
                }
            ),
        ),
        Err(e) => Check::problem(
            "http",
            format!("{e:#}"),
            "stop what holds the port or pass another --port; off loopback pass --auth-token",
        ),
    })
}
