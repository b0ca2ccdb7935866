//! `codex-async-mcp jobs …`: the jobs of a state directory, for a person at a terminal or a
//! script. `list`, `show`, `events` and `result` read straight from the database (SQLite lets a
//! reader beside the server's writer, so they work while a server runs there, and change
//! nothing); `cancel` and `prune` act through the running server's control socket.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::cli::{JobsAction, JobsArgs};
use crate::jobs::expired_jobs;
use crate::model::{Event, EventQuery, JobId, JobRecord, JobStatus};
use crate::server::{self, control};
use crate::store::state_dir::{self, DATABASE};
use crate::store::{self, SqliteStore, Store as _};
use crate::text::shorten;

/// How often `events --follow` looks for news. The server is another process, so there is no
/// in-process signal to wait on; one small indexed read each time costs next to nothing.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// Events read per page.
const PAGE: usize = 1000;

/// The longest summary of an event on its line.
const SUMMARY_CHARS: usize = 160;

/// Runs the `jobs` command on the state directory `dir`, writing to `out` (and notes to `note`).
pub fn run(
    args: &JobsArgs,
    dir: &Path,
    retention: Duration,
    out: &mut dyn Write,
    note: &mut dyn Write,
) -> anyhow::Result<()> {
    // Reading opens the database read-only; the two that change jobs go through the engine
    // that owns them when a server runs.
    let store = || SqliteStore::open_to_read(&dir.join(DATABASE));
    let style = Style::for_stdout(args.json);
    match &args.action {
        JobsAction::Cancel { job_id } => cancel(dir, job_id, args.json, out),
        JobsAction::Prune { older_than } => {
            prune(dir, older_than.unwrap_or(retention), args.json, out)
        }
        JobsAction::List => list(&store()?, dir, args.json, style, out, note),
        JobsAction::Show { job_id } => {
            let job = job(&store()?, dir, job_id)?;
            show(&job, args.json, style, out)
        }
        JobsAction::Events {
            job_id,
            follow,
            deltas,
            after,
        } => {
            let store = store()?;
            job(&store, dir, job_id)?;
            let shown = Shown {
                json: args.json,
                style,
                deltas: *deltas,
            };
            events(
                &store,
                dir,
                &JobId::from(job_id.as_str()),
                *after,
                *follow,
                shown,
                out,
                note,
            )
        }
        JobsAction::Result { job_id } => {
            let job = job(&store()?, dir, job_id)?;
            if !job.status.is_settled() && state_dir::server_pid(dir).is_none() {
                no_server_note(dir, note)?;
            }
            result(&job, args.json, out)
        }
    }
}

fn cancel(dir: &Path, job: &str, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if state_dir::server_pid(dir).is_none() {
        anyhow::bail!(
            "no server runs on {}: no turn runs there to cancel (a job shown as running reads \
             as interrupted once a server starts)",
            dir.display()
        );
    }
    let job = control::ask(dir, &serde_json::json!({ "cancel": job }))?;
    if json {
        serde_json::to_writer(&mut *out, &job)?;
        writeln!(out)?;
    } else {
        let status = job["status"].as_str().unwrap_or("?");
        writeln!(out, "{}: {status}", job["job_id"].as_str().unwrap_or(""))?;
    }
    Ok(())
}

fn prune(dir: &Path, older_than: Duration, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let deleted = if state_dir::server_pid(dir).is_some() {
        let request = serde_json::json!({ "prune_older_than_seconds": older_than.as_secs() });
        control::ask(dir, &request)?["deleted"]
            .as_u64()
            .unwrap_or(0)
    } else {
        // No server: hold the directory (none may start meanwhile) and delete here.
        let held = state_dir::StateDir::open(dir)?;
        let store = SqliteStore::open(&held.database())?;
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let loaded = store.load()?;
        let expired = expired_jobs(loaded.jobs.iter().map(|j| &j.record), cutoff);
        let batch: Vec<store::Write> = expired
            .iter()
            .cloned()
            .map(store::Write::DeleteJob)
            .collect();
        store.write(&batch)?;
        expired.len() as u64
    };
    if json {
        serde_json::to_writer(&mut *out, &serde_json::json!({ "deleted": deleted }))?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "deleted {deleted} settled jobs unchanged for {}",
            humantime::format_duration(older_than)
        )?;
    }
    Ok(())
}

