//! The one resource: the server's readiness, the checks of `codex-async-mcp doctor` that a
//! running server can make. A resource costs a client's model nothing until it is read, unlike
//! a tool, whose description is in every request.

use rmcp::ErrorData as McpError;
use rmcp::model::{ListResourcesResult, ReadResourceResult, Resource, ResourceContents};
use serde_json::json;

use crate::jobs::JobManager;
use crate::readiness::{Check, Status, codex_config_checks};
use crate::text::shorten;

pub(super) const READINESS: &str = "codex-async-mcp://readiness";

pub(super) fn list() -> ListResourcesResult {
    let readiness = Resource::new(READINESS, "readiness")
        .with_description(
            "Whether this server can run jobs: Codex and its backend, Codex's config, a model to \
             reach. Each check is ok, or the problem and its fix.",
        )
        .with_mime_type("application/json");
    ListResourcesResult::with_all_items(vec![readiness])
}

pub(super) fn read(manager: &JobManager, uri: &str) -> Result<ReadResourceResult, McpError> {
    if uri != READINESS {
        return Err(McpError::resource_not_found(
            format!(
                "no resource {:?} here; this server has {READINESS}",
                shorten(uri, 200)
            ),
            None,
        ));
    }
    let backend = manager.backend_info();
    let codex = match manager.codex_state() {
        Some(Ok(())) => Check::ok(
            "codex",
            format!("Codex {} on {}", backend.codex_version, backend.name),
        ),
        None => Check::problem(
            "codex",
            "Codex is still starting",
            "read this again in a few seconds",
        ),
        Some(Err(problem)) => Check::problem("codex", "Codex is not usable", problem),
    };
    let [config, model] = codex_config_checks();
    let checks = [codex, config, model];
    let ok = checks.iter().all(|c| c.status == Status::Ok);
    let report = json!({"ok": ok, "checks": checks});
    Ok(ReadResourceResult::new(vec![
        ResourceContents::text(report.to_string(), READINESS).with_mime_type("application/json"),
    ]))
}
