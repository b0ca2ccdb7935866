//! What a client sends, decoded, and the JSON-RPC error for what cannot be: every transport
//! answers an undecodable request instead of dropping it (rmcp alone ignores malformed lines on
//! stdio and answers HTTP with a 415 in plain text).
//!
//! - Not JSON, or JSON nested deeper than the parser reads (128 levels): `-32700`.
//! - JSON that is not a JSON-RPC message we take (a batch, a wrong field, an id that is neither
//!   a string nor an integer): `-32600`.
//!
//! The answer carries the request's id when it can be read (the id is found without descending
//! into the rest of the message, so a deeply nested `params` does not hide it); else `null`. A
//! message without an id that names a method is a notification, and gets no answer.
//!
//! A `tools/call`, what a client following a job sends many times a second, is read by a typed
//! path of its own ([`tool_call`]); every other message, and a call of any other shape, by
//! rmcp's.

use rmcp::model::{
    CallToolRequest, CallToolRequestMethod, ClientJsonRpcMessage, ClientRequest, JsonRpcRequest,
    JsonRpcVersion2_0, RequestId,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// JSON-RPC's "parse error".
const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's "invalid request".
const INVALID_REQUEST: i64 = -32600;
/// The longest part of a parser's message repeated back to the client.
const MAX_DETAIL: usize = 200;

/// A client's message, or why it could not be taken.
pub(crate) enum Decoded {
    Message(Box<ClientJsonRpcMessage>),
    /// Undecodable: send this error answer back.
    Refused(Value),
    /// An undecodable notification: nothing to answer.
    Ignored,
}

/// The top-level fields that decide how to answer, read while skipping everything else without
/// a recursion limit.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<Value>,
}

pub(crate) fn decode(bytes: &[u8]) -> Decoded {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if let Some(call) = tool_call(bytes) {
        return Decoded::Message(Box::new(call));
    }
    let error = match serde_json::from_slice::<ClientJsonRpcMessage>(bytes) {
        Ok(message) => return Decoded::Message(Box::new(message)),
        Err(error) => error,
    };
    let envelope = serde_json::from_slice::<Envelope>(bytes);
    let (code, what) = match (&envelope, error.classify()) {
        (Err(_), _) => (PARSE_ERROR, "Parse error: the message is not JSON"),
        (Ok(_), serde_json::error::Category::Syntax | serde_json::error::Category::Eof) => (
            PARSE_ERROR,
            "Parse error: the message nests deeper than the 128 levels this server reads",
        ),
        (Ok(_), _) => (
            INVALID_REQUEST,
            "Invalid Request: not a JSON-RPC 2.0 message this server takes",
        ),
    };
    let (id, notification) = match envelope {
        Ok(Envelope { id: Some(id), .. }) => (usable_id(id), false),
        Ok(Envelope {
            id: None,
            method: Some(_),
        }) => (Value::Null, true),
        _ => (Value::Null, false),
    };
    if notification {
        tracing::debug!(%error, "ignoring a notification that cannot be decoded");
        return Decoded::Ignored;
    }
    let detail: String = error.to_string().chars().take(MAX_DETAIL).collect();
    tracing::debug!(code, %detail, "refusing a message that cannot be decoded");
    Decoded::Refused(error_answer(id, code, &format!("{what} ({detail})")))
}

/// A `tools/call` request with nothing beside its four fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolCall<'a> {
    #[serde(rename = "jsonrpc")]
    _jsonrpc: JsonRpcVersion2_0,
    id: RequestId,
    #[serde(rename = "method")]
    _method: CallToolRequestMethod,
    #[serde(borrow)]
    params: &'a RawValue,
}

/// `bytes` as the message rmcp would make of them, when they are a `tools/call` request with
/// nothing beside its four fields; else `None`, and rmcp's own reading decides.
///
/// rmcp reads any message into serde's buffer, then tries it as each kind of message in turn
/// and each kind of request (a call is the fourteenth), buffering it again on the way: measured
/// on a real 20,000-delta turn followed by a client polling `job_events`, a thirteenth of this
/// server's CPU time. Here the envelope is read straight into its fields and only the params go
/// through rmcp's reading of a call, so they mean what they mean to rmcp (`_meta` goes to the
/// request's extensions, as rmcp puts it).
fn tool_call(bytes: &[u8]) -> Option<ClientJsonRpcMessage> {
    let call: ToolCall = serde_json::from_slice(bytes).ok()?;
    let request = format!(
        r#"{{"method":"tools/call","params":{}}}"#,
        call.params.get()
    );
    let request: CallToolRequest = serde_json::from_str(&request).ok()?;
    Some(ClientJsonRpcMessage::Request(JsonRpcRequest::new(
        call.id,
        ClientRequest::from(request),
    )))
}

