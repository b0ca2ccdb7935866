//! The tools over HTTP, on axum: streamable HTTP (rmcp) or legacy SSE ([`super::sse`]) at a mount
//! path, with `{mount}/healthz` beside them. Every connection shares one engine.
//!
//! Exposing a Codex runner is handing out code execution, so the defaults are strict: a Host
//! header must name this server (DNS rebinding), an Origin header must be a loopback origin or
//! one configured, MCP routes need the bearer token when one is set, and binding anything but
//! loopback without a token is refused at start-up.
//!
//! In front of rmcp's streamable service, [`streamable_gate`] decodes every POST itself (a
//! message that cannot be decoded gets a JSON-RPC error, 400), takes the session cap in one step
//! with the session it admits, cancels a request whose client closed the stream its answer was
//! to come on (so a `job_wait` ends when its caller leaves), and sends a quick answer's stream
//! whole ([`whole_if_quick`]).

use std::future::IntoFuture as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use futures::StreamExt as _;
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, RequestId};
use rmcp::transport::streamable_http_server::session::SessionManager as _;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;

use super::jsonrpc::{self, Decoded};
use super::respond::{json_answer, plain};
use super::{JobServer, ServerSettings, sse};
use crate::jobs::JobManager;

/// How long open streams get to close when the server stops.
const DRAIN: Duration = Duration::from_secs(5);

/// Which HTTP transport to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpTransport {
    StreamableHttp,
    LegacySse,
}

#[derive(Clone, Debug)]
pub struct HttpSettings {
    pub transport: HttpTransport,
    /// Where the MCP endpoint lives, e.g. `/mcp`; `/` for the root.
    pub mount_path: String,
    pub auth_token: Option<String>,
    /// Host names (without port) a request may be addressed to.
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) a browser request may come from, besides loopback.
    pub allowed_origins: Vec<String>,
    pub max_sessions: usize,
    pub session_idle: Duration,
    pub max_body_bytes: usize,
}

/// Listens on `addr`, unless that would expose the server unsafely.
pub async fn bind(addr: &str, settings: &HttpSettings) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("could not listen on {addr}: {e}"))?;
    check_bind(&listener.local_addr()?, settings)?;
    Ok(listener)
}

/// Refuses settings that would expose the server unsafely, with the reason.
fn check_bind(addr: &SocketAddr, settings: &HttpSettings) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() && settings.auth_token.is_none() {
        anyhow::bail!(
            "refusing to listen on {addr} without a token: anyone who can reach it could run \
             commands through Codex. Pass --auth-token (or set CODEX_ASYNC_MCP_TOKEN), or listen \
             on 127.0.0.1"
        );
    }
    Ok(())
}

/// The mount path in the form routes use: `/mcp`, or empty for the root.
fn mount_prefix(mount_path: &str) -> String {
    mount_path.trim_end_matches('/').to_owned()
}

struct Guard {
    token: Option<String>,
    hosts: Vec<String>,
    origins: Vec<String>,
}

