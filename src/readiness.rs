//! Whether this set-up can serve, as checks that each say ok, or the problem and its fix. The
//! checks every part of the program can make without starting anything: `doctor` runs them with
//! its own, and a running server reports them to MCP clients.

use std::path::Path;

use serde::Serialize;

/// What one check found.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Problem,
}

impl Check {
    pub(crate) fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub(crate) fn problem(
        name: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name,
            status: Status::Problem,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Codex's `config.toml`, parsed; `None` when there is none.
fn codex_config(home: &Path) -> Result<Option<toml::Table>, String> {
    let path = home.join("config.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .parse::<toml::Table>()
            .map(Some)
            .map_err(|e| format!("{} is not valid TOML: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{} cannot be read: {e}", path.display())),
    }
}

/// Codex's config and whether Codex can reach a model, from one read of its `config.toml`.
pub(crate) fn codex_config_checks() -> [Check; 2] {
    let Some(home) = crate::paths::codex_home() else {
        return [
            Check::problem(
                "codex config",
                "neither CODEX_HOME nor HOME is set",
                "set CODEX_HOME to Codex's directory (usually ~/.codex)",
            ),
            Check::problem(
                "model",
                "no CODEX_HOME or HOME to find a login in",
                MODEL_FIX,
            ),
        ];
    };
    let (config_check, config) = match codex_config(&home) {
        Ok(Some(config)) => (
            Check::ok(
                "codex config",
                format!("{} loads", home.join("config.toml").display()),
            ),
            config,
        ),
        Ok(None) => (
            Check::ok(
                "codex config",
                format!("{} has no config.toml: Codex's defaults", home.display()),
            ),
            toml::Table::new(),
        ),
        Err(problem) => (
            Check::problem(
                "codex config",
                problem,
                "fix the file (Codex refuses to start with it), or point CODEX_HOME elsewhere",
            ),
            toml::Table::new(),
        ),
    };
    [config_check, model_check(&home, &config)]
}

/// Providers that run models locally and need no key.
const LOCAL_PROVIDERS: [&str; 3] = ["oss", "ollama", "lmstudio"];

const MODEL_FIX: &str = "run `codex login`, set OPENAI_API_KEY, or configure a model_provider in \
                         Codex's config.toml";

/// The model provider `config` names (`openai` when it names none), and its
/// `[model_providers]` entry.
fn provider(config: &toml::Table) -> (&str, Option<&toml::Value>) {
    let name = config
        .get("model_provider")
        .and_then(toml::Value::as_str)
        .unwrap_or("openai");
    let entry = config
        .get("model_providers")
        .and_then(|providers| providers.get(name));
    (name, entry)
}

/// The environment variable a provider's entry reads its key from.
fn env_key(entry: &toml::Value) -> Option<&str> {
    entry.get("env_key").and_then(toml::Value::as_str)
}

/// Whether Codex can reach a model: a login, an API key, or a configured provider whose key is
/// set. Checked in this process's environment, which is the server's when it runs from here.
fn model_check(home: &Path, config: &toml::Table) -> Check {
    let (provider, entry) = provider(config);
    if provider != "openai" {
        if LOCAL_PROVIDERS.contains(&provider) {
            return Check::ok("model", format!("the local provider {provider:?}"));
        }
        let Some(entry) = entry else {
            return Check::problem(
                "model",
                format!(
                    "model_provider is {provider:?}, but config.toml has no [model_providers.{provider}]"
                ),
                format!(
                    "add [model_providers.{provider}] to {}, or remove model_provider",
                    home.join("config.toml").display()
                ),
            );
        };
        return match env_key(entry) {
            Some(key) if std::env::var_os(key).is_none_or(|v| v.is_empty()) => Check::problem(
                "model",
                format!("the provider {provider:?} reads its key from {key}, which is not set"),
                format!(
                    "set {key} in the environment the server runs in (a client's MCP entry can \
                     pass it as env)"
                ),
            ),
            Some(key) => Check::ok(
                "model",
                format!("the provider {provider:?}, its key in {key}"),
            ),
            None => Check::ok(
                "model",
                format!("the provider {provider:?} (no key needed)"),
            ),
        };
    }
    if home.join("auth.json").is_file() {
        return Check::ok("model", "logged in (auth.json)");
    }
    if std::env::var_os("OPENAI_API_KEY").is_some_and(|v| !v.is_empty()) {
        return Check::ok("model", "OpenAI, the key in OPENAI_API_KEY");
    }
    Check::problem(
        "model",
        format!(
            "no login in {} and no OPENAI_API_KEY: every turn would fail",
            home.display()
        ),
        MODEL_FIX,
    )
}

/// The environment variable the configured model provider reads its key from, if it names one.
pub(crate) fn provider_key() -> Option<String> {
    let config = codex_config(&crate::paths::codex_home()?).ok().flatten()?;
    env_key(provider(&config).1?).map(str::to_owned)
}