/// The id to answer under: the request's own if it is one JSON-RPC allows (a string or a number),
/// else `null`.
fn usable_id(id: Value) -> Value {
    match id {
        Value::String(_) | Value::Number(_) => id,
        _ => Value::Null,
    }
}

/// A JSON-RPC error answer.
pub(crate) fn error_answer(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// The answer to a message longer than a transport reads.
pub(crate) fn too_large(length: usize, limit: usize) -> Value {
    error_answer(
        Value::Null,
        INVALID_REQUEST,
        &format!(
            "Invalid Request: a message of {length} bytes is more than the {limit} bytes this \
             server reads"
        ),
    )
}

#[cfg(test)]
mod tests {
    use rmcp::model::RequestMetaObject;

    use super::*;

    fn refused(input: &[u8]) -> Value {
        match decode(input) {
            Decoded::Refused(answer) => answer,
            Decoded::Message(m) => panic!("decoded {m:?}"),
            Decoded::Ignored => panic!("ignored"),
        }
    }

    #[test]
    fn malformed_json_is_a_parse_error_without_an_id() {
        let answer = refused(br#"{"jsonrpc": "2.0", "id": 7, "method": "ping""#);
        assert_eq!(answer["error"]["code"], -32700);
        assert_eq!(answer["id"], Value::Null);
    }

    #[test]
    fn json_nested_too_deep_is_a_parse_error_that_keeps_the_id() {
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"job_list","arguments":{{"x":{}{}}}}}}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        );
        let answer = refused(deep.as_bytes());
        assert_eq!(answer["error"]["code"], -32700);
        assert_eq!(answer["id"], 7);
        assert!(answer["error"]["message"].as_str().unwrap().contains("128"));
    }

    #[test]
    fn an_id_too_big_for_rmcp_is_an_invalid_request_answered_under_that_id() {
        let answer =
            refused(br#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}"#);
        assert_eq!(answer["error"]["code"], -32600);
        assert!(answer["id"].is_number());
    }

    #[test]
    fn a_batch_is_an_invalid_request() {
        let answer = refused(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#);
        assert_eq!(answer["error"]["code"], -32600);
        assert_eq!(answer["id"], Value::Null);
    }

    #[test]
    fn an_undecodable_notification_gets_no_answer() {
        assert!(matches!(
            decode(br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":7}"#),
            Decoded::Ignored
        ));
    }

    /// A message as JSON, and the `_meta` rmcp filed in a call's extensions.
    fn json_and_filed_meta(message: &ClientJsonRpcMessage) -> (Value, Option<RequestMetaObject>) {
        let meta = match message {
            ClientJsonRpcMessage::Request(JsonRpcRequest {
                request: ClientRequest::CallToolRequest(call),
                ..
            }) => call.extensions.get::<RequestMetaObject>().cloned(),
            _ => None,
        };
        (serde_json::to_value(message).unwrap(), meta)
    }

    #[test]
    fn a_tool_call_read_the_quick_way_is_what_rmcp_makes_of_it() {
        let calls = [
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"job_events","arguments":{"job_id":"j1","cursor":4,"include_deltas":true}}}"#,
            r#"{"params":{"arguments":{},"name":"job_list"},"method":"tools/call","id":"abc","jsonrpc":"2.0"}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"job_start","arguments":{"prompt":"caf\u00e9 \"quoted\"\n","nested":[1,{"a":null}]},"_meta":{"progressToken":4,"claudecode/toolUseId":"toolu_1","io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/tasks":{}}}}}}"#,
            r#"{"jsonrpc":"2.0","id":-3,"method":"tools/call","params":{"name":"codex"}}"#,
        ];
        for call in calls {
            let quick = tool_call(call.as_bytes()).expect("a tools/call is read the quick way");
            let general = serde_json::from_str::<ClientJsonRpcMessage>(call).unwrap();
            let filed = json_and_filed_meta(&quick).1;
            assert_eq!(filed.is_some(), call.contains("_meta"), "{call}");
            assert_eq!(
                json_and_filed_meta(&quick),
                json_and_filed_meta(&general),
                "{call}"
            );
        }
    }

    #[test]
    fn anything_but_a_plain_tool_call_is_left_to_rmcp() {
        let others = [
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"},"extra":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"x"}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#,
        ];
        for other in others {
            assert!(tool_call(other.as_bytes()).is_none(), "{other}");
        }
    }

    #[test]
    fn a_good_message_decodes() {
        assert!(matches!(
            decode(b"\xEF\xBB\xBF{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}"),
            Decoded::Message(_)
        ));
    }
}
