//! Plain HTTP answers the transports give outside MCP (refusals, errors).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// A refusal in plain text that says what was wrong and what to do.
pub(super) fn plain(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

/// A JSON-RPC answer given outside a session's stream (an undecodable message).
pub(super) fn json_answer(status: StatusCode, answer: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response()
}
