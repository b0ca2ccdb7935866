//! `codex/event` messages of `codex mcp-server` mapped onto our event vocabulary.
//!
//! Codex 0.153 sends most things twice: once as a legacy event (`agent_message`,
//! `exec_command_begin`, ...) and once as an `item_started`/`item_completed` pair. We map the
//! legacy events, which carry the most detail, and skip the duplicates.

use std::borrow::Cow;

use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::TurnEnd;
use super::mapping::{Counted, Mapped, command_line, field as text, token_usage, with_original};
use crate::model::EventKind;

/// A `codex/event`: whom it is for, and what it maps to.
#[derive(Debug, PartialEq)]
pub(crate) struct CodexEvent<'a> {
    /// The call it came under (`_meta.requestId`).
    pub request_id: Option<i64>,
    /// The thread it is of (`_meta.threadId`).
    pub thread_id: Option<Cow<'a, str>>,
    /// The turn Codex means: the event's own `turn_id`, else the turn it was sent for (`id`,
    /// empty for session-level events).
    pub codex_turn: Option<Cow<'a, str>>,
    pub mapped: Mapped,
}

/// Reads a `codex/event`'s params; `None` when they hold no `msg`.
///
/// A streamed piece of text is read from the JSON without building a `Value`: Codex sends a
/// message a few characters per event, and building a `Value` of each was the largest part of
/// reading them (as for app-server's, see `app_events::streamed_piece`). Anything else, and a
/// piece in a shape the typed read does not take, is read whole and mapped by [`map`].
pub(crate) fn read(params: &str) -> Option<CodexEvent<'_>> {
    streamed_piece(params).or_else(|| read_whole(params))
}

/// Reads a `codex/event`'s params whole, whatever they hold.
fn read_whole(params: &str) -> Option<CodexEvent<'static>> {
    let params: Value = serde_json::from_str(params).unwrap_or(Value::Null);
    let msg = params.get("msg")?;
    let meta = params.get("_meta");
    let owned = |field: Option<&Value>| {
        field
            .and_then(Value::as_str)
            .map(|s| Cow::Owned(s.to_owned()))
    };
    Some(CodexEvent {
        request_id: meta
            .and_then(|m| m.get("requestId"))
            .and_then(Value::as_i64),
        thread_id: owned(meta.and_then(|m| m.get("threadId"))),
        codex_turn: owned(msg.get("turn_id").or_else(|| params.get("id"))),
        mapped: map(msg),
    })
}

/// A streamed piece of text, read typed; `None` for anything else, and for any field the typed
/// read would take otherwise than [`read_whole`] (a `null` turn id, a request id that is not an
/// integer, a `delta` that is not a string), which then reads it.
fn streamed_piece(params: &str) -> Option<CodexEvent<'_>> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(rename = "_meta", default, borrow)]
        meta: Meta<'a>,
        #[serde(default, borrow)]
        id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        msg: Piece<'a>,
    }
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Meta<'a> {
        request_id: Option<i64>,
        #[serde(borrow)]
        thread_id: Option<Cow<'a, str>>,
    }
    #[derive(Deserialize)]
    struct Piece<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        // A `turn_id` of `null` does not fall back to the call's turn (`id`): left to `read_whole`.
        #[serde(default, deserialize_with = "a_string")]
        turn_id: Option<String>,
        delta: String,
    }
    fn a_string<'de, D: Deserializer<'de>>(field: D) -> Result<Option<String>, D::Error> {
        String::deserialize(field).map(Some)
    }
    let wire: Wire = serde_json::from_str(params).ok()?;
    let kind = text_piece_kind(&wire.msg.kind)?;
    Some(CodexEvent {
        request_id: wire.meta.request_id,
        thread_id: wire.meta.thread_id,
        codex_turn: wire.msg.turn_id.map(Cow::Owned).or(wire.id),
        mapped: Mapped::Record(kind, json!({"delta": wire.msg.delta})),
    })
}

/// The kind of event a streamed piece of text of Codex's `type` makes, if it is one.
fn text_piece_kind(kind: &str) -> Option<EventKind> {
    match kind {
        "agent_message_delta" | "agent_message_content_delta" => Some(EventKind::AgentMessageDelta),
        "agent_reasoning_delta"
        | "agent_reasoning_raw_content_delta"
        | "reasoning_content_delta"
        | "reasoning_raw_content_delta" => Some(EventKind::ReasoningDelta),
        _ => None,
    }
}

