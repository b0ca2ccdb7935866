//! `codex/event` messages of `codex mcp-server` mapped onto our event vocabulary.
//!
//! Codex 0.153 sends most things twice: once as a legacy event (`agent_message`,
//! `exec_command_begin`, ...) and once as an `item_started`/`item_completed` pair. We map the
//! legacy events, which carry the most detail, and skip the duplicates.

use base64::Engine as _;
use serde_json::{Value, json};

use super::TurnEnd;
use super::mapping::{Counted, Mapped, command_line, field as text, token_usage, with_original};
use crate::model::EventKind;

pub(crate) fn map(msg: &Value) -> Mapped {
    let kind = msg.get("type").and_then(Value::as_str).unwrap_or("");
    let record = |kind: EventKind, fields: Value| Mapped::event(kind, fields, msg);
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
        "agent_message_delta" | "agent_message_content_delta" => record(
            EventKind::AgentMessageDelta,
            json!({"delta": text(msg, "delta")}),
        ),
        "agent_reasoning" | "agent_reasoning_raw_content" => {
            record(EventKind::Reasoning, json!({"text": text(msg, "text")}))
        }
        "agent_reasoning_delta"
        | "agent_reasoning_raw_content_delta"
        | "reasoning_content_delta"
        | "reasoning_raw_content_delta" => record(
            EventKind::ReasoningDelta,
            json!({"delta": text(msg, "delta")}),
        ),
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