fn job(store: &SqliteStore, dir: &Path, id: &str) -> anyhow::Result<JobRecord> {
    store.read_job(&JobId::from(id))?.ok_or_else(|| {
        anyhow::anyhow!(
            "there is no job {id:?} in {}; `codex-async-mcp jobs list` shows the jobs there",
            dir.display()
        )
    })
}

/// Says, once, that the jobs that look unsettled are not moving.
fn no_server_note(dir: &Path, note: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        note,
        "note: no server runs on {}: a job shown as running or queued will read as \
         interrupted once one starts",
        dir.display()
    )
}

fn list(
    store: &SqliteStore,
    dir: &Path,
    json: bool,
    style: Style,
    out: &mut dyn Write,
    note: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut jobs: Vec<JobRecord> = store.load()?.jobs.into_iter().map(|j| j.record).collect();
    jobs.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    if json {
        serde_json::to_writer(&mut *out, &jobs)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:<37} {:<14} {:>5}  {:<24} PROMPT",
            "JOB", "STATUS", "TURNS", "UPDATED"
        )?;
        for job in &jobs {
            let prompt = shorten(&one_line(&job.prompt), 60);
            writeln!(
                out,
                "{:<37} {} {:>5}  {:<24} {prompt}",
                job.id.as_str(),
                style.status(job.status, 14),
                job.turns,
                job.updated_at,
            )?;
        }
    }
    let unsettled = jobs.iter().any(|j| !j.status.is_settled());
    if unsettled && state_dir::server_pid(dir).is_none() {
        no_server_note(dir, note)?;
    }
    Ok(())
}

fn show(job: &JobRecord, json: bool, style: Style, out: &mut dyn Write) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, job)?;
        writeln!(out)?;
        return Ok(());
    }
    let options = &job.options;
    let fields = [
        ("job", Some(job.id.as_str().to_owned())),
        ("thread", job.thread_id.clone()),
        ("created", Some(job.created_at.clone())),
        ("updated", Some(job.updated_at.clone())),
        ("turns", Some(job.turns.to_string())),
        ("cwd", Some(options.cwd.clone())),
        ("model", options.model.clone()),
        ("sandbox", options.sandbox.clone()),
        ("approval", options.approval_policy.clone()),
    ];
    writeln!(out, "{:<9} {}", "status", style.status(job.status, 0))?;
    for (name, value) in fields {
        if let Some(value) = value {
            writeln!(out, "{name:<9} {value}")?;
        }
    }
    writeln!(out, "prompt:\n{}", indent(&job.prompt))?;
    if let Some(error) = &job.error {
        writeln!(out, "error:\n{}", indent(error))?;
    } else if let Some(result) = &job.last_message {
        writeln!(out, "result:\n{}", indent(result))?;
    }
    Ok(())
}

fn result(job: &JobRecord, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if !job.status.is_settled() {
        anyhow::bail!(
            "job {} is {}: its result comes when the turn ends. Follow it with \
             `codex-async-mcp jobs events {} --follow`",
            job.id,
            job.status.as_str(),
            job.id
        );
    }
    if json {
        let answer = serde_json::json!({
            "job_id": job.id, "status": job.status, "turn": job.turns,
            "result": job.last_message, "error": job.error,
        });
        serde_json::to_writer(&mut *out, &answer)?;
        writeln!(out)?;
        return Ok(());
    }
    match (&job.last_message, &job.error) {
        (_, Some(error)) if job.status != JobStatus::Completed => anyhow::bail!(
            "job {}'s turn {} ended {}: {error}",
            job.id,
            job.turns,
            job.status.as_str()
        ),
        (Some(text), _) => writeln!(out, "{text}")?,
        (None, _) => writeln!(out)?,
    }
    Ok(())
}

/// How events are written.
#[derive(Clone, Copy)]
struct Shown {
    json: bool,
    style: Style,
    deltas: bool,
}