fn map(msg: &Value) -> Mapped {
    let kind = msg.get("type").and_then(Value::as_str).unwrap_or("");
    let record = |kind: EventKind, fields: Value| Mapped::event(kind, fields, msg);
    if let Some(piece) = text_piece_kind(kind) {
        return record(piece, json!({"delta": text(msg, "delta")}));
    }
    match kind {
        "session_configured" => {
            let thread_id = msg
                .get("thread_id")
                .or_else(|| msg.get("session_id"))
                .and_then(Value::as_str);
            match thread_id {
                Some(id) => Mapped::ThreadStarted {
                    thread_id: id.to_owned(),
                    data: with_original(
                        json!({"thread_id": id, "model": text(msg, "model"), "cwd": text(msg, "cwd")}),
                        msg,
                    ),
                },
                None => record(EventKind::CodexEvent, json!({"codex_type": kind})),
            }
        }
        "turn_aborted" => Mapped::TurnEnded(TurnEnd::Interrupted {
            reason: msg
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("aborted")
                .to_owned(),
            data: with_original(json!({}), msg),
        }),
        "task_complete" => Mapped::TaskComplete(msg.clone()),
        "task_started" => record(
            EventKind::TurnStarted,
            json!({"turn_id": text(msg, "turn_id")}),
        ),
        "user_message" => record(
            EventKind::UserMessage,
            json!({"text": text(msg, "message")}),
        ),
        "agent_message" => record(
            EventKind::AgentMessage,
            json!({"text": text(msg, "message")}),
        ),
        "agent_reasoning" | "agent_reasoning_raw_content" => {
            record(EventKind::Reasoning, json!({"text": text(msg, "text")}))
        }
        "exec_command_begin" => record(
            EventKind::CommandStarted,
            json!({
                "call_id": text(msg, "call_id"),
                "command": command_line(&text(msg, "command")),
                "cwd": text(msg, "cwd"),
            }),
        ),
        "exec_command_output_delta" => {
            // 0.153 sends the chunk as base64.
            let chunk = msg.get("chunk").and_then(Value::as_str).unwrap_or("");
            let text = base64::engine::general_purpose::STANDARD
                .decode(chunk)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_else(|_| chunk.to_owned());
            record(
                EventKind::CommandOutputDelta,
                json!({"call_id": msg.get("call_id"), "stream": msg.get("stream"), "text": text}),
            )
        }
        "exec_command_end" => record(
            EventKind::CommandCompleted,
            json!({
                "call_id": text(msg, "call_id"),
                "command": command_line(&text(msg, "command")),
                "exit_code": text(msg, "exit_code"),
                "output": text(msg, "aggregated_output"),
                "status": text(msg, "status"),
            }),
        ),
        "patch_apply_begin" => record(
            EventKind::FileChangeStarted,
            json!({"call_id": text(msg, "call_id"), "changes": text(msg, "changes")}),
        ),
        "patch_apply_end" => record(
            EventKind::FileChangeCompleted,
            json!({
                "call_id": text(msg, "call_id"),
                "success": text(msg, "success"),
                "output": text(msg, "stdout"),
            }),
        ),
        "mcp_tool_call_begin" => record(
            EventKind::McpToolCallStarted,
            json!({"call_id": text(msg, "call_id"), "invocation": text(msg, "invocation")}),
        ),
        "mcp_tool_call_end" => record(
            EventKind::McpToolCallCompleted,
            json!({"call_id": text(msg, "call_id"), "result": text(msg, "result")}),
        ),
        "web_search_end" => record(EventKind::WebSearch, json!({"query": text(msg, "query")})),
        "plan_update" => record(EventKind::PlanUpdated, json!({"plan": text(msg, "plan")})),
        // `last_token_usage` is the newest model call's; `total_token_usage`, the thread's.
        "token_count" => match msg.pointer("/info/last_token_usage") {
            Some(last) => token_usage(last, Counted::Call, msg),
            None => Mapped::Skip,
        },
        "warning" | "stream_error" => {
            record(EventKind::Warning, json!({"message": text(msg, "message")}))
        }
        "error" => record(EventKind::Error, json!({"message": text(msg, "message")})),
        // Duplicates of the events above, or internal bookkeeping: the approval request arrives
        // again as an `elicitation/create` request, which is where we record it.
        "raw_response_item"
        | "raw_response_completed"
        | "item_started"
        | "item_completed"
        | "exec_approval_request"
        | "apply_patch_approval_request"
        | "web_search_begin"
        | "mcp_startup_complete" => Mapped::Skip,
        _ => record(EventKind::CodexEvent, json!({"codex_type": kind})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `codex/event` params as Codex 0.153 sends them, around `msg`.
    fn params(msg: Value) -> String {
        json!({"_meta": {"requestId": 7, "threadId": "t-1"}, "id": "turn-7", "msg": msg})
            .to_string()
    }

    #[test]
    fn a_streamed_piece_read_the_quick_way_is_what_the_whole_read_makes_of_it() {
        let pieces = [
            params(json!({"type": "agent_message_delta", "delta": "hel"})),
            params(
                json!({"type": "agent_message_content_delta", "thread_id": "t-1", "turn_id": "0",
                       "item_id": "msg_1", "delta": "\"quoted\"\n\u{e9} \u{2603}"}),
            ),
            r#"{"msg": {"type": "agent_message_delta", "delta": "\u00e9\ud83d\ude00\t"}, "id": "t"}"#
                .to_owned(),
            params(json!({"type": "agent_reasoning_delta", "delta": "thinking"})),
            params(json!({"type": "reasoning_raw_content_delta", "delta": ""})),
            json!({"msg": {"type": "agent_message_delta", "delta": "no meta, no id"}}).to_string(),
        ];
        for piece in &pieces {
            let quick = streamed_piece(piece);
            assert!(quick.is_some(), "read the quick way: {piece}");
            assert_eq!(quick, read_whole(piece), "{piece}");
        }
    }

    #[test]
    fn what_the_quick_read_does_not_take_is_read_whole() {
        let others = [
            // A turn id of null means no turn, where an absent one means the call's.
            params(json!({"type": "agent_message_delta", "turn_id": null, "delta": "x"})),
            json!({"_meta": {"requestId": "7"}, "msg": {"type": "agent_message_delta", "delta": "x"}})
                .to_string(),
            json!({"_meta": null, "msg": {"type": "agent_message_delta", "delta": "x"}}).to_string(),
            params(json!({"type": "agent_message_delta", "delta": 5})),
            params(json!({"type": "agent_message_delta"})),
            params(json!({"type": "agent_message", "message": "hi", "delta": "x"})),
            params(
                json!({"type": "exec_command_output_delta", "call_id": "c", "stream": "stdout", "chunk": "bWFkZQo="}),
            ),
        ];
        for other in &others {
            assert_eq!(streamed_piece(other), None, "{other}");
            let read = read(other);
            assert!(read.is_some(), "{other}");
            assert_eq!(read, read_whole(other), "{other}");
        }
        assert_eq!(read(r#"{"_meta": {"requestId": 7}}"#), None, "no msg");
    }

    #[test]
    fn agent_message_keeps_the_text_and_the_original() {
        let msg = json!({"type": "agent_message", "message": "hi", "phase": null});
        let Mapped::Record(kind, data) = map(&msg) else {
            panic!("not recorded")
        };
        assert_eq!(kind, EventKind::AgentMessage);
        assert_eq!(data["text"], "hi");
        assert_eq!(data["codex"], msg);
    }

    #[test]
    fn command_output_chunks_are_decoded_from_base64() {
        let msg = json!({"type": "exec_command_output_delta", "call_id": "c", "stream": "stdout", "chunk": "bWFkZQo="});
        let Mapped::Record(kind, data) = map(&msg) else {
            panic!("not recorded")
        };
        assert_eq!(kind, EventKind::CommandOutputDelta);
        assert_eq!(data["text"], "made\n");
    }

    #[test]
    fn session_configured_names_the_thread() {
        let msg = json!({"type": "session_configured", "thread_id": "t-1", "model": "m"});
        let Mapped::ThreadStarted { thread_id, data } = map(&msg) else {
            panic!("no thread")
        };
        assert_eq!(thread_id, "t-1");
        assert_eq!(data["model"], "m");
    }

    #[test]
    fn unknown_types_are_kept_whole() {
        let msg = json!({"type": "brand_new_thing", "x": 1});
        let Mapped::Record(kind, data) = map(&msg) else {
            panic!("not recorded")
        };
        assert_eq!(kind, EventKind::CodexEvent);
        assert_eq!(data["codex_type"], "brand_new_thing");
        assert_eq!(data["codex"]["x"], 1);
    }

    #[test]
    fn duplicates_are_skipped() {
        assert_eq!(map(&json!({"type": "raw_response_item"})), Mapped::Skip);
        assert_eq!(map(&json!({"type": "item_completed"})), Mapped::Skip);
    }
}
