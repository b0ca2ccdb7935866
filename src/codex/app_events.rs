//! Notifications of `codex app-server` mapped onto our event vocabulary.
//!
//! app-server reports items twice, `item/started` and `item/completed`; we record a command, file
//! change or tool call when it starts and again when it ends, and messages once, when complete.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Value, json};

use super::mapping::{Counted, Mapped, field, token_usage, with_original};
use super::{TurnEnd, Update};
use crate::model::EventKind;

/// The text parts of a `userMessage` item's content, joined.
fn content_text(item: &Value) -> Value {
    let parts: Vec<&str> = item
        .get("content")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("text")?.as_str())
                .collect()
        })
        .unwrap_or_default();
    Value::String(parts.join("\n"))
}

/// The text of an item that speaks to the user: an agent message, or a review's outcome (which
/// a review turn ends with instead).
fn message_text(item: &Value) -> Option<&str> {
    match item.get("type").and_then(Value::as_str)? {
        "agentMessage" => item.get("text")?.as_str(),
        "exitedReviewMode" => item.get("review")?.as_str(),
        _ => None,
    }
}

/// The text of the last agent message (or review) among a turn's items.
pub(crate) fn last_agent_message(turn: &Value) -> Option<String> {
    turn.get("items")?
        .as_array()?
        .iter()
        .rev()
        .find_map(message_text)
        .map(str::to_owned)
}

fn item_started(item: &Value, params: &Value) -> Mapped {
    let record = |kind, fields| Mapped::event(kind, fields, params);
    match item.get("type").and_then(Value::as_str).unwrap_or("") {
        "commandExecution" => record(
            EventKind::CommandStarted,
            json!({"call_id": field(item, "id"), "command": field(item, "command"), "cwd": field(item, "cwd")}),
        ),
        "fileChange" => record(
            EventKind::FileChangeStarted,
            json!({"call_id": field(item, "id"), "changes": field(item, "changes")}),
        ),
        "mcpToolCall" => record(
            EventKind::McpToolCallStarted,
            json!({"call_id": field(item, "id"), "invocation": {"server": field(item, "server"), "tool": field(item, "tool"), "arguments": field(item, "arguments")}}),
        ),
        // Messages, reasoning and searches are recorded once complete.
        _ => Mapped::Skip,
    }
}

fn item_completed(item: &Value, params: &Value) -> Mapped {
    let record = |kind, fields| Mapped::event(kind, fields, params);
    match item.get("type").and_then(Value::as_str).unwrap_or("") {
        "userMessage" => record(EventKind::UserMessage, json!({"text": content_text(item)})),
        "agentMessage" | "exitedReviewMode" => {
            record(EventKind::AgentMessage, json!({"text": message_text(item)}))
        }
        "reasoning" => {
            let summary = item
                .get("summary")
                .and_then(Value::as_array)
                .map(|parts| {
                    parts
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            record(EventKind::Reasoning, json!({"text": summary}))
        }
        "commandExecution" => record(
            EventKind::CommandCompleted,
            json!({
                "call_id": field(item, "id"),
                "command": field(item, "command"),
                "exit_code": field(item, "exitCode"),
                "output": field(item, "aggregatedOutput"),
                "status": field(item, "status"),
            }),
        ),
        "fileChange" => record(
            EventKind::FileChangeCompleted,
            json!({
                "call_id": field(item, "id"),
                "success": item.get("status").and_then(Value::as_str) == Some("completed"),
                "output": field(item, "changes"),
            }),
        ),
        "mcpToolCall" => record(
            EventKind::McpToolCallCompleted,
            json!({"call_id": field(item, "id"), "result": field(item, "result")}),
        ),
        "webSearch" => record(EventKind::WebSearch, json!({"query": field(item, "query")})),
        other => record(
            EventKind::CodexEvent,
            json!({"codex_type": format!("item/{other}")}),
        ),
    }
}

/// The kind of event a streamed piece's method makes, if `method` is one.
fn piece_kind(method: &str) -> Option<EventKind> {
    match method {
        "item/agentMessage/delta" => Some(EventKind::AgentMessageDelta),
        "item/reasoning/summaryTextDelta" | "item/reasoning/textDelta" => {
            Some(EventKind::ReasoningDelta)
        }
        "item/commandExecution/outputDelta" => Some(EventKind::CommandOutputDelta),
        _ => None,
    }
}

/// Our fields of a streamed piece of `kind`: its text, and a command's output says its call.
fn piece_fields(kind: EventKind, item_id: Value, delta: Value) -> Value {
    match kind {
        EventKind::CommandOutputDelta => {
            json!({"call_id": item_id, "stream": Value::Null, "text": delta})
        }
        _ => json!({"delta": delta}),
    }
}

/// A streamed piece, and the thread and turn it is of.
pub(crate) struct Piece<'a> {
    pub thread_id: Cow<'a, str>,
    pub turn_id: Cow<'a, str>,
    pub update: Update,
}

/// A streamed piece (`item/agentMessage/delta` and the like) read from its params' JSON
/// without building a `Value`: Codex sends thousands in a turn, and building a `Value` of each
/// was the largest part of reading them. `None` for any other message, and for a piece of a
/// shape this does not know, which [`map`] reads like any message.
pub(crate) fn streamed_piece<'a>(method: &str, params: &'a str) -> Option<Piece<'a>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire<'a> {
        #[serde(borrow)]
        thread_id: Cow<'a, str>,
        #[serde(borrow)]
        turn_id: Cow<'a, str>,
        #[serde(borrow, default)]
        item_id: Option<Cow<'a, str>>,
        delta: String,
    }
    let kind = piece_kind(method)?;
    let wire: Wire = serde_json::from_str(params).ok()?;
    let item_id = match kind {
        EventKind::CommandOutputDelta => wire.item_id.map(Cow::into_owned).into(),
        _ => Value::Null,
    };
    Some(Piece {
        thread_id: wire.thread_id,
        turn_id: wire.turn_id,
        update: Update::Event {
            kind,
            data: piece_fields(kind, item_id, Value::String(wire.delta)),
        },
    })
}

