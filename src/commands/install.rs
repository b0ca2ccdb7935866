//! `codex-async-mcp install CLIENT` and `uninstall CLIENT`: register this server with a client
//! the way its users do, and take it out again.
//!
//! - Claude Code: `claude mcp add -s user` / `claude mcp remove -s user` (its own command).
//! - Codex: an `[mcp_servers.NAME]` table in `$CODEX_HOME/config.toml`, edited in place so the
//!   rest of the file, comments included, stays as it was.
//! - Cursor: `mcpServers.NAME` in `~/.cursor/mcp.json`; Claude Desktop: the same in its
//!   `claude_desktop_config.json`.
//!
//! An entry of that name that is already there is never replaced: install refuses and says how
//! to go on. Uninstall removes only an entry that runs or reaches this server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::cli::{Cli, Client, InstallArgs, InstallTransport, UninstallArgs};

/// What the worker Codex may need from the environment it is started in, passed through by name
/// (never copied into a file) where the client takes names.
const PASSED_THROUGH: [&str; 3] = ["OPENAI_API_KEY", "CODEX_BIN", "CODEX_ASYNC_MCP_STATE_DIR"];

/// How the client reaches the server.
enum Entry {
    Stdio {
        command: String,
        args: Vec<String>,
    },
    Http {
        url: String,
        sse: bool,
        token: Option<String>,
    },
}

pub fn install(cli: &Cli, args: &InstallArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let entry = entry(cli, args)?;
    match args.client {
        Client::ClaudeCode => claude_add(&args.name, &entry, args.dry_run, out),
        Client::Codex => codex_add(&args.name, &entry, args.dry_run, out),
        Client::Cursor => json_add(&cursor_file()?, &args.name, &entry, args.dry_run, out),
        Client::ClaudeDesktop => {
            if !matches!(entry, Entry::Stdio { .. }) {
                anyhow::bail!(
                    "Claude Desktop starts its servers itself and takes no URL in its config: \
                     install it with --transport stdio"
                );
            }
            json_add(&desktop_file()?, &args.name, &entry, args.dry_run, out)
        }
    }
}

pub fn uninstall(args: &UninstallArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    match args.client {
        Client::ClaudeCode => claude_remove(&args.name, args.dry_run, out),
        Client::Codex => codex_remove(&args.name, args.dry_run, out),
        Client::Cursor => json_remove(&cursor_file()?, &args.name, args.dry_run, out),
        Client::ClaudeDesktop => json_remove(&desktop_file()?, &args.name, args.dry_run, out),
    }
}

fn entry(cli: &Cli, args: &InstallArgs) -> anyhow::Result<Entry> {
    Ok(match args.transport {
        InstallTransport::Stdio => {
            let exe = std::env::current_exe()
                .and_then(|p| p.canonicalize())
                .map_err(|e| anyhow::anyhow!("cannot tell where this program is ({e})"))?;
            Entry::Stdio {
                command: exe.display().to_string(),
                args: args.server_args.clone(),
            }
        }
        InstallTransport::Http | InstallTransport::Sse => {
            let sse = args.transport == InstallTransport::Sse;
            let url = match &args.url {
                Some(url) => url.clone(),
                None => {
                    let host = if cli.host.contains(':') {
                        format!("[{}]", cli.host)
                    } else {
                        cli.host.clone()
                    };
                    let mount = cli.mount_path.trim_end_matches('/');
                    let path = if sse {
                        format!("{mount}/sse")
                    } else {
                        mount.to_owned()
                    };
                    format!("http://{host}:{}{path}", cli.port)
                }
            };
            Entry::Http {
                url,
                sse,
                token: cli.auth_token.clone().filter(|t| !t.is_empty()),
            }
        }
    })
}

/// Whether an entry found in a client's config runs or reaches this server.
fn is_ours(found: &Value) -> bool {
    let names_us = |v: &Value| v.as_str().is_some_and(|s| s.contains("codex-async-mcp"));
    names_us(&found["command"]) || found.get("url").is_some_and(Value::is_string)
}

// ---- Claude Code: its own command --------------------------------------------------------

