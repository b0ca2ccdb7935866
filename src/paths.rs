//! Where things live on this machine, by the conventions of the programs involved: the user's
//! home, the XDG base directories, Codex's home.

use std::path::PathBuf;

/// `$HOME`, when it is an absolute path.
pub fn home() -> Option<PathBuf> {
    absolute_var("HOME")
}

/// An XDG base directory: `$var` when it is absolute, else `~/under_home`.
pub fn xdg(var: &str, under_home: &str) -> Option<PathBuf> {
    absolute_var(var).or_else(|| home().map(|home| home.join(under_home)))
}

/// Codex's home: `$CODEX_HOME`, else `~/.codex`.
pub fn codex_home() -> Option<PathBuf> {
    std::env::var_os("CODEX_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|home| home.join(".codex")))
}

fn absolute_var(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}
