//! Settings from a TOML file, beneath the environment and the flags.
//!
//! The file's keys are the server's long flags (`max-concurrent-jobs = 8`, or with underscores).
//! Each becomes that flag's default, so clap keeps the order of precedence it already has: a flag
//! beats its environment variable, which beats the file, which beats the built-in default. The
//! file is `--config` (or `CODEX_ASYNC_MCP_CONFIG`), else `codex-async-mcp/config.toml` in the
//! user's config directory when it exists.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _};
use serde::Serialize;

use crate::cli::Cli;

/// The command line, read with the config file beneath it.
pub struct Loaded {
    pub cli: Cli,
    matches: ArgMatches,
    /// The file read, and the settings it gave.
    file: Option<(PathBuf, Vec<String>)>,
}

/// Arguments that are not settings.
const NOT_SETTINGS: [&str; 3] = ["help", "version", "config"];

/// Parses `args` (the program's name first) as the command line, with the config file's settings
/// as defaults. Clap's own errors (and `--help`) come back as [`clap::Error`] to print and exit
/// with; a bad file is an error that names it.
pub fn load(args: Vec<OsString>) -> Result<Loaded, LoadError> {
    let first = Cli::command().try_get_matches_from(&args)?;
    let explicit = first.get_one::<PathBuf>("config").cloned();
    let path = match explicit {
        Some(path) => Some(path),
        None => default_path().filter(|p| p.exists()),
    };
    let Some(path) = path else {
        let cli = Cli::from_arg_matches(&first)?;
        return Ok(Loaded {
            cli,
            matches: first,
            file: None,
        });
    };
    let table = read(&path)?;
    let mut command = Cli::command();
    let mut given = Vec::new();
    for (key, value) in &table {
        let id = key.replace('_', "-");
        let known = command.get_arguments().find(|a| {
            a.get_long() == Some(id.as_str()) && !NOT_SETTINGS.contains(&a.get_id().as_str())
        });
        let Some(arg) = known else {
            return Err(LoadError::File(format!(
                "{}: {key:?} is not a setting. `codex-async-mcp config` lists them",
                path.display()
            )));
        };
        let arg_id = arg.get_id().clone();
        let values = values_of(value).ok_or_else(|| {
            LoadError::File(format!(
                "{}: {key:?} must be a string, a number, a boolean or a list of them",
                path.display()
            ))
        })?;
        command = command.mut_arg(arg_id.clone(), |arg| arg.default_values(values));
        given.push(arg_id.to_string());
    }
    let matches = command.try_get_matches_from(&args).map_err(|e| {
        // A value the file gave is checked like one on the command line; say where it was.
        LoadError::File(format!(
            "{} (settings from {})",
            e.render().to_string().trim_end(),
            path.display()
        ))
    })?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(Loaded {
        cli,
        matches,
        file: Some((path, given)),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Clap's: print it as clap does (it knows `--help` from a mistake).
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error("{0}")]
    File(String),
}

/// `$XDG_CONFIG_HOME/codex-async-mcp/config.toml`, else `~/.config/codex-async-mcp/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    crate::paths::xdg("XDG_CONFIG_HOME", ".config")
        .map(|base| base.join("codex-async-mcp").join("config.toml"))
}

fn read(path: &Path) -> Result<toml::Table, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        LoadError::File(format!(
            "the config file {} cannot be read ({e}); fix --config (or CODEX_ASYNC_MCP_CONFIG)",
            path.display()
        ))
    })?;
    text.parse::<toml::Table>().map_err(|e| {
        LoadError::File(format!(
            "the config file {} is not TOML: {e}",
            path.display()
        ))
    })
}

/// A TOML value as the strings a flag takes; a list for a repeatable flag.
fn values_of(value: &toml::Value) -> Option<Vec<String>> {
    match value {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Integer(n) => Some(vec![n.to_string()]),
        toml::Value::Float(f) => Some(vec![f.to_string()]),
        toml::Value::Boolean(b) => Some(vec![b.to_string()]),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| values_of(item).and_then(|mut v| v.pop()))
            .collect(),
        toml::Value::Datetime(_) | toml::Value::Table(_) => None,
    }
}