/// Serves on a listener from [`bind`] until `shutdown` is cancelled, then closes every session
/// and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    manager: JobManager,
    server: ServerSettings,
    settings: HttpSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let prefix = mount_prefix(&settings.mount_path);
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(str::to_owned)
        .chain(
            settings
                .allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase()),
        )
        .collect();
    if !local.ip().is_unspecified() {
        hosts.push(local.ip().to_string());
    }
    let guard = Arc::new(Guard {
        token: settings.auth_token.clone(),
        hosts,
        origins: settings.allowed_origins.clone(),
    });
    let sessions = shutdown.child_token();

    let mcp: Router = match settings.transport {
        HttpTransport::StreamableHttp => {
            let mut session_manager = LocalSessionManager::default();
            session_manager.session_config.keep_alive = Some(settings.session_idle);
            let session_manager = Arc::new(session_manager);
            let factory = {
                let (manager, server) = (manager.clone(), server.clone());
                move || Ok(JobServer::new(manager.clone(), server.clone()))
            };
            let service = StreamableHttpService::new(
                factory,
                session_manager.clone(),
                StreamableHttpServerConfig::default()
                    // Host and Origin are checked for every route below, one way for all.
                    .disable_allowed_hosts()
                    .with_sse_keep_alive(Some(Duration::from_secs(15)))
                    .with_max_request_body_bytes(settings.max_body_bytes)
                    .with_cancellation_token(sessions.clone()),
            );
            let endpoint = if prefix.is_empty() {
                "/"
            } else {
                prefix.as_str()
            };
            let gate = Arc::new(StreamableGate {
                sessions: session_manager,
                cap: settings.max_sessions,
                admitting: tokio::sync::Mutex::new(()),
                max_body_bytes: settings.max_body_bytes,
            });
            Router::new()
                .route_service(endpoint, service)
                .layer(middleware::from_fn_with_state(gate, streamable_gate))
        }
        HttpTransport::LegacySse => sse::router(
            &prefix,
            manager.clone(),
            server.clone(),
            settings.max_sessions,
            sessions.clone(),
        ),
    };
    let mcp = mcp.layer(middleware::from_fn_with_state(guard.clone(), require_token));

    let health = Router::new()
        .route(&format!("{prefix}/healthz"), get(healthz))
        .with_state(manager.clone());
    let mut app = mcp
        .merge(health)
        .layer(middleware::from_fn_with_state(
            guard.clone(),
            check_host_and_origin,
        ))
        .layer(RequestBodyLimitLayer::new(settings.max_body_bytes));
    if !settings.allowed_origins.is_empty() {
        let origins: Vec<HeaderValue> = settings
            .allowed_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        app = app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::HeaderName::from_static("mcp-session-id"),
                    header::HeaderName::from_static("mcp-protocol-version"),
                    header::HeaderName::from_static("last-event-id"),
                ])
                .expose_headers([header::HeaderName::from_static("mcp-session-id")]),
        );
    }

    tracing::info!(address = %local, mount = %settings.mount_path, transport = ?settings.transport, "serving MCP over HTTP");
    // An answer streams as several small writes (the SSE head, the event, the end of the body):
    // with Nagle's algorithm on, a kept-alive connection then waits out the client's delayed ACK
    // before the last of them, about 40 ms a call. Measured with 32 kept-alive clients: 660
    // calls/s, p50 48 ms, without TCP_NODELAY.
    let listener = listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
    });
    // Cancelling `shutdown` also ends every session (their tokens are its children), so open
    // streams close and the graceful shutdown can finish.
    let graceful = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let mut server = tokio::spawn(graceful);
    tokio::select! {
        ended = &mut server => return ended.map_err(|e| anyhow::anyhow!("the HTTP server task failed: {e}"))?.map_err(Into::into),
        () = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(DRAIN, server).await {
        Ok(Ok(result)) => result?,
        Ok(Err(e)) => anyhow::bail!("the HTTP server task failed: {e}"),
        Err(_) => {
            tracing::warn!("open connections did not close within {DRAIN:?}; stopping anyway")
        }
    }
    Ok(())
}

/// What the middleware in front of rmcp's streamable service needs.
struct StreamableGate {
    sessions: Arc<LocalSessionManager>,
    /// `--max-sessions`.
    cap: usize,
    /// Held while a session is admitted, so the count and the new session are one step.
    admitting: tokio::sync::Mutex<()>,
    max_body_bytes: usize,
}

