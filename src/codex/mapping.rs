//! What the wire-format mappings (`mcp_events`, `app_events`, and the one in `exec`) share: the shape of a
//! mapped message and the helpers that build our events' `data`.

use serde_json::{Map, Value};

use super::TurnEnd;
use crate::model::EventKind;

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
