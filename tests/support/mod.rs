//! Shared test support: the mock model server, the real Codex install, and the server under test.
#![allow(dead_code)]

pub mod codex_install;
pub mod mock_model;
pub mod server;
