//! Codex's requests (run a command, apply a patch, grant permissions, call an MCP tool, answer a
//! question), shared by the long-lived backends: each wire format reads its requests into a
//! [`CodexRequest`] and says how an [`Answer`] is written back; [`relay`] hands the request to the
//! engine, which decides (by the job's policy, a client, or a timeout), and answers Codex with
//! what it decided.
//!
//! Every request Codex sends gets an answer: one for no running turn of ours is declined at once,
//! one the engine drops unanswered (its turn ended, the engine is gone) is declined then, and one
//! we do not know gets a JSON-RPC error ([`refuse`]).

use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use super::session::Session;
use super::{Outbox, Update};
use crate::model::{Answer, CodexRequest, Decision, JobTurn, Question, RequestKind};
use crate::text::shorten;

/// JSON-RPC's "method not found".
const METHOD_NOT_FOUND: i64 = -32601;
/// How long a summary's parts may be.
const SUMMARY_PART_CHARS: usize = 200;
/// How many files a patch summary names.
const SUMMARY_FILES: usize = 5;

/// Hands `request` (Codex's request `id`) to the engine for `turn`, and answers Codex, in the
/// background, with what the engine decides, written by `encode`. A request for no turn of ours
/// is declined at once.
pub(crate) async fn relay<R: Send + Sync + 'static>(
    session: &Arc<Session<R>>,
    out: &Outbox,
    turn: Option<JobTurn>,
    id: Value,
    request: CodexRequest,
    encode: impl FnOnce(&Answer) -> Value + Send + 'static,
) {
    let decided = match turn {
        Some(turn) => {
            let (reply, decided) = oneshot::channel();
            out.send(turn, Update::Request { request, reply }).await;
            Some(decided)
        }
        None => {
            tracing::warn!(kind = ?request.kind, "a request for no turn of ours; declined");
            None
        }
    };
    let session = session.clone();
    tokio::spawn(async move {
        let answer = match decided {
            Some(decided) => decided.await.unwrap_or(Answer::just(Decision::Decline)),
            None => Answer::just(Decision::Decline),
        };
        if let Err(e) = session.rpc.respond(id, encode(&answer)).await {
            tracing::warn!(error = %e, "could not answer codex's request");
        }
    });
}

/// Answers a request we do not handle with "method not found", naming it.
pub(crate) async fn refuse<R>(session: &Session<R>, id: Value, method: &str) {
    tracing::warn!(%method, "codex sent a request we do not handle");
    let message = format!("codex-async-mcp does not handle `{method}`");
    if let Err(e) = session
        .rpc
        .respond_error(id, METHOD_NOT_FOUND, &message)
        .await
    {
        tracing::warn!(error = %e, "could not answer codex");
    }
}

/// `{"decision": ...}` in the words of the legacy requests and of mcp-server (`approved`,
/// `approved_for_session`, `denied`, `abort`).
pub(crate) fn decision_v1(answer: &Answer) -> Value {
    let decision = match answer.decision {
        Decision::Accept => "approved",
        Decision::AcceptForSession => "approved_for_session",
        Decision::Decline => "denied",
        Decision::Cancel => "abort",
    };
    json!({ "decision": decision })
}

/// The decisions a request of `kind` takes.
fn decisions(kind: RequestKind) -> Vec<Decision> {
    match kind {
        RequestKind::Command | RequestKind::FileChange | RequestKind::Permissions => vec![
            Decision::Accept,
            Decision::AcceptForSession,
            Decision::Decline,
            Decision::Cancel,
        ],
        RequestKind::McpTool | RequestKind::Question => {
            vec![Decision::Accept, Decision::Decline, Decision::Cancel]
        }
    }
}

