//! The real Codex against a fresh mock model, for the end-to-end suites: which Codex and
//! backend ([`Flavor`]) and a server driving it ([`Setup`]).

use std::path::Path;

use super::codex_install::codex;
use super::mock_model::MockModel;
use super::server::{Launch, Sandbox, Server};

/// A server running the real Codex against a fresh mock model.
pub struct Setup {
    pub sandbox: Sandbox,
    pub model: MockModel,
    pub server: Server,
}

/// A Codex release and the backend the server is told to drive it with.
#[derive(Clone, Copy, Debug)]
pub struct Flavor {
    pub version: &'static str,
    pub backend: &'static str,
    /// A model slug this Codex knows, so it adds no "unknown model" warnings.
    pub model: &'static str,
}

pub const MCP_SERVER: Flavor = Flavor {
    version: "0.153.4",
    backend: "mcp-server",
    model: "gpt-5.2",
};

pub const APP_SERVER: Flavor = Flavor {
    version: "0.169.0",
    backend: "app-server",
    model: "gpt-5.5",
};

/// The Codex users install today.
pub const APP_SERVER_171: Flavor = Flavor {
    version: "0.171.0",
    backend: "app-server",
    model: "gpt-5.5",
};

pub const EXEC: Flavor = Flavor {
    version: "0.169.0",
    backend: "exec",
    model: "gpt-5.5",
};

pub async fn setup(f: Flavor, args: &[&str]) -> Setup {
    setup_with(f, &codex(f.version), args).await
}

pub async fn setup_with(f: Flavor, bin: &Path, args: &[&str]) -> Setup {
    let sandbox = Sandbox::new();
    let model = MockModel::start().await;
    sandbox.use_model(&model, f.model);
    let launch = args.iter().fold(
        Launch::new(bin, &sandbox).arg("--backend").arg(f.backend),
        |launch, arg| launch.arg(arg),
    );
    let server = launch.start().await;
    Setup {
        sandbox,
        model,
        server,
    }
}
