//! The server's log, relayed to the MCP clients that ask for it: a client that sends
//! `logging/setLevel` gets this server's log lines at that level and above as
//! `notifications/message`, until it goes. A client that never asks gets none, so no client pays
//! for lines it did not want.
//!
//! The tracing layer only hands a line to a bounded queue (a full queue drops the line, never
//! the server's pace); one task sends each line to the clients that want it. Only this crate's
//! lines and Codex's stderr are relayed, and the relay logs nothing itself: a line about a
//! failed send would be relayed, and fail, again.
// MCP logging is deprecated by SEP-2577 (2026-07-28) but clients of the earlier versions use it.
#![allow(deprecated)]

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam};
use rmcp::{Peer, RoleServer};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::subscriber::Interest;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{Filtered, LevelFilter};
use tracing_subscriber::layer::Filter;

/// Lines waiting to be sent; more are dropped.
const QUEUE: usize = 256;

/// The targets whose lines are relayed: this crate's, and Codex's stderr (logged at debug).
const RELAYED: [&str; 2] = ["codex_async_mcp", "codex_stderr"];

/// One client that asked: the least severe level it wants (its `rank`), and how verbose that is.
struct Listener {
    peer: Peer<RoleServer>,
    level: Arc<AtomicU8>,
    verbosity: Arc<AtomicU8>,
}

struct Relay {
    listeners: Mutex<Vec<Listener>>,
    /// The most verbose level a listener wants (see `verbosity`); 0 while none listens.
    wanted: AtomicU8,
    lines: mpsc::Sender<(LoggingLevel, String, Value)>,
    /// Taken by the task that sends, started with the first listener.
    queued: Mutex<Option<mpsc::Receiver<(LoggingLevel, String, Value)>>>,
}

fn relay() -> &'static Relay {
    static RELAY: OnceLock<Relay> = OnceLock::new();
    RELAY.get_or_init(|| {
        let (lines, queued) = mpsc::channel(QUEUE);
        Relay {
            listeners: Mutex::new(Vec::new()),
            wanted: AtomicU8::new(0),
            lines,
            queued: Mutex::new(Some(queued)),
        }
    })
}

/// Severity, least first, as MCP orders the levels.
fn rank(level: LoggingLevel) -> u8 {
    level as u8
}

/// A client's wish for the log, kept by its session's handler: the first `logging/setLevel`
/// makes it a listener, later ones change its level.
#[derive(Clone, Default)]
pub(crate) struct ClientLog {
    /// Its level's `rank` and `verbosity`, once it has asked.
    level: Arc<OnceLock<(Arc<AtomicU8>, Arc<AtomicU8>)>>,
}

impl ClientLog {
    pub(crate) fn set_level(&self, peer: &Peer<RoleServer>, level: LoggingLevel) {
        let relay = relay();
        let Ok(mut listeners) = relay.listeners.lock() else {
            return;
        };
        // A client of the sessionless protocol leaves with its request: do not keep it.
        listeners.retain(|l| !l.peer.is_transport_closed());
        match self.level.get() {
            Some((wanted, verbose)) => {
                wanted.store(rank(level), Ordering::Relaxed);
                verbose.store(verbosity(level), Ordering::Relaxed);
            }
            None => {
                let wanted = Arc::new(AtomicU8::new(rank(level)));
                let verbose = Arc::new(AtomicU8::new(verbosity(level)));
                if self.level.set((wanted.clone(), verbose.clone())).is_ok() {
                    listeners.push(Listener {
                        peer: peer.clone(),
                        level: wanted,
                        verbosity: verbose,
                    });
                }
            }
        }
        update_wanted(relay, &listeners);
        drop(listeners);
        let queued = relay.queued.lock().ok().and_then(|mut q| q.take());
        if let Some(queued) = queued {
            tokio::spawn(send_lines(queued));
        }
    }
}

async fn send_lines(mut queued: mpsc::Receiver<(LoggingLevel, String, Value)>) {
    let relay = relay();
    while let Some((level, logger, data)) = queued.recv().await {
        let wanting: Vec<Peer<RoleServer>> = match relay.listeners.lock() {
            Ok(mut listeners) => {
                listeners.retain(|l| !l.peer.is_transport_closed());
                update_wanted(relay, &listeners);
                listeners
                    .iter()
                    .filter(|l| rank(level) >= l.level.load(Ordering::Relaxed))
                    .map(|l| l.peer.clone())
                    .collect()
            }
            Err(_) => return,
        };
        for peer in wanting {
            let note = LoggingMessageNotificationParam::new(level, data.clone())
                .with_logger(logger.clone());
            let _ = peer.notify_logging_message(note).await;
        }
    }
}

/// The tracing layer that feeds the relay, with its filter: install it beside the others.
pub fn layer<S>() -> Filtered<ClientLogLayer, ClientLogFilter, S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    ClientLogLayer.with_filter(ClientLogFilter)
}

pub struct ClientLogLayer;

impl<S: tracing::Subscriber> Layer<S> for ClientLogLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => LoggingLevel::Error,
            tracing::Level::WARN => LoggingLevel::Warning,
            tracing::Level::INFO => LoggingLevel::Info,
            tracing::Level::DEBUG | tracing::Level::TRACE => LoggingLevel::Debug,
        };
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let target = event.metadata().target().to_owned();
        let _ = relay()
            .lines
            .try_send((level, target, Value::Object(fields.0)));
    }
}

/// Lets through the relayed targets' lines as verbose as the most verbose listener wants, and
/// nothing while none listens: then a `debug!` costs what it cost without the relay.
pub struct ClientLogFilter;

fn relayed(target: &str) -> bool {
    RELAYED.iter().any(|t| {
        target
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

fn wanted() -> LevelFilter {
    match relay().wanted.load(Ordering::Relaxed) {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        _ => LevelFilter::DEBUG,
    }
}

/// The `wanted` code of an MCP level: how verbose a listener is.
fn verbosity(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 4,
        LoggingLevel::Info | LoggingLevel::Notice => 3,
        LoggingLevel::Warning => 2,
        _ => 1,
    }
}

impl<S> Filter<S> for ClientLogFilter {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _context: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        relayed(meta.target()) && *meta.level() <= wanted()
    }

    fn callsite_enabled(&self, meta: &'static tracing::Metadata<'static>) -> Interest {
        if relayed(meta.target()) && *meta.level() <= wanted() {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(wanted())
    }
}

/// Sets how verbose the relay is from its listeners, and has tracing ask the filter again.
fn update_wanted(relay: &Relay, listeners: &[Listener]) {
    let most = listeners
        .iter()
        .map(|l| l.verbosity.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    if relay.wanted.swap(most, Ordering::Relaxed) != most {
        tracing::callsite::rebuild_interest_cache();
    }
}

/// An event's fields as JSON: `message` and the rest by name.
struct Fields(Map<String, Value>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}
