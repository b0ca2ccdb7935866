//! `codex-async-mcp config`: the settings the server would run with, and where each comes from.

use std::io::Write;

use crate::config::Loaded;

pub fn print(loaded: &Loaded, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let settings = loaded.settings();
    if json {
        let file = loaded.file().map(|p| p.display().to_string());
        let report = serde_json::json!({"config_file": file, "settings": settings});
        serde_json::to_writer(&mut *out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    match loaded.file() {
        Some(file) => writeln!(out, "config file: {}", file.display())?,
        None => writeln!(
            out,
            "config file: none (--config, CODEX_ASYNC_MCP_CONFIG, or {})",
            crate::config::default_path()
                .map_or_else(|| "none".to_owned(), |p| p.display().to_string())
        )?,
    }
    let width = settings.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for setting in &settings {
        let value = setting.value.as_deref().unwrap_or("(none)");
        writeln!(out, "{:<width$}  {value}  [{}]", setting.name, setting.from)?;
    }
    Ok(())
}