fn claude_bin() -> String {
    std::env::var("CLAUDE_BIN").unwrap_or_else(|_| "claude".to_owned())
}

fn claude_add(name: &str, entry: &Entry, dry_run: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut args: Vec<String> = vec!["mcp".into(), "add".into(), "-s".into(), "user".into()];
    match entry {
        Entry::Stdio {
            command,
            args: rest,
        } => {
            args.push(name.to_owned());
            args.push("--".into());
            args.push(command.clone());
            args.extend(rest.iter().cloned());
        }
        Entry::Http { url, sse, token } => {
            args.push("--transport".into());
            args.push(if *sse { "sse" } else { "http" }.into());
            args.push(name.to_owned());
            args.push(url.clone());
            if let Some(token) = token {
                args.push("--header".into());
                args.push(format!("Authorization: Bearer {token}"));
            }
        }
    }
    run_claude(&args, dry_run, out)
}

fn claude_remove(name: &str, dry_run: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let file = home()?.join(".claude.json");
    let found = read_json(&file)?
        .and_then(|config| config["mcpServers"].get(name).cloned())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "Claude Code has no user-scope server {name:?} ({})",
                file.display()
            )
        })?;
    refuse_unless_ours(name, &found, &file)?;
    let args = ["mcp", "remove", "-s", "user", name].map(str::to_owned);
    run_claude(&args, dry_run, out)
}

fn run_claude(args: &[String], dry_run: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let bin = claude_bin();
    let shown = std::iter::once(bin.as_str())
        .chain(args.iter().map(String::as_str))
        .map(shell_word)
        .collect::<Vec<_>>()
        .join(" ");
    if dry_run {
        writeln!(out, "would run: {shown}")?;
        return Ok(());
    }
    writeln!(out, "running: {shown}")?;
    let ran = Command::new(&bin).args(args).output().map_err(|e| {
        anyhow::anyhow!(
            "could not run Claude Code's `{bin}` ({e}): install Claude Code, or set CLAUDE_BIN"
        )
    })?;
    out.write_all(&ran.stdout)?;
    if !ran.status.success() {
        anyhow::bail!(
            "`{shown}` failed: {}{}",
            String::from_utf8_lossy(&ran.stderr).trim(),
            String::from_utf8_lossy(&ran.stdout).trim()
        );
    }
    Ok(())
}

fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

// ---- Codex: its config.toml, edited in place ---------------------------------------------

fn codex_home() -> anyhow::Result<PathBuf> {
    crate::paths::codex_home()
        .ok_or_else(|| anyhow::anyhow!("neither CODEX_HOME nor HOME is set to find Codex's home"))
}

/// Codex's `config.toml` (`text`, read from `file`), for editing in place.
fn codex_document(file: &Path, text: &str) -> anyhow::Result<toml_edit::DocumentMut> {
    text.parse()
        .map_err(|e| anyhow::anyhow!("{} is not valid TOML ({e}); fix it first", file.display()))
}

