//! Which Codex a binary is, from `codex --version`.
//!
//! The exit code cannot be trusted for this: Codex 0.169 takes `codex mcp-server` as a prompt for
//! its TUI and exits 0 after an error, so the version string decides.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// The last Codex that has `codex mcp-server`.
pub const LAST_WITH_MCP_SERVER: Version = Version(0, 153, u32::MAX);

/// How long `codex --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(
        "the Codex binary `{bin}` was not found. Install Codex with `npm install -g @openai/codex@latest`, \
         or pass --codex-bin /path/to/codex (or set CODEX_BIN)"
    )]
    NotFound { bin: String },
    #[error("could not run `{bin} --version`: {reason}. Check --codex-bin (or CODEX_BIN)")]
    NotRunnable { bin: String, reason: String },
    #[error(
        "`{bin} --version` printed {printed:?}, which is not a Codex version. \
         Does --codex-bin (or CODEX_BIN) point at the Codex CLI?"
    )]
    NotCodex { bin: String, printed: String },
    #[error(
        "Codex {version} (`{bin}`) has no `codex mcp-server`: it was removed in Codex 0.154. \
         Use --backend auto or app-server with this Codex, or install the last Codex that has it \
         (`npm install -g @openai/codex@0.153.4`) and point --codex-bin (or CODEX_BIN) at it"
    )]
    NoMcpServer { bin: String, version: Version },
}

/// Runs `bin --version` and parses `codex-cli X.Y.Z`.
pub async fn version(bin: &str) -> Result<Version, DetectError> {
    let output = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(VERSION_TIMEOUT, output).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DetectError::NotFound {
                bin: bin.to_owned(),
            });
        }
        Ok(Err(e)) => {
            return Err(DetectError::NotRunnable {
                bin: bin.to_owned(),
                reason: e.to_string(),
            });
        }
        Err(_) => {
            return Err(DetectError::NotRunnable {
                bin: bin.to_owned(),
                reason: format!("it did not finish within {} s", VERSION_TIMEOUT.as_secs()),
            });
        }
    };
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    parse_version(&printed).ok_or(DetectError::NotCodex {
        bin: bin.to_owned(),
        printed,
    })
}

/// Parses the first line of `codex --version`, e.g. `codex-cli 0.153.4`.
pub fn parse_version(printed: &str) -> Option<Version> {
    let rest = printed.lines().next()?.trim().strip_prefix("codex-cli ")?;
    let core = rest.split(['-', '+', ' ']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    let version = Version(parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_and_prerelease_versions() {
        assert_eq!(
            parse_version("codex-cli 0.153.4\n"),
            Some(Version(0, 153, 4))
        );
        assert_eq!(
            parse_version("codex-cli 0.170.0-alpha.2"),
            Some(Version(0, 170, 0))
        );
    }

    #[test]
    fn rejects_what_is_not_a_codex_version() {
        assert_eq!(parse_version("Python 3.11.7"), None);
        assert_eq!(parse_version("codex-cli"), None);
        assert_eq!(parse_version("codex-cli 1.2"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn mcp_server_ends_with_0_153() {
        assert!(Version(0, 153, 4) <= LAST_WITH_MCP_SERVER);
        assert!(Version(0, 154, 0) > LAST_WITH_MCP_SERVER);
    }
}