pub(crate) fn map(method: &str, params: &Value) -> Mapped {
    let record = |kind, fields| Mapped::event(kind, fields, params);
    if let Some(kind) = piece_kind(method) {
        let (item_id, delta) = (field(params, "itemId"), field(params, "delta"));
        return record(kind, piece_fields(kind, item_id, delta));
    }
    let item = params.get("item").unwrap_or(&Value::Null);
    match method {
        "thread/started" => {
            let thread = params.get("thread").unwrap_or(&Value::Null);
            match thread.get("id").and_then(Value::as_str) {
                Some(id) => Mapped::ThreadStarted {
                    thread_id: id.to_owned(),
                    data: with_original(
                        json!({"thread_id": id, "model": Value::Null, "cwd": thread.pointer("/environments/0/cwd")}),
                        params,
                    ),
                },
                None => Mapped::Skip,
            }
        }
        "turn/started" => record(
            EventKind::TurnStarted,
            json!({"turn_id": params.pointer("/turn/id")}),
        ),
        "turn/completed" => {
            let turn = params.get("turn").unwrap_or(&Value::Null);
            let data = with_original(json!({}), params);
            let end = match turn.get("status").and_then(Value::as_str) {
                Some("failed") => TurnEnd::Failed {
                    error: turn
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("Codex reported the turn as failed")
                        .to_owned(),
                    data,
                },
                Some("interrupted") => TurnEnd::Interrupted {
                    reason: "interrupted".to_owned(),
                    data,
                },
                Some("completed") => TurnEnd::Completed {
                    result: last_agent_message(turn),
                    data,
                },
                // A status this server does not know: not taken for success.
                other => {
                    tracing::warn!(status = ?other, "turn/completed with a status we do not know");
                    TurnEnd::Failed {
                        error: format!(
                            "Codex ended the turn with a status this server does not know: {}",
                            other.unwrap_or("none")
                        ),
                        data,
                    }
                }
            };
            Mapped::TurnEnded(end)
        }
        "item/started" => item_started(item, params),
        "item/completed" => item_completed(item, params),
        // `last` is the newest model call's; `total`, the thread's so far.
        "thread/tokenUsage/updated" => match params.pointer("/tokenUsage/last") {
            Some(last) => token_usage(last, Counted::Call, params),
            None => Mapped::Skip,
        },
        "turn/plan/updated" => record(
            EventKind::PlanUpdated,
            json!({"plan": field(params, "plan")}),
        ),
        "warning" | "guardianWarning" => record(
            EventKind::Warning,
            json!({"message": field(params, "message")}),
        ),
        "error" => {
            let message = params
                .pointer("/error/message")
                .cloned()
                .unwrap_or(Value::Null);
            // A retry notice is not the turn's end.
            let kind = if params.get("willRetry").and_then(Value::as_bool) == Some(true) {
                EventKind::Warning
            } else {
                EventKind::Error
            };
            record(kind, json!({"message": message}))
        }
        // Bookkeeping that repeats what the events above say, or concerns no job.
        "thread/status/changed"
        | "serverRequest/resolved"
        | "item/commandExecution/terminalInteraction"
        | "item/reasoning/summaryPartAdded"
        | "item/fileChange/outputDelta"
        | "item/fileChange/patchUpdated"
        | "thread/goal/cleared"
        | "thread/goal/updated"
        | "thread/readState/changed" => Mapped::Skip,
        other => record(EventKind::CodexEvent, json!({"codex_type": other})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_agent_message_keeps_its_text_and_the_original() {
        let params =
            json!({"threadId": "t", "item": {"type": "agentMessage", "id": "m", "text": "hi"}});
        let Mapped::Record(kind, data) = map("item/completed", &params) else {
            panic!("not recorded")
        };
        assert_eq!(kind, EventKind::AgentMessage);
        assert_eq!(data["text"], "hi");
        assert_eq!(data["codex"], params);
    }

    #[test]
    fn a_streamed_piece_carries_its_text_and_not_the_original() {
        let params = json!({"threadId": "t", "turnId": "u", "itemId": "m", "delta": "hi"});
        let mapped = map("item/agentMessage/delta", &params);
        let expected = Mapped::Record(EventKind::AgentMessageDelta, json!({"delta": "hi"}));
        assert_eq!(mapped, expected);
    }

    #[test]
    fn a_streamed_piece_read_from_its_json_is_what_map_makes_of_its_value() {
        for method in [
            "item/agentMessage/delta",
            "item/reasoning/summaryTextDelta",
            "item/reasoning/textDelta",
            "item/commandExecution/outputDelta",
        ] {
            let params = json!({"threadId": "t", "turnId": "u", "itemId": "c\"1", "delta": "a\nb"});
            let json = params.to_string();
            let piece = streamed_piece(method, &json).expect("a piece");
            assert_eq!((&*piece.thread_id, &*piece.turn_id), ("t", "u"));
            let Update::Event { kind, data } = piece.update else {
                panic!("not an event")
            };
            assert_eq!(Mapped::Record(kind, data), map(method, &params), "{method}");
        }
    }

    #[test]
    fn a_piece_of_a_shape_it_does_not_know_is_left_to_map() {
        let method = "item/agentMessage/delta";
        for params in [
            json!({"threadId": "t", "delta": "no turn"}),
            json!({"threadId": "t", "turnId": "u", "delta": 5}),
        ] {
            assert!(streamed_piece(method, &params.to_string()).is_none());
        }
        let message = json!({"threadId": "t", "turnId": "u", "delta": "hi"}).to_string();
        assert!(streamed_piece("item/agentMessage/other", &message).is_none());
    }

    #[test]
    fn a_finished_turn_carries_its_last_agent_message() {
        let params = json!({"threadId": "t", "turn": {"id": "u", "status": "completed", "items": [
            {"type": "agentMessage", "text": "first"}, {"type": "agentMessage", "text": "last"}]}});
        let Mapped::TurnEnded(TurnEnd::Completed { result, .. }) = map("turn/completed", &params)
        else {
            panic!("not an end")
        };
        assert_eq!(result.as_deref(), Some("last"));
    }

    #[test]
    fn failed_and_interrupted_turns_end_as_such() {
        let failed = json!({"turn": {"status": "failed", "error": {"message": "bad request"}}});
        assert!(matches!(
            map("turn/completed", &failed),
            Mapped::TurnEnded(TurnEnd::Failed { error, .. }) if error == "bad request"
        ));
        let interrupted = json!({"turn": {"status": "interrupted", "items": []}});
        assert!(matches!(
            map("turn/completed", &interrupted),
            Mapped::TurnEnded(TurnEnd::Interrupted { .. })
        ));
    }

    #[test]
    fn a_turn_status_we_do_not_know_is_not_taken_for_success() {
        let odd = json!({"turn": {"status": "paused", "items": []}});
        assert!(matches!(
            map("turn/completed", &odd),
            Mapped::TurnEnded(TurnEnd::Failed { error, .. }) if error.contains("paused")
        ));
    }

    #[test]
    fn a_retry_notice_is_a_warning_not_an_error() {
        let params = json!({"error": {"message": "Reconnecting... 1/5"}, "willRetry": true});
        assert!(matches!(
            map("error", &params),
            Mapped::Record(EventKind::Warning, _)
        ));
    }
}