fn codex_add(name: &str, entry: &Entry, dry_run: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let codex_home = codex_home()?;
    let file = codex_home.join("config.toml");
    let mut document = codex_document(&file, &read_text(&file)?.unwrap_or_default())?;
    let servers = document
        .entry("mcp_servers")
        .or_insert_with(|| {
            let mut table = toml_edit::Table::new();
            table.set_implicit(true);
            toml_edit::Item::Table(table)
        })
        .as_table_mut()
        .ok_or_else(|| anyhow::anyhow!("{}: mcp_servers is not a table", file.display()))?;
    if servers.contains_key(name) {
        anyhow::bail!(
            "{} already has [mcp_servers.{name}]; it is left as it is. Remove it (`codex-async-mcp \
             uninstall codex --name {name}`, or by hand), or install under another --name",
            file.display()
        );
    }
    let mut table = toml_edit::Table::new();
    match entry {
        Entry::Stdio { command, args } => {
            table["command"] = toml_edit::value(command.as_str());
            table["args"] = toml_edit::value(args.iter().collect::<toml_edit::Array>());
            // Codex hands a stdio server only HOME, PATH and a few more: the worker Codex needs
            // its home, and its keys by name (Codex passes them through; no secret is written).
            let mut env = toml_edit::InlineTable::new();
            env.insert("CODEX_HOME", codex_home.display().to_string().into());
            table["env"] = toml_edit::value(env);
            let mut names: Vec<String> = PASSED_THROUGH
                .iter()
                .map(|n| (*n).to_owned())
                .chain(crate::readiness::provider_key())
                .filter(|n| std::env::var_os(n).is_some())
                .collect();
            names.sort();
            names.dedup();
            if !names.is_empty() {
                table["env_vars"] = toml_edit::value(names.iter().collect::<toml_edit::Array>());
            }
            table["required"] = toml_edit::value(true);
            table["startup_timeout_sec"] = toml_edit::value(30);
            // Above job_wait's 300 s cap: Codex's timeout does not stretch with progress.
            table["tool_timeout_sec"] = toml_edit::value(330);
        }
        Entry::Http { url, sse, token } => {
            if *sse {
                anyhow::bail!(
                    "Codex speaks stdio and streamable HTTP, not legacy SSE: use --transport http"
                );
            }
            table["url"] = toml_edit::value(url.as_str());
            if token.is_some() {
                table["bearer_token_env_var"] = toml_edit::value("CODEX_ASYNC_MCP_TOKEN");
            }
        }
    }
    // Without it, `codex exec` declines every call of ours under approval_policy "never".
    table["default_tools_approval_mode"] = toml_edit::value("approve");
    let shown = format!("[mcp_servers.{name}]\n{table}");
    servers.insert(name, toml_edit::Item::Table(table));
    apply(
        &file,
        &document.to_string(),
        Change::Add(&shown),
        dry_run,
        out,
    )?;
    if matches!(entry, Entry::Http { token: Some(_), .. }) {
        writeln!(
            out,
            "Codex reads the token from CODEX_ASYNC_MCP_TOKEN: set it where Codex runs"
        )?;
    }
    Ok(())
}

fn codex_remove(name: &str, dry_run: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let file = codex_home()?.join("config.toml");
    let text = read_text(&file)?
        .ok_or_else(|| anyhow::anyhow!("there is no {}: nothing to remove", file.display()))?;
    let mut document = codex_document(&file, &text)?;
    let servers = document
        .get_mut("mcp_servers")
        .and_then(toml_edit::Item::as_table_mut);
    let Some(servers) = servers.filter(|s| s.contains_key(name)) else {
        anyhow::bail!("{} has no [mcp_servers.{name}]", file.display());
    };
    let found = servers
        .get(name)
        .and_then(|item| item.as_table())
        .map(|t| {
            let text = |key| t.get(key).and_then(|v| v.as_str()).map(str::to_owned);
            json!({"command": text("command"), "url": text("url")})
        })
        .unwrap_or(Value::Null);
    refuse_unless_ours(name, &found, &file)?;
    let shown = format!("[mcp_servers.{name}]");
    servers.remove(name);
    let empty = servers.is_empty();
    if empty {
        document.remove("mcp_servers");
    }
    apply(
        &file,
        &document.to_string(),
        Change::Remove(&shown),
        dry_run,
        out,
    )
}

// ---- Cursor and Claude Desktop: mcpServers in a JSON file --------------------------------

fn cursor_file() -> anyhow::Result<PathBuf> {
    Ok(home()?.join(".cursor").join("mcp.json"))
}

fn desktop_file() -> anyhow::Result<PathBuf> {
    let config = if cfg!(target_os = "macos") {
        home()?.join("Library/Application Support")
    } else {
        crate::paths::xdg("XDG_CONFIG_HOME", ".config")
            .ok_or_else(|| anyhow::anyhow!("HOME is not set to an absolute path"))?
    };
    Ok(config.join("Claude/claude_desktop_config.json"))
}

