//! Asking the client directly: a job started (or continued) with `ask_client` has each of Codex's
//! requests sent to the session that asked, as an `elicitation/create` form, and the answer
//! relayed to the engine as the client's.
//!
//! Only a form the person accepted answers the request. If the session is gone, the client
//! declines or cancels the form, or nobody answers within half the approval timeout, the request
//! stays open for `job_respond` (and then the approval timeout).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{ElicitRequestParams, ElicitationAction, ElicitationSchema};
use rmcp::service::ElicitationMode;
use rmcp::{Peer, RoleServer};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::jobs::{Answer, Decision, JobId, JobManager, PendingRequest, Relayed, RespondRequest};
use crate::model::RequestKind;

/// How often a relay checks that its session is still there while no request comes.
const SESSION_CHECK: Duration = Duration::from_secs(10);

/// Whether this session can be asked: it declared form elicitation in an `initialize`
/// handshake (sessions on the newer handshake cannot receive requests from the server).
pub(super) fn can_ask(peer: &Peer<RoleServer>) -> bool {
    peer.peer_info().is_some()
        && peer
            .supported_elicitation_modes()
            .contains(&ElicitationMode::Form)
}

/// The jobs one session relays, so a job is relayed once per session.
#[derive(Clone, Default)]
pub(super) struct Relays(Arc<Mutex<HashSet<JobId>>>);

impl Relays {
    /// Relays `job`'s requests (from `requests`, subscribed before the job could ask anything) to
    /// `peer` until the session ends.
    pub(super) fn start(
        &self,
        manager: JobManager,
        peer: Peer<RoleServer>,
        job: JobId,
        requests: broadcast::Receiver<Relayed>,
    ) {
        let fresh = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(job.clone());
        if !fresh {
            return;
        }
        let relays = self.clone();
        tokio::spawn(async move {
            relay(manager, peer, &job, requests).await;
            relays
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&job);
        });
    }
}

