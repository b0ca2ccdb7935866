//! The legacy HTTP+SSE transport (MCP 2024-11-05), which rmcp no longer ships.
//!
//! `GET {mount}/sse` opens a stream whose first event, `endpoint`, names the URL to POST to:
//! `{mount}/messages?sessionId=…`. Every POST is answered `202 Accepted`; responses and
//! notifications go down the stream. A session lives as long as its stream: when the client
//! goes away, its service stops and its id answers 404.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::channel::mpsc;
use futures::{SinkExt as _, StreamExt as _};
use rmcp::ServiceExt as _;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::jsonrpc::{self, Decoded};
use super::respond::{json_answer, plain};
use super::{JobServer, ServerSettings};
use crate::jobs::JobManager;

/// Messages waiting for a session's service, each way.
const CHANNEL: usize = 64;

#[derive(Clone)]
struct SseState {
    sessions: Arc<Mutex<HashMap<String, mpsc::Sender<ClientJsonRpcMessage>>>>,
    manager: JobManager,
    settings: ServerSettings,
    messages_path: String,
    max_sessions: usize,
    shutdown: CancellationToken,
}

#[derive(Deserialize)]
struct SessionQuery {
    #[serde(rename = "sessionId")]
    session_id: String,
}

pub(super) fn router(
    prefix: &str,
    manager: JobManager,
    settings: ServerSettings,
    max_sessions: usize,
    shutdown: CancellationToken,
) -> Router {
    let state = SseState {
        sessions: Arc::new(Mutex::new(HashMap::new())),
        manager,
        settings,
        messages_path: format!("{prefix}/messages"),
        max_sessions,
        shutdown,
    };
    Router::new()
        .route(&format!("{prefix}/sse"), get(open_stream))
        .route(&format!("{prefix}/messages"), post(post_message))
        .with_state(state)
}

async fn open_stream(State(state): State<SseState>) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (to_service, from_client) = mpsc::channel::<ClientJsonRpcMessage>(CHANNEL);
    let (to_client, from_service) = mpsc::channel::<ServerJsonRpcMessage>(CHANNEL);
    {
        let Ok(mut sessions) = state.sessions.lock() else {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "session table unavailable",
            );
        };
        if sessions.len() >= state.max_sessions {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this server already has {} sessions (--max-sessions); close one or try later",
                    state.max_sessions
                ),
            );
        }
        sessions.insert(id.clone(), to_service);
    }
    // The service stops when the stream is dropped (the client left) or the server stops.
    let session_ct = state.shutdown.child_token();
    let dropped = session_ct.clone().drop_guard();
    let server = JobServer::new(state.manager.clone(), state.settings.clone());
    let (sessions, session_id) = (state.sessions.clone(), id.clone());
    tokio::spawn(async move {
        match server
            .serve_with_ct((to_client, from_client), session_ct)
            .await
        {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(e) => tracing::debug!(error = %e, "legacy SSE session ended before initialize"),
        }
        if let Ok(mut sessions) = sessions.lock() {
            sessions.remove(&session_id);
        }
    });

    let endpoint = Event::default()
        .event("endpoint")
        .data(format!("{}?sessionId={id}", state.messages_path));
    let shutdown = state.shutdown.clone();
    let messages = from_service
        .map(move |message| {
            let _keep_until_the_stream_is_dropped = &dropped;
            let data = serde_json::to_string(&message).unwrap_or_else(|e| {
                tracing::error!(error = %e, "could not serialize a message");
                String::new()
            });
            Ok::<_, Infallible>(Event::default().event("message").data(data))
        })
        .take_until(async move { shutdown.cancelled().await });
    let stream =
        futures::stream::once(async move { Ok::<_, Infallible>(endpoint) }).chain(messages);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn post_message(
    State(state): State<SseState>,
    query: Result<Query<SessionQuery>, QueryRejection>,
    body: Bytes,
) -> Response {
    let Ok(Query(query)) = query else {
        return plain(
            StatusCode::BAD_REQUEST,
            "the sessionId query parameter is missing",
        );
    };
    let message = match jsonrpc::decode(&body) {
        Decoded::Message(message) => *message,
        Decoded::Refused(answer) => return json_answer(StatusCode::BAD_REQUEST, &answer),
        Decoded::Ignored => return StatusCode::ACCEPTED.into_response(),
    };
    let sender = state
        .sessions
        .lock()
        .ok()
        .and_then(|s| s.get(&query.session_id).cloned());
    let unknown = || {
        plain(
            StatusCode::NOT_FOUND,
            format!(
                "no session {:?}: it ended or never existed; open a new one with GET …/sse",
                query.session_id
            ),
        )
    };
    let Some(mut sender) = sender else {
        return unknown();
    };
    match sender.send(message).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(_) => unknown(),
    }
}