fn json_add(
    file: &Path,
    name: &str,
    entry: &Entry,
    dry_run: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut config = read_json(file)?.unwrap_or_else(|| json!({}));
    let Some(root) = config.as_object_mut() else {
        anyhow::bail!("{} is not a JSON object; fix it first", file.display());
    };
    let servers = root.entry("mcpServers").or_insert_with(|| json!({}));
    let Some(servers) = servers.as_object_mut() else {
        anyhow::bail!(
            "{}: mcpServers is not an object; fix it first",
            file.display()
        );
    };
    if servers.contains_key(name) {
        anyhow::bail!(
            "{} already has the server {name:?}; it is left as it is. Remove it (`codex-async-mcp \
             uninstall … --name {name}`, or by hand), or install under another --name",
            file.display()
        );
    }
    let added = match entry {
        Entry::Stdio { command, args } => json!({"command": command, "args": args}),
        Entry::Http { url, token, .. } => {
            let mut added = json!({"url": url});
            if token.is_some() {
                added["headers"] = json!({"Authorization": "Bearer ${env:CODEX_ASYNC_MCP_TOKEN}"});
            }
            added
        }
    };
    let shown = serde_json::to_string_pretty(&json!({ name: added }))?;
    servers.insert(name.to_owned(), added);
    let text = serde_json::to_string_pretty(&config)? + "\n";
    apply(file, &text, Change::Add(&shown), dry_run, out)
}

fn json_remove(file: &Path, name: &str, dry_run: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut config = read_json(file)?
        .ok_or_else(|| anyhow::anyhow!("there is no {}: nothing to remove", file.display()))?;
    let found = config["mcpServers"]
        .get(name)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("{} has no server {name:?}", file.display()))?;
    refuse_unless_ours(name, &found, file)?;
    if let Some(servers) = config["mcpServers"].as_object_mut() {
        servers.remove(name);
    }
    let text = serde_json::to_string_pretty(&config)? + "\n";
    let removed = format!("the server {name:?}");
    apply(file, &text, Change::Remove(&removed), dry_run, out)
}

// ---- shared --------------------------------------------------------------------------------

fn home() -> anyhow::Result<PathBuf> {
    crate::paths::home().ok_or_else(|| anyhow::anyhow!("HOME is not set to an absolute path"))
}

fn read_text(file: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read {} ({e})", file.display())),
    }
}

fn read_json(file: &Path) -> anyhow::Result<Option<Value>> {
    read_text(file)?
        .map(|text| {
            serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!("{} is not valid JSON ({e}); fix it first", file.display())
            })
        })
        .transpose()
}

fn refuse_unless_ours(name: &str, found: &Value, file: &Path) -> anyhow::Result<()> {
    if is_ours(found) {
        return Ok(());
    }
    anyhow::bail!(
        "the server {name:?} in {} is not codex-async-mcp ({found}); it is left as it is",
        file.display()
    )
}

/// What a change does to a client's file, as said to the user.
enum Change<'a> {
    /// Adds this entry, shown as written.
    Add(&'a str),
    /// Removes the entry so named.
    Remove(&'a str),
}

/// Says what `change` does to `file` and writes `text` as its new content (the file and its
/// directory made if missing); on a dry run only says it.
fn apply(
    file: &Path,
    text: &str,
    change: Change<'_>,
    dry_run: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let shown = file.display();
    match (change, dry_run) {
        (Change::Add(entry), true) => writeln!(out, "would add to {shown}:\n{}", entry.trim_end()),
        (Change::Add(entry), false) => writeln!(out, "added to {shown}:\n{}", entry.trim_end()),
        (Change::Remove(entry), true) => writeln!(out, "would remove {entry} from {shown}"),
        (Change::Remove(entry), false) => writeln!(out, "removed {entry} from {shown}"),
    }?;
    if dry_run {
        return Ok(());
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot make {} ({e})", dir.display()))?;
    }
    replace(file, text)
}

/// Replaces `file` whole or not at all (a new file renamed over it), keeping its mode.
fn replace(file: &Path, text: &str) -> anyhow::Result<()> {
    let fail = |e: std::io::Error| anyhow::anyhow!("cannot write {} ({e})", file.display());
    let new = file.with_extension("codex-async-mcp-new");
    std::fs::write(&new, text).map_err(fail)?;
    if let Ok(meta) = std::fs::metadata(file) {
        std::fs::set_permissions(&new, meta.permissions()).map_err(fail)?;
    }
    std::fs::rename(&new, file).map_err(fail)
}
