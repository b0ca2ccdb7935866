//! Shared test support: the mock model server, the real Codex install, and the server under test.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

pub mod codex_install;
pub mod http;
pub mod mock_model;
pub mod raw;
pub mod server;

/// The scriptable fake `codex` (see the file for its script).
pub fn fake_codex() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fake_codex.py")
}