async fn relay(
    manager: JobManager,
    peer: Peer<RoleServer>,
    job: &JobId,
    mut requests: broadcast::Receiver<Relayed>,
) {
    let wait = manager.approval_timeout() / 2;
    let mut check = tokio::time::interval(SESSION_CHECK);
    loop {
        tokio::select! {
            received = requests.recv() => match received {
                Ok(relayed) if relayed.turn.job == *job => {
                    let (manager, peer) = (manager.clone(), peer.clone());
                    tokio::spawn(async move { ask(&manager, &peer, relayed, wait).await });
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(%job, missed, "fell behind relaying requests; they wait for job_respond");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = check.tick() => {}
        }
        if peer.is_transport_closed() {
            tracing::debug!(%job, "the session that asked for elicitation is gone");
            return;
        }
    }
}

/// Sends one request as a form and relays an accepted answer.
async fn ask(manager: &JobManager, peer: &Peer<RoleServer>, relayed: Relayed, wait: Duration) {
    let request = &relayed.request;
    let params = match form(&relayed.turn.job, relayed.turn.turn, request) {
        Ok(params) => params,
        Err(e) => {
            tracing::warn!(error = %e, "could not build an elicitation form");
            return;
        }
    };
    let asked = peer
        .create_elicitation_with_timeout(params, Some(wait))
        .await;
    let result = match asked {
        Ok(result) => result,
        Err(e) => {
            tracing::info!(request_id = %request.request_id, error = %e, "the client did not answer the form; the request waits for job_respond");
            return;
        }
    };
    if result.action != ElicitationAction::Accept {
        tracing::info!(request_id = %request.request_id, action = ?result.action, "the client did not accept the form; the request waits for job_respond");
        return;
    }
    let content = match result.content {
        Some(Value::Object(content)) => content,
        _ => Map::new(),
    };
    let Some((answer, note)) = answer_of(request, content) else {
        tracing::info!(request_id = %request.request_id, "the form came back without a decision this request takes; it waits for job_respond");
        return;
    };
    let note = match note {
        Some(note) => format!("answered in the client's form: {note}"),
        None => "answered in the client's form".to_owned(),
    };
    let respond = RespondRequest {
        request_id: request.request_id.clone(),
        answer,
        note: Some(note),
    };
    let job = relayed.turn.job.as_str();
    if let Err(e) = manager.respond(job, respond).await {
        tracing::info!(request_id = %request.request_id, error = %e, "the form's answer was not taken");
    }
}

/// The form for a request of turn `turn` of `job`: a `decision` among those it takes, a field
/// for each of a question's questions, and a note.
pub(super) fn form(
    job: &JobId,
    turn: u32,
    request: &PendingRequest,
) -> Result<ElicitRequestParams, serde_json::Error> {
    let decisions: Vec<&str> = request.decisions.iter().map(|d| d.as_str()).collect();
    let mut properties = Map::new();
    properties.insert(
        "decision".into(),
        json!({"type": "string", "title": "Decision", "enum": decisions, "default": "accept"}),
    );
    for question in &request.questions {
        let mut schema = json!({"type": "string", "title": question.question});
        if !question.options.is_empty() {
            schema["description"] = json!(format!("e.g. {}", question.options.join(" | ")));
        }
        properties.insert(question.id.clone(), schema);
    }
    if request.questions.is_empty() {
        properties.insert(
            "note".into(),
            json!({"type": "string", "title": "Note (optional)"}),
        );
    }
    let mut schema = Map::new();
    schema.insert("type".into(), json!("object"));
    schema.insert("properties".into(), Value::Object(properties));
    schema.insert("required".into(), json!(["decision"]));
    Ok(ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: format!("Codex (job {job}, turn {turn}) asks: {}", request.summary),
        requested_schema: ElicitationSchema::from_json_schema(schema)?,
    })
}

/// The answer an accepted form gives: its decision, with the answers to a question's questions
/// (or an MCP tool's form fields) when it accepts; and the note written in it. `None` when the
/// form has no decision this request takes (the request then waits for job_respond).
pub(super) fn answer_of(
    request: &PendingRequest,
    mut content: Map<String, Value>,
) -> Option<(Answer, Option<String>)> {
    let decision = content
        .remove("decision")
        .and_then(|d| serde_json::from_value::<Decision>(d).ok())
        .filter(|d| request.decisions.contains(d))?;
    let note = content
        .remove("note")
        .and_then(|n| n.as_str().map(str::to_owned))
        .filter(|n| !n.trim().is_empty());
    let accepts = matches!(decision, Decision::Accept | Decision::AcceptForSession);
    let takes_answers = !request.questions.is_empty() || request.kind == RequestKind::McpTool;
    let answers = (accepts && takes_answers).then_some(content);
    Some((Answer { decision, answers }, note))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sample_question;

    fn content(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn an_accepted_form_answers_a_question_with_its_fields_and_a_declined_one_without() {
        let (answer, _) = answer_of(
            &sample_question(),
            content(json!({"decision": "accept", "color": "Blue"})),
        )
        .unwrap();
        assert_eq!(answer.decision, Decision::Accept);
        assert_eq!(answer.answers, Some(content(json!({"color": "Blue"}))));
        let (answer, _) = answer_of(
            &sample_question(),
            content(json!({"decision": "decline", "color": "Blue"})),
        )
        .unwrap();
        assert_eq!(answer, Answer::just(Decision::Decline));
    }

    #[test]
    fn a_form_for_a_command_takes_a_decision_it_allows_and_a_note_for_the_record() {
        let mut command = sample_question();
        command.kind = RequestKind::Command;
        command.questions.clear();
        command.decisions.insert(1, Decision::AcceptForSession);
        let (answer, note) = answer_of(
            &command,
            content(json!({"decision": "accept_for_session", "note": "ok once more"})),
        )
        .unwrap();
        assert_eq!(answer, Answer::just(Decision::AcceptForSession));
        assert_eq!(note.as_deref(), Some("ok once more"));
        // No decision, or one the request does not take: not an answer.
        assert_eq!(
            answer_of(&command, content(json!({"decision": "maybe"}))),
            None
        );
        assert_eq!(answer_of(&command, content(json!({"note": "?"}))), None);
        assert_eq!(
            answer_of(
                &sample_question(),
                content(json!({"decision": "accept_for_session"}))
            ),
            None
        );
    }

    #[test]
    fn the_form_offers_the_request_decisions_and_a_field_per_question() {
        let ElicitRequestParams::FormElicitationParams {
            message,
            requested_schema,
            ..
        } = form(&JobId::from("job-1"), 2, &sample_question()).unwrap()
        else {
            panic!("a form")
        };
        assert_eq!(
            message,
            "Codex (job job-1, turn 2) asks: answer: Which color?"
        );
        let schema = serde_json::to_value(&requested_schema).unwrap();
        let decisions = &schema["properties"]["decision"]["enum"];
        assert_eq!(decisions, &json!(["accept", "decline", "cancel"]));
        assert_eq!(schema["properties"]["color"]["title"], "Which color?");
    }
}