/// One setting as it takes effect, and where it came from.
#[derive(Debug, Serialize)]
pub struct Setting {
    pub name: String,
    /// Its value(s) as given; a secret is shown as `(set)`.
    pub value: Option<String>,
    /// `flag`, `env NAME`, `config PATH` or `default`.
    pub from: String,
}

impl Loaded {
    /// Every setting of the server, in the order `--help` lists them.
    pub fn settings(&self) -> Vec<Setting> {
        let command = Cli::command();
        let mut settings = Vec::new();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            let Some(long) = arg.get_long() else { continue };
            if NOT_SETTINGS.contains(&id) {
                continue;
            }
            let values: Vec<String> = self
                .matches
                .get_raw(id)
                .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let secret = arg.is_hide_env_values_set();
            let value = match (values.is_empty(), secret) {
                (true, _) => None,
                (false, true) => Some("(set)".to_owned()),
                (false, false) => Some(values.join(", ")),
            };
            let from = match self.matches.value_source(id) {
                Some(ValueSource::CommandLine) => "flag".to_owned(),
                Some(ValueSource::EnvVariable) => match arg.get_env() {
                    Some(name) => format!("env {}", name.to_string_lossy()),
                    None => "env".to_owned(),
                },
                Some(ValueSource::DefaultValue) | None | Some(_) => match &self.file {
                    Some((path, given)) if given.iter().any(|g| g == id) => {
                        format!("config {}", path.display())
                    }
                    _ => "default".to_owned(),
                },
            };
            settings.push(Setting {
                name: long.to_owned(),
                value,
                from,
            });
        }
        settings
    }

    /// The config file read, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_ref().map(|(path, _)| path.as_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_file(text: &str, flags: &[&str]) -> Result<Loaded, LoadError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let mut args: Vec<OsString> = vec!["codex-async-mcp".into(), "--config".into()];
        args.push(path.into_os_string());
        args.extend(flags.iter().map(OsString::from));
        load(args)
    }

    /// Where the setting `name` came from.
    fn from(loaded: &Loaded, name: &str) -> String {
        let setting = loaded.settings().into_iter().find(|s| s.name == name);
        setting.unwrap().from
    }

    #[test]
    fn every_setting_of_the_sample_file_is_one_the_server_takes() {
        let sample = include_str!("../config/codex-async-mcp.toml");
        let uncommented: String = sample
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.contains(" = ") && !line.contains("..."))
            .map(|line| format!("{line}\n"))
            .collect();
        assert!(uncommented.lines().count() > 25, "{uncommented}");
        let loaded = load_file(&uncommented, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.cli.max_concurrent_jobs, 4);
        assert!(from(&loaded, "max-concurrent-jobs").starts_with("config "));
    }

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        let loaded = load_file(
            "max-concurrent-jobs = 7\nport = 9000\n",
            &["--port", "9001"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.cli.max_concurrent_jobs, 7);
        assert_eq!(loaded.cli.port, 9001);
        assert_eq!(from(&loaded, "port"), "flag");
        assert!(from(&loaded, "max-concurrent-jobs").starts_with("config "));
        assert_eq!(from(&loaded, "max-sessions"), "default");
    }

    #[test]
    fn an_unknown_key_or_a_bad_value_names_the_file() {
        let unknown = load_file("max-concurent-jobs = 7\n", &[])
            .err()
            .unwrap()
            .to_string();
        assert!(
            unknown.contains("\"max-concurent-jobs\" is not a setting"),
            "{unknown}"
        );
        assert!(unknown.contains("config.toml"), "{unknown}");
        let bad = load_file("max-concurrent-jobs = 0\n", &[])
            .err()
            .unwrap()
            .to_string();
        assert!(
            bad.contains("--max-concurrent-jobs") && bad.contains("config.toml"),
            "{bad}"
        );
        let not_toml = load_file("max-concurrent-jobs = \n", &[])
            .err()
            .unwrap()
            .to_string();
        assert!(not_toml.contains("is not TOML"), "{not_toml}");
    }
}
