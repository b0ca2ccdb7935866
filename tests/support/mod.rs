//! Shared test support: the mock model server, the real Codex install, and the server under test.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

pub mod bench;
pub mod codex_install;
pub mod git;
pub mod http;
pub mod mock_model;
pub mod raw;
pub mod real;
pub mod server;

/// The scriptable fake `codex` (see the file for its script).
pub fn fake_codex() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fake_codex.py")
}

/// One `#[tokio::test]` per case and flavor, `group::flavor_module::case`, calling
/// `crate::cases::case(crate::FLAVOR)`.
#[allow(unused_macros)] // only the suites of real-Codex cases use it
macro_rules! suite {
    ($group:ident, [$($module:ident = $flavor:ident),* $(,)?], $cases:tt) => {
        mod $group {
            $( $crate::support::suite!(@flavor $module, $flavor, $cases); )*
        }
    };
    (@flavor $module:ident, $flavor:ident, [$($case:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::cases::$case(crate::$flavor).await
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use suite;