#[allow(clippy::too_many_arguments)] // the command's own arguments, passed through
fn events(
    store: &SqliteStore,
    dir: &Path,
    job: &JobId,
    mut after: u64,
    follow: bool,
    shown: Shown,
    out: &mut dyn Write,
    note: &mut dyn Write,
) -> anyhow::Result<()> {
    loop {
        // The status is read before the events: once it says settled, the page read after it
        // holds everything up to the settling.
        let settled = store
            .read_job(job)?
            .is_none_or(|record| record.status.is_settled());
        let page = store.read_events(
            job,
            &EventQuery {
                after,
                limit: PAGE,
                include_deltas: shown.deltas,
                ..EventQuery::default()
            },
        )?;
        for event in page.events {
            write_event(event, shown, out)?;
        }
        out.flush()?;
        after = page.cursor;
        if page.has_more {
            continue;
        }
        if !follow || settled {
            return Ok(());
        }
        if state_dir::server_pid(dir).is_none() {
            no_server_note(dir, note)?;
            return Ok(());
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}

fn write_event(event: Event, shown: Shown, out: &mut dyn Write) -> std::io::Result<()> {
    // As `job_events` shows it: our fields, without Codex's message.
    let event = server::view(event, false);
    if shown.json {
        serde_json::to_writer(&mut *out, &event)?;
        return writeln!(out);
    }
    let time = event.at.get(11..19).unwrap_or(&event.at);
    writeln!(
        out,
        "{:>6}  {time}  {}  {}",
        event.seq,
        shown.style.kind(event.kind.as_str()),
        summary(&event.data)
    )
}

/// The one field that says most about an event, else its fields as JSON, on one line.
fn summary(data: &Value) -> String {
    const TELLING: [&str; 7] = [
        "text", "command", "result", "error", "reason", "question", "path",
    ];
    let telling = TELLING
        .iter()
        .find_map(|key| data.get(*key).and_then(Value::as_str));
    let line = match telling {
        Some(text) => one_line(text),
        None => data.to_string(),
    };
    shorten(&line, SUMMARY_CHARS)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Colour on a terminal (unless `NO_COLOR` is set), plain text elsewhere.
#[derive(Clone, Copy)]
struct Style {
    colour: bool,
}

impl Style {
    fn for_stdout(json: bool) -> Self {
        use std::io::IsTerminal as _;
        Self {
            colour: !json
                && std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    /// `status`, padded to `width`, in its colour.
    fn status(self, status: JobStatus, width: usize) -> String {
        let text = format!("{:<width$}", status.as_str());
        if !self.colour {
            return text;
        }
        let code = match status {
            JobStatus::Completed => "32",
            JobStatus::Failed | JobStatus::Interrupted => "31",
            JobStatus::Running | JobStatus::Queued | JobStatus::InputRequired => "33",
            JobStatus::Cancelled => "90",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    fn kind(self, kind: &str) -> String {
        let text = format!("{kind:<22}");
        if self.colour {
            format!("\x1b[36m{text}\x1b[0m")
        } else {
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_a_terminal_statuses_are_coloured_and_elsewhere_plain() {
        let coloured = Style { colour: true };
        assert_eq!(
            coloured.status(JobStatus::Completed, 10),
            "\x1b[32mcompleted \x1b[0m"
        );
        assert!(
            coloured
                .status(JobStatus::Failed, 0)
                .starts_with("\x1b[31m")
        );
        let plain = Style { colour: false };
        assert_eq!(plain.status(JobStatus::Running, 8), "running ");
        assert_eq!(plain.kind("turn_completed").trim_end(), "turn_completed");
    }

    #[test]
    fn an_event_line_says_its_most_telling_field_on_one_line() {
        assert_eq!(
            summary(&serde_json::json!({"text": "two\nlines", "x": 1})),
            "two lines"
        );
        assert_eq!(
            summary(&serde_json::json!({"turn_id": "t"})),
            "{\"turn_id\":\"t\"}"
        );
        let long = summary(&serde_json::json!({"command": "x".repeat(500)}));
        assert!(long.contains("[truncated 340 of 500 chars]"), "{long}");
    }
}
