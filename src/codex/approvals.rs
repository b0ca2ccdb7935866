//! Codex's requests for permission, answered by the server's policy, shared by the long-lived
//! backends: record `approval_requested`, answer Codex, record `approval_resolved`. Each wire
//! format parses its requests into an [`Approval`] and says what its "yes" and "no" look like.
//!
//! Every request Codex sends gets an answer: a request for no turn of ours is declined without a
//! record, and one we do not know gets a JSON-RPC error ([`refuse`]).

use serde_json::{Value, json};

use super::rpc::RpcChild;
use super::{Outbox, Update};
use crate::model::{EventKind, JobTurn};

/// JSON-RPC's "method not found".
const METHOD_NOT_FOUND: i64 = -32601;

/// One request for permission, as both wire formats put it.
pub(crate) struct Approval {
    /// Codex's id for what is asked (the call or item id), or one made from the request id.
    pub id: String,
    /// What is asked: `command`, `file_change`, `permissions`, `mcp_elicitation`, `user_input`.
    pub kind: &'static str,
    pub command: Value,
    pub cwd: Value,
    pub reason: Value,
    /// Codex's request as it came.
    pub request: Value,
    /// What Codex reads.
    pub answer: Value,
    /// What we record: `approved` or `declined`.
    pub decision: &'static str,
}

/// Answers Codex's request `id` and records both sides for `turn`, when the request belongs to a
/// turn of ours.
pub(crate) async fn answer(
    rpc: &RpcChild,
    out: &Outbox,
    turn: Option<JobTurn>,
    id: Value,
    approval: Approval,
) {
    if let Some(turn) = &turn {
        let data = json!({
            "approval_id": approval.id,
            "kind": approval.kind,
            "command": approval.command,
            "cwd": approval.cwd,
            "reason": approval.reason,
            "codex": approval.request,
        });
        let requested = Update::Event {
            kind: EventKind::ApprovalRequested,
            data,
        };
        out.send(turn.clone(), requested).await;
    } else {
        tracing::warn!(
            kind = approval.kind,
            "approval request for no turn of ours; declined"
        );
    }
    let answered = rpc.respond(id, approval.answer.clone()).await;
    if let Err(e) = &answered {
        tracing::warn!(error = %e, "could not answer codex's approval request");
    }
    if let Some(turn) = turn {
        let data = json!({
            "approval_id": approval.id,
            "decision": approval.decision,
            "decided_by": "server_policy",
            "delivered": answered.is_ok(),
            "codex": approval.answer,
        });
        let resolved = Update::Event {
            kind: EventKind::ApprovalResolved,
            data,
        };
        out.send(turn, resolved).await;
    }
}

/// Answers a request we do not handle with "method not found", naming it.
pub(crate) async fn refuse(rpc: &RpcChild, id: Value, method: &str) {
    tracing::warn!(%method, "codex sent a request we do not handle");
    let message = format!("codex-async-mcp does not handle `{method}`");
    if let Err(e) = rpc.respond_error(id, METHOD_NOT_FOUND, &message).await {
        tracing::warn!(error = %e, "could not answer codex");
    }
}