/// Decodes a POST before rmcp sees it, admits new sessions under the cap, cancels a request
/// whose answer stream the client closed, and sends a quick answer whole.
async fn streamable_gate(
    State(gate): State<Arc<StreamableGate>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, gate.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than {} bytes (--max-body-bytes)",
                    gate.max_body_bytes
                ),
            );
        }
    };
    let message = match jsonrpc::decode(&bytes) {
        Decoded::Message(message) => message,
        Decoded::Refused(answer) => return json_answer(StatusCode::BAD_REQUEST, &answer),
        Decoded::Ignored => return StatusCode::ACCEPTED.into_response(),
    };
    let session: Option<Arc<str>> = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(Arc::from);
    let request_id = match (&*message, &session) {
        (ClientJsonRpcMessage::Request(request), Some(_)) => Some(request.id.clone()),
        _ => None,
    };
    // Only `initialize` opens a session; a request of the 2026-07-28 handshake has none to
    // open, and must not wait on another's admission (or on its whole answer, for a `job_wait`).
    let opens_session = matches!(
        &*message,
        ClientJsonRpcMessage::Request(request)
            if matches!(request.request, ClientRequest::InitializeRequest(_))
    );
    let request = Request::from_parts(parts, Body::from(bytes));
    let response = match session {
        None if opens_session => {
            // A new session: count and create it in one step.
            let _one_at_a_time = gate.admitting.lock().await;
            if gate.sessions.sessions.read().await.len() >= gate.cap {
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "this server already has {} sessions (--max-sessions); close one or try \
                         later",
                        gate.cap
                    ),
                );
            }
            next.run(request).await
        }
        None => next.run(request).await,
        Some(session) => {
            // Armed before rmcp has the request: hyper drops this future when the client leaves
            // at any point, even before rmcp has given the stream of the answer.
            let watch = request_id.map(|id| Abandoned(Some((gate.sessions.clone(), session, id))));
            let response = next.run(request).await;
            match watch {
                Some(watch) => cancel_when_abandoned(response, watch),
                None => response,
            }
        }
    };
    whole_if_quick(response).await
}

/// How long the gate holds a streamed answer's head for the stream to end.
const QUICK_ANSWER: Duration = Duration::from_millis(50);

/// The response, sent whole if its SSE stream ends within [`QUICK_ANSWER`]; else what came by
/// then, and the rest as it comes.
///
/// rmcp answers each request on a stream of its own: the head, a priming event, the answer, the
/// end. Sent as they come, they cost two or three writes and as many wake-ups of the client; sent
/// whole, one (measured: a session's `job_events` took two `writev`s, a sessionless one two
/// as well). A call still running then (a `job_wait`) gets its head and what it has sent, and
/// streams on as before, with its keep-alives.
///
/// Not rmcp's `json_response`: that serves sessionless requests only, whose head rmcp holds
/// until their first message anyway (it must know the HTTP status), while this serves sessions
/// (Codex's) as well and keeps their priming event.
async fn whole_if_quick(response: Response) -> Response {
    let streamed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|kind| kind.as_bytes().starts_with(b"text/event-stream"));
    if !streamed {
        return response;
    }
    let (parts, body) = response.into_parts();
    let mut stream = body.into_data_stream();
    let mut came = Vec::new();
    let held = tokio::time::sleep(QUICK_ANSWER);
    tokio::pin!(held);
    let ended = loop {
        tokio::select! {
            biased;
            chunk = stream.next() => match chunk {
                Some(Ok(chunk)) => came.push(Ok(chunk)),
                Some(Err(error)) => {
                    came.push(Err(error));
                    break false;
                }
                None => break true,
            },
            () = &mut held => break false,
        }
    };
    if ended {
        let whole: Vec<_> = came.into_iter().flatten().collect();
        return Response::from_parts(parts, Body::from(whole.concat()));
    }
    Response::from_parts(
        parts,
        Body::from_stream(futures::stream::iter(came).chain(stream)),
    )
}

/// A request in a session that the client may leave: dropped while armed (the client closed
/// the connection before the answer's end), it cancels the request, as a
/// `notifications/cancelled` from the client would.
struct Abandoned(Option<(Arc<LocalSessionManager>, Arc<str>, RequestId)>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        let Some((sessions, session, id)) = self.0.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cancelled = json!({
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": id, "reason": "the client closed the stream"},
        });
        let Ok(cancelled) = serde_json::from_value::<ClientJsonRpcMessage>(cancelled) else {
            return;
        };
        tracing::debug!(%id, "the client left before its answer; cancelling the request");
        runtime.spawn(async move {
            let _ = sessions.accept_message(&session, cancelled).await;
        });
    }
}

