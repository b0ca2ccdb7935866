//! The real Codex CLI for end-to-end tests, installed from npm into a cache under `target/` on
//! first use (never committed). A file lock keeps parallel test binaries from installing twice.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The last Codex with `codex mcp-server`.
pub const CODEX_MCP_SERVER_VERSION: &str = "0.153.4";

/// The `target/` directory the tests were built into.
pub fn target_dir() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_codex-async-mcp"));
    // target/<profile>/codex-async-mcp
    exe.parent()
        .and_then(Path::parent)
        .expect("binary lives in target/<profile>/")
        .to_path_buf()
}

/// The native Codex binary of `version`, installing `@openai/codex@version` if needed.
///
/// The npm package's `codex` is a Node shim; the native binary it runs starts faster and uses
/// less memory, so the tests run that directly.
pub fn codex(version: &str) -> PathBuf {
    let dir = target_dir().join("codex-cache").join(version);
    std::fs::create_dir_all(&dir).expect("create the codex cache");
    let lock = File::create(dir.join(".lock")).expect("create the install lock");
    lock.lock().expect("take the install lock");
    if let Some(found) = find_native(&dir) {
        return found;
    }
    npm_install(&dir, &format!("@openai/codex@{version}"));
    find_native(&dir).unwrap_or_else(|| panic!("no native codex binary under {}", dir.display()))
}

/// The MCP Inspector's command-line client (`mcp-inspector`) at `version`, installed from npm into
/// the same cache on first use.
pub fn inspector(version: &str) -> PathBuf {
    npm_tool(
        "inspector-cache",
        "@modelcontextprotocol/inspector",
        version,
        "mcp-inspector",
    )
}

/// The MCP conformance suite's CLI (`conformance`) at `version`, installed from npm on first
/// use. 0.1.12 is the newest that runs on Node.js 20 (later ones import `fs.globSync`, Node 22).
pub fn conformance(version: &str) -> PathBuf {
    npm_tool(
        "conformance-cache",
        "@modelcontextprotocol/conformance",
        version,
        "conformance",
    )
}

/// Claude Code's CLI (`claude`) at `version`, installed from npm on first use.
pub fn claude_code(version: &str) -> PathBuf {
    npm_tool(
        "claude-cache",
        "@anthropic-ai/claude-code",
        version,
        "claude",
    )
}

/// The command `bin` of the npm `package` at `version`, installed under `target/<cache>/` on
/// first use.
fn npm_tool(cache: &str, package: &str, version: &str, bin: &str) -> PathBuf {
    let dir = target_dir().join(cache).join(version);
    std::fs::create_dir_all(&dir).expect("create the npm cache");
    let lock = File::create(dir.join(".lock")).expect("create the install lock");
    lock.lock().expect("take the install lock");
    let bin = dir.join("node_modules/.bin").join(bin);
    if bin.exists() {
        return bin;
    }
    npm_install(&dir, &format!("{package}@{version}"));
    bin
}

/// Installs `package` (`name@version`) under `dir` without touching any package.json.
fn npm_install(dir: &Path, package: &str) {
    let status = Command::new("npm")
        .args([
            "install",
            "--no-save",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(dir)
        .arg(package)
        .status()
        .expect("run npm (is Node.js installed?)");
    assert!(status.success(), "npm install {package} failed: {status}");
}

/// `node_modules/@openai/codex-<platform>/vendor/<triple>/bin/codex`.
fn find_native(dir: &Path) -> Option<PathBuf> {
    let scope = dir.join("node_modules").join("@openai");
    for package in std::fs::read_dir(scope).ok()?.flatten() {
        let vendor = package.path().join("vendor");
        for triple in std::fs::read_dir(vendor).into_iter().flatten().flatten() {
            let bin = triple.path().join("bin").join("codex");
            if bin.is_file() {
                return Some(bin);
            }
        }
    }
    None
}
