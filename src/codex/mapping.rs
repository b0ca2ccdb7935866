//! What the wire-format mappings (`mcp_events`, `app_events`, and the one in `exec`) share: the shape of a
//! mapped message and the helpers that build our events' `data`.

use serde_json::{Map, Value};

use super::TurnEnd;
use crate::model::{EventKind, TokenUsage};

/// What to do with one message from Codex.
#[derive(Debug, PartialEq)]
pub(crate) enum Mapped {
    Record(EventKind, Value),
    /// Codex created the thread.
    ThreadStarted {
        thread_id: String,
        data: Value,
    },
    /// The turn ended.
    TurnEnded(TurnEnd),
    /// The turn finished, but another message ends it (`codex mcp-server`'s `tools/call` answer).
    TaskComplete(Value),
    /// A duplicate or internal message with nothing for a client.
    Skip,
}

impl Mapped {
    /// An event of `kind`: our `fields`, with Codex's `msg` under `codex`, except in a streamed
    /// piece. Pieces that come together are joined (`jobs::state`), and a joined piece could
    /// keep none of the messages it was made of; kept, they would cost what joining saves, and
    /// copying each one took about 5 % of this server's CPU time relaying a stream.
    pub(crate) fn event(kind: EventKind, fields: Value, msg: &Value) -> Self {
        let data = if kind.is_delta() {
            fields
        } else {
            with_original(fields, msg)
        };
        Mapped::Record(kind, data)
    }
}

/// `msg[key]`, or null.
pub(crate) fn field(msg: &Value, key: &str) -> Value {
    msg.get(key).cloned().unwrap_or(Value::Null)
}

/// `["/bin/bash", "-lc", "ls"]` as one line; a string stays as it is.
pub(crate) fn command_line(command: &Value) -> Value {
    match command {
        Value::Array(parts) => Value::String(
            parts
                .iter()
                .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        other => other.clone(),
    }
}

/// Our fields for the event, with Codex's message under `codex`.
pub(crate) fn with_original(fields: Value, msg: &Value) -> Value {
    let mut data = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    data.insert("codex".into(), msg.clone());
    Value::Object(data)
}

/// What a count of tokens covers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Counted {
    /// One model call: recorded as `usage`.
    Call,
    /// The whole thread so far (`codex exec resume` counts the turns before it too): recorded as
    /// `thread_usage`, which the engine turns into this turn's `usage`.
    Thread,
}

/// Tokens from Codex's counts in either spelling (`input_tokens` in `codex exec` and
/// `codex mcp-server`, `inputTokens` in app-server), recorded as `token_usage` with Codex's
/// message under `codex`; nothing when the message has no counts (a `token_count` that carries
/// only rate limits).
pub(crate) fn token_usage(counts: &Value, counted: Counted, msg: &Value) -> Mapped {
    let count = |snake: &str, camel: &str| {
        counts
            .get(snake)
            .or_else(|| counts.get(camel))
            .and_then(Value::as_u64)
    };
    let (Some(input), Some(output)) = (
        count("input_tokens", "inputTokens"),
        count("output_tokens", "outputTokens"),
    ) else {
        return Mapped::Skip;
    };
    let usage = TokenUsage {
        input,
        cached: count("cached_input_tokens", "cachedInputTokens").unwrap_or(0),
        output,
        reasoning: count("reasoning_output_tokens", "reasoningOutputTokens").unwrap_or(0),
    };
    let key = match counted {
        Counted::Call => "usage",
        Counted::Thread => "thread_usage",
    };
    let usage = serde_json::to_value(usage).unwrap_or_default();
    Mapped::Record(
        EventKind::TokenUsage,
        with_original(serde_json::json!({ key: usage }), msg),
    )
}