/// The response, whose body carries `watch` to its end (then disarmed).
fn cancel_when_abandoned(response: Response, watch: Abandoned) -> Response {
    let (parts, body) = response.into_parts();
    let stream = futures::stream::unfold(
        (body.into_data_stream(), watch),
        |(mut body, mut watch)| async move {
            match body.next().await {
                Some(chunk) => Some((chunk, (body, watch))),
                None => {
                    // Answered in full: nothing to cancel.
                    watch.0.take();
                    None
                }
            }
        },
    );
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Compares in time that does not depend on where the strings differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

async fn require_token(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let Some(token) = &guard.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same_secret(given.as_bytes(), token.as_bytes()) {
        return next.run(request).await;
    }
    let mut response = plain(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token: send `Authorization: Bearer <token>` with the server's \
         --auth-token",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The host part of a Host header: `[::1]:8000` → `::1`, `Example.com:80` → `example.com`.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None if host.matches(':').count() > 1 => host,
        None => host.split(':').next().unwrap_or(host),
    };
    name.to_ascii_lowercase()
}

/// Whether `origin` (`scheme://host[:port]`) is on loopback.
fn loopback_origin(origin: &str) -> bool {
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    let name = host_name(rest);
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

async fn check_host_and_origin(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    let headers: &HeaderMap = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(host_name);
    match host {
        Some(name) if guard.hosts.contains(&name) => {}
        Some(name) => {
            return plain(
                StatusCode::FORBIDDEN,
                format!(
                    "Host {name:?} is not one this server answers to; add it with --allowed-host"
                ),
            );
        }
        None => {
            return plain(StatusCode::FORBIDDEN, "a Host header is required");
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let allowed = loopback_origin(origin) || guard.origins.iter().any(|o| o == origin);
        if !allowed {
            return plain(
                StatusCode::FORBIDDEN,
                format!("Origin {origin:?} is not allowed; add it with --allowed-origin"),
            );
        }
    }
    next.run(request).await
}

/// The server's health: `ok` once Codex can take turns, `starting` while it comes up (both 200),
/// `codex_unavailable` with the problem and what to do when it cannot (503).
async fn healthz(State(manager): State<JobManager>) -> Response {
    let backend = manager.backend_info();
    let (status, code, problem) = match manager.codex_state() {
        Some(Ok(())) => ("ok", StatusCode::OK, None),
        None => ("starting", StatusCode::OK, None),
        Some(Err(problem)) => (
            "codex_unavailable",
            StatusCode::SERVICE_UNAVAILABLE,
            Some(problem),
        ),
    };
    let mut body = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "backend": backend.name,
        "codex_version": backend.codex_version,
        "jobs_running": manager.running_count(),
        "usage": manager.total_usage(),
    });
    if let Some(problem) = problem {
        body["problem"] = json!(problem);
    }
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body.to_string()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port_and_case() {
        assert_eq!(host_name("LocalHost:8000"), "localhost");
        assert_eq!(host_name("[::1]:8000"), "::1");
        assert_eq!(host_name("::1"), "::1");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn loopback_origins_are_recognised() {
        assert!(loopback_origin("http://localhost:6274"));
        assert!(loopback_origin("http://127.0.0.1"));
        assert!(loopback_origin("http://[::1]:3000"));
        assert!(!loopback_origin("https://evil.example"));
        assert!(!loopback_origin("null"));
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret(b"token", b"token"));
        assert!(!same_secret(b"token", b"tokem"));
        assert!(!same_secret(b"tok", b"token"));
    }

    #[test]
    fn a_public_address_needs_a_token() {
        let settings = HttpSettings {
            transport: HttpTransport::StreamableHttp,
            mount_path: "/mcp".into(),
            auth_token: None,
            allowed_hosts: vec![],
            allowed_origins: vec![],
            max_sessions: 1,
            session_idle: Duration::from_secs(1),
            max_body_bytes: 1,
        };
        let public: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        assert!(check_bind(&public, &settings).is_err());
        assert!(check_bind(&loopback, &settings).is_ok());
        let with_token = HttpSettings {
            auth_token: Some("t".into()),
            ..settings
        };
        assert!(check_bind(&public, &with_token).is_ok());
    }
}