/// A request of `kind` with these details (nulls left out).
pub(crate) fn request(
    kind: RequestKind,
    summary: String,
    details: impl IntoIterator<Item = (&'static str, Value)>,
    questions: Vec<Question>,
    raw: Value,
) -> CodexRequest {
    let details: Map<String, Value> = details
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    CodexRequest {
        kind,
        summary,
        details,
        questions,
        decisions: decisions(kind),
        raw,
    }
}

/// `text`, then `: reason` when Codex gave one.
fn with_reason(text: String, reason: &Value) -> String {
    match reason.as_str().filter(|r| !r.trim().is_empty()) {
        Some(reason) => format!("{text}: {}", shorten(reason, SUMMARY_PART_CHARS)),
        None => text,
    }
}

/// "run `cmd` in cwd: reason".
pub(crate) fn command_summary(command: &Value, cwd: &Value, reason: &Value) -> String {
    let command = command.as_str().unwrap_or("a command");
    let mut text = format!("run `{}`", shorten(command, SUMMARY_PART_CHARS));
    if let Some(cwd) = cwd.as_str() {
        text.push_str(&format!(" in {cwd}"));
    }
    with_reason(text, reason)
}

/// "apply a patch: add a.txt, update b.rs: reason", from `(kind, path)` pairs.
pub(crate) fn patch_summary(changes: &[(String, String)], reason: &Value) -> String {
    let mut named: Vec<String> = changes
        .iter()
        .take(SUMMARY_FILES)
        .map(|(kind, path)| format!("{kind} {path}"))
        .collect();
    if changes.len() > SUMMARY_FILES {
        named.push(format!("{} more", changes.len() - SUMMARY_FILES));
    }
    let text = if named.is_empty() {
        "apply a patch".to_owned()
    } else {
        format!("apply a patch ({})", named.join(", "))
    };
    with_reason(text, reason)
}

/// The files a patch changes, `(kind, path)`, from Codex's map of path to change: a change is
/// `{"type": "add", ...}` (0.153) or `{"add": {...}}` (older).
pub(crate) fn patch_files(changes: Option<&Value>) -> Vec<(String, String)> {
    let files = changes.and_then(Value::as_object).into_iter().flatten();
    files
        .map(|(path, change)| {
            let kind = change
                .get("type")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| change.as_object().and_then(|c| c.keys().next().cloned()))
                .unwrap_or_else(|| "change".to_owned());
            (kind, path.clone())
        })
        .collect()
}

/// `changes` as `[{kind, path}]`, for the record.
pub(crate) fn changes_value(changes: &[(String, String)]) -> Value {
    changes
        .iter()
        .map(|(kind, path)| json!({"kind": kind, "path": path}))
        .collect()
}

/// "grant write /a, read /b, network: reason", from a permission profile (`fileSystem.read`,
/// `fileSystem.write`, `network.enabled`).
pub(crate) fn permissions_summary(permissions: &Value, reason: &Value) -> String {
    let mut asked = Vec::new();
    for access in ["write", "read"] {
        let paths = permissions
            .pointer(&format!("/fileSystem/{access}"))
            .and_then(Value::as_array);
        for path in paths.into_iter().flatten().filter_map(Value::as_str) {
            asked.push(format!("{access} {}", shorten(path, SUMMARY_PART_CHARS)));
        }
    }
    if permissions.pointer("/network/enabled") == Some(&Value::Bool(true)) {
        asked.push("network".to_owned());
    }
    let text = if asked.is_empty() {
        "grant more permissions".to_owned()
    } else {
        format!("grant {}", asked.join(", "))
    };
    with_reason(text, reason)
}

/// "answer: Which color? | Which size?".
pub(crate) fn questions_summary(questions: &[Question]) -> String {
    let asked: Vec<String> = questions
        .iter()
        .map(|q| shorten(&q.question, SUMMARY_PART_CHARS))
        .collect();
    format!("answer: {}", asked.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_says_what_is_asked_in_one_line() {
        assert_eq!(
            command_summary(&json!("touch a"), &json!("/w"), &json!("needs it")),
            "run `touch a` in /w: needs it"
        );
        let changes: Vec<(String, String)> = (0..7)
            .map(|i| ("add".to_owned(), format!("f{i}")))
            .collect();
        assert_eq!(
            patch_summary(&changes, &Value::Null),
            "apply a patch (add f0, add f1, add f2, add f3, add f4, 2 more)"
        );
        let permissions =
            json!({"fileSystem": {"write": ["/o"], "read": null}, "network": {"enabled": true}});
        assert_eq!(
            permissions_summary(&permissions, &json!("")),
            "grant write /o, network"
        );
    }

    #[test]
    fn a_patch_names_its_files_whichever_way_codex_tags_a_change() {
        let changes = json!({"/w/a": {"type": "add", "content": "x"}, "/w/b": {"update": {}}});
        assert_eq!(
            patch_files(Some(&changes)),
            [
                ("add".into(), "/w/a".into()),
                ("update".into(), "/w/b".into())
            ]
        );
    }

    #[test]
    fn only_approvals_take_accept_for_session() {
        let r = request(
            RequestKind::Question,
            String::new(),
            [("message", Value::Null)],
            Vec::new(),
            Value::Null,
        );
        assert_eq!(
            r.decisions,
            [Decision::Accept, Decision::Decline, Decision::Cancel]
        );
        assert!(r.details.is_empty(), "nulls are left out");
    }
}
