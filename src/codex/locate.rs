//! Finding the Codex binary to run.
//!
//! The `codex` that npm installs is a Node script that starts the native binary as its own child.
//! Running the native binary directly saves a Node process (about 43 MiB) and means the process we
//! kill, and that dies with us (`PR_SET_PDEATHSIG`), is Codex itself.

use std::path::{Path, PathBuf};

/// The native binary behind `bin` when `bin` is the npm shim, else `bin` as it was given.
pub fn native_binary(bin: &str) -> String {
    find_on_path(bin)
        .and_then(|path| std::fs::canonicalize(path).ok())
        .and_then(|script| behind_npm_shim(&script))
        .map(|native| native.to_string_lossy().into_owned())
        .unwrap_or_else(|| bin.to_owned())
}

/// `bin` itself if it names a path, else the first match on PATH.
fn find_on_path(bin: &str) -> Option<PathBuf> {
    if bin.contains('/') {
        return Some(PathBuf::from(bin));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(bin))
        .find(|candidate| candidate.is_file())
}

/// The start of the target triples this machine runs (`x86_64-unknown-linux-musl`, ...): the
/// npm package can hold binaries for other platforms beside ours.
fn this_platform() -> (&'static str, &'static str) {
    (std::env::consts::ARCH, std::env::consts::OS)
}

/// Whether a vendor folder named after a target triple is for this machine.
fn runs_here(triple: &str, (arch, os): (&str, &str)) -> bool {
    triple.starts_with(arch) && triple.contains(os)
}

/// For `.../@openai/codex/bin/codex.js`, the platform package's `vendor/<triple>/bin/codex` for
/// this machine, found the way Node's `require.resolve` would: in `node_modules` folders from the
/// package up.
fn behind_npm_shim(script: &Path) -> Option<PathBuf> {
    if script.file_name()? != "codex.js" {
        return None;
    }
    let package = script.parent()?.parent()?;
    let manifest = std::fs::read_to_string(package.join("package.json")).ok()?;
    let name = serde_json::from_str::<serde_json::Value>(&manifest).ok()?["name"].clone();
    if name != "@openai/codex" {
        return None;
    }
    let own_vendor = std::iter::once(package.join("vendor"));
    let platform_vendors = package
        .ancestors()
        .map(|dir| dir.join("node_modules").join("@openai"))
        .chain(package.parent().map(Path::to_path_buf))
        .filter_map(|scope| std::fs::read_dir(scope).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("codex-"))
        .map(|entry| entry.path().join("vendor"));
    let platform = this_platform();
    own_vendor
        .chain(platform_vendors)
        .filter_map(|vendor| std::fs::read_dir(vendor).ok())
        .flat_map(|triples| triples.flatten())
        .filter(|triple| runs_here(&triple.file_name().to_string_lossy(), platform))
        .map(|triple| triple.path().join("bin").join("codex"))
        .find(|native| native.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn the_npm_shim_leads_to_the_platform_binary() {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("node_modules/@openai");
        write(
            &modules.join("codex/package.json"),
            r#"{"name": "@openai/codex"}"#,
        );
        write(&modules.join("codex/bin/codex.js"), "// shim");
        let (arch, os) = this_platform();
        let native = modules.join(format!(
            "codex-linux-x64/vendor/{arch}-unknown-{os}-musl/bin/codex"
        ));
        write(&native, "binary");
        let shim = modules.join("codex/bin/codex.js");
        assert_eq!(
            native_binary(shim.to_str().unwrap()),
            native.to_str().unwrap()
        );
    }

    #[test]
    fn only_the_binary_for_this_platform_is_taken() {
        let here = ("x86_64", "linux");
        assert!(runs_here("x86_64-unknown-linux-musl", here));
        assert!(!runs_here("aarch64-unknown-linux-musl", here));
        assert!(!runs_here("x86_64-apple-darwin", here));
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("node_modules/@openai");
        write(
            &modules.join("codex/package.json"),
            r#"{"name": "@openai/codex"}"#,
        );
        write(&modules.join("codex/bin/codex.js"), "// shim");
        // Another platform's binary, listed first.
        write(
            &modules.join("codex/vendor/aaa-other-os/bin/codex"),
            "other",
        );
        let (arch, os) = this_platform();
        let ours = modules.join(format!("codex/vendor/{arch}-unknown-{os}-musl/bin/codex"));
        write(&ours, "ours");
        let shim = modules.join("codex/bin/codex.js");
        assert_eq!(
            native_binary(shim.to_str().unwrap()),
            ours.to_str().unwrap()
        );
    }

    #[test]
    fn anything_else_is_run_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("bin/codex.js");
        write(&other, "// not codex");
        write(
            &dir.path().join("package.json"),
            r#"{"name": "something-else"}"#,
        );
        assert_eq!(
            native_binary(other.to_str().unwrap()),
            other.to_str().unwrap()
        );
        assert_eq!(native_binary("/no/such/codex"), "/no/such/codex");
    }
}
