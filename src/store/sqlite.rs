//! The store as one SQLite database (bundled SQLite, WAL).
//!
//! Writes go through one connection, reads through another, so a client paging through a long
//! job does not hold up Codex's events. WAL with `synchronous=NORMAL` makes a commit a write to
//! the log without an fsync: it survives the process being killed at any point (the OS has the
//! bytes); only a power loss can take back the last transactions. The schema is versioned with
//! `PRAGMA user_version` and migrated forward at start-up.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OptionalExtension as _, params, params_from_iter};

use super::{Loaded, LoadedJob, Problem, Store, StoreError, Write};
use crate::model::{Event, EventKind, EventPage, EventQuery, JobId, JobRecord, Notification};

/// Each entry moves the schema one version forward; the database's `user_version` counts how
/// many have been applied. Never edit an entry that has shipped: add one.
const MIGRATIONS: &[&str] = &[
    // 1: jobs, their events, the notification feed.
    "CREATE TABLE jobs (
         id TEXT PRIMARY KEY,
         status TEXT NOT NULL,
         updated_at TEXT NOT NULL,
         record TEXT NOT NULL
     );
     CREATE TABLE events (
         job_id TEXT NOT NULL,
         seq INTEGER NOT NULL,
         kind TEXT NOT NULL,
         at TEXT NOT NULL,
         turn INTEGER NOT NULL,
         data TEXT NOT NULL,
         PRIMARY KEY (job_id, seq)
     ) WITHOUT ROWID;
     CREATE TABLE notifications (
         seq INTEGER PRIMARY KEY,
         job_id TEXT NOT NULL,
         body TEXT NOT NULL
     );
     CREATE INDEX notifications_by_job ON notifications (job_id, seq);
     CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
    // 2: filtering a long job's events by type without scanning them all.
    "CREATE INDEX events_by_kind ON events (job_id, kind, seq);",
    // 3: the default view (no streamed pieces) of a job that streamed a million of them, without
    // walking past them. SQLite uses a partial index only for a query that repeats its
    // condition, which `shown_condition()` writes (since 4).
    "CREATE INDEX events_shown ON events (job_id, seq)
         WHERE kind NOT IN ('agent_message_delta', 'reasoning_delta', 'command_output_delta');",
    // 4: the same index with its condition written as comparisons. SQLite checks a partial
    // index's condition on every row saved, and built a temporary table for the `NOT IN` list
    // each time: about 19,000 instructions more for every event saved (callgrind).
    "DROP INDEX events_shown;
     CREATE INDEX events_shown ON events (job_id, seq)
         WHERE kind <> 'agent_message_delta' AND kind <> 'reasoning_delta'
             AND kind <> 'command_output_delta';",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

const INSERT_EVENT: &str = "INSERT INTO events (job_id, seq, kind, at, turn, data)
                            VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

pub struct SqliteStore {
    path: PathBuf,
    /// Shared with the checkpointer, which restarts the log on it (see [`checkpoint_loop`]).
    writer: Arc<Mutex<Connection>>,
    reader: Mutex<Connection>,
    /// Tells the checkpointer that something was written; it ends when this is dropped.
    written: SyncSender<()>,
}

/// How long the checkpointer lets writes gather before it copies them into the database, so one
/// checkpoint (one fsync) covers a burst.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The kind of problem a SQLite error is.
fn problem(e: &rusqlite::Error) -> Problem {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => Problem::DiskFull,
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => Problem::Damaged,
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            Problem::NotWritable
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Problem::Busy,
        _ => Problem::Other,
    }
}

/// Says what a SQLite error at `path` means for the person running the server.
fn explain(path: &Path, e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => format!(
            "the job database {} is damaged ({e}). Move it (and its -wal and -shm files) aside to \
             start with an empty one, or restore a backup",
            path.display()
        ),
        Some(ErrorCode::DiskFull) => format!(
            "the disk that holds {} is full ({e}). Free some space",
            path.display()
        ),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => format!(
            "the job database {} cannot be opened for reading and writing ({e}). Check that it \
             is a file this user may read and write, or pass another --state-dir",
            path.display()
        ),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => format!(
            "the job database {} is locked by another process ({e})",
            path.display()
        ),
        _ => format!("{} ({e})", path.display()),
    }
}

/// Each connection's page cache: 512 KiB, not SQLite's 2 MiB. Reads are of recent events, which
/// the OS keeps cached anyway; measured, a 20,000-event turn grew the server by 4.6 MiB instead
/// of 6.3 MiB.
///
/// The query planner's stability guarantee keeps a cached statement's plan: without it, this
/// SQLite (built with STAT4) compiles a query again whenever a value bound in its WHERE changes,
/// which was a tenth of the server's time under a load of `job_events` calls.
fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let open = |e: rusqlite::Error| StoreError::Open(explain(path, &e));
    let connection = Connection::open(path).map_err(open)?;
    // `synchronous` first: a new database's switch to WAL is then written with one fsync fewer
    // (five instead of six before a first start answers `initialize`, counted with strace).
    connection
        .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA journal_mode = WAL;")
        .map_err(open)?;
    tune(connection, path)
}

/// What every connection sets, the read-only ones too.
fn tune(connection: Connection, path: &Path) -> Result<Connection, StoreError> {
    let open = |e: rusqlite::Error| StoreError::Open(explain(path, &e));
    connection
        .execute_batch("PRAGMA busy_timeout = 5000; PRAGMA cache_size = -512;")
        .map_err(open)?;
    connection
        .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(open)?;
    Ok(connection)
}

impl SqliteStore {
    /// Opens (creating if needed, mode 0600) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        create_private_file(path)?;
        let mut writer = open_connection(path)?;
        migrate(&mut writer, path)?;
        // SQLite checkpoints on the committing connection by default: then a commit now and
        // then waits for the database file's fsync, on the thread that applies Codex's events.
        // The checkpointer does it on a thread of its own instead.
        writer
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| StoreError::Open(explain(path, &e)))?;
        let reader = open_connection(path)?;
        let (written, writes) = std::sync::mpsc::sync_channel(1);
        let checkpointer = open_connection(path)?;
        let writer = Arc::new(Mutex::new(writer));
        let restarter = Arc::downgrade(&writer);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpointer, &restarter, &writes))
            .map_err(|e| StoreError::Open(format!("could not start the checkpoint thread: {e}")))?;
        Ok(Self {
            path: path.to_owned(),
            writer,
            reader: Mutex::new(reader),
            written,
        })
    }

    /// Opens the database at `path` only to read it, beside a server that may be running on it:
    /// no lock, no migration, no checkpoints; a write fails as on a read-only file.
    pub fn open_to_read(path: &Path) -> Result<Self, StoreError> {
        use rusqlite::OpenFlags;
        if !path.exists() {
            return Err(StoreError::Open(format!(
                "there is no job database at {}: no server has run with this state directory. \
                 Pass the --state-dir the server runs with",
                path.display()
            )));
        }
        let open = |e: rusqlite::Error| StoreError::Open(explain(path, &e));
        let read_only = || {
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            tune(
                Connection::open_with_flags(path, flags).map_err(open)?,
                path,
            )
        };
        let reader = read_only()?;
        let found = schema_version(&reader, path)?;
        if found != SCHEMA_VERSION {
            return Err(StoreError::Open(format!(
                "the job database {} has schema version {found}; this codex-async-mcp reads \
                 version {SCHEMA_VERSION}. Run the codex-async-mcp that serves it",
                path.display()
            )));
        }
        // Nobody listens: nothing is written to checkpoint.
        let (written, _) = std::sync::mpsc::sync_channel(1);
        Ok(Self {
            path: path.to_owned(),
            writer: Arc::new(Mutex::new(read_only()?)),
            reader: Mutex::new(reader),
            written,
        })
    }

    /// One job's record as last saved, if the database has it.
    pub fn read_job(&self, job: &JobId) -> Result<Option<JobRecord>, StoreError> {
        let connection = self.reader()?;
        let record: Option<String> = connection
            .prepare_cached("SELECT record FROM jobs WHERE id = ?1")
            .and_then(|mut statement| {
                statement
                    .query_row(params![job.as_str()], |row| row.get(0))
                    .optional()
            })
            .map_err(|e| self.read_error(e))?;
        record
            .map(|record| {
                serde_json::from_str(&record).map_err(|e| StoreError::Read {
                    problem: Problem::Damaged,
                    detail: format!("the record of job {job} is not readable: {e}"),
                })
            })
            .transpose()
    }

    fn writer(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.writer.lock().map_err(|_| StoreError::Write {
            problem: Problem::Other,
            detail: "the writer connection was poisoned".into(),
        })
    }

    fn reader(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.reader.lock().map_err(|_| StoreError::Read {
            problem: Problem::Other,
            detail: "the reader connection was poisoned".into(),
        })
    }

    fn read_error(&self, e: rusqlite::Error) -> StoreError {
        StoreError::Read {
            problem: problem(&e),
            detail: explain(&self.path, &e),
        }
    }

    fn write_error(&self, e: rusqlite::Error) -> StoreError {
        StoreError::Write {
            problem: problem(&e),
            detail: explain(&self.path, &e),
        }
    }
}

/// Copies what was written from the log into the database, a burst at a time, until the store
/// is dropped. A passive checkpoint never blocks the writer or a reader; a commit needs no
/// fsync in WAL mode with `synchronous=NORMAL`, so durability is as before.
///
/// Except one: the first commit after the whole log was copied starts the log afresh, and SQLite
/// fsyncs the log's new header then. That commit was one of Codex's or a client's, and waited
/// 0.4 to 3.3 ms for it (traced: one commit in forty under the benchmark). So the checkpointer
/// makes that commit itself, at once, on the writer's connection: a count of restarts.
fn checkpoint_loop(
    connection: &Connection,
    writer: &Weak<Mutex<Connection>>,
    writes: &Receiver<()>,
) {
    while writes.recv().is_ok() {
        std::thread::sleep(CHECKPOINT_EVERY);
        while writes.try_recv().is_ok() {}
        // Whether it was blocked, the log's frames, and how many of them are in the database.
        let checkpointed = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        });
        match checkpointed {
            Ok((0, log, copied)) if log > 0 && log == copied => restart_log(writer),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "a checkpoint of the job database failed; the next write retries it")
            }
        }
    }
}

/// Makes the commit that starts the log afresh, on the writer's connection: writes wait for it
/// as for any other, and never find the log changed under them.
fn restart_log(writer: &Weak<Mutex<Connection>>) {
    let Some(writer) = writer.upgrade() else {
        return;
    };
    let Ok(connection) = writer.lock() else {
        return;
    };
    let restarted = connection.execute(
        "INSERT INTO counters (name, value) VALUES ('log_restarts', 1)
         ON CONFLICT (name) DO UPDATE SET value = value + 1",
        [],
    );
    if let Err(e) = restarted {
        tracing::debug!(error = %e, "could not restart the job database's log; the next write does");
    }
}

/// Creates the file with mode 0600 if it is missing, so SQLite (and its -wal and -shm files,
/// which copy the database's mode) never make it readable by others.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path);
    let fail = |e: std::io::Error| {
        StoreError::Open(format!(
            "the job database {} cannot be opened ({e}). Check that it is a file this user may \
             read and write, or pass another --state-dir",
            path.display()
        ))
    };
    let file = opened.map_err(fail)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)
}

/// How many of `MIGRATIONS` the database at `path` has had (a nonsense count reads as more
/// than any).
fn schema_version(connection: &Connection, path: &Path) -> Result<usize, StoreError> {
    let found: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| StoreError::Open(explain(path, &e)))?;
    Ok(usize::try_from(found).unwrap_or(usize::MAX))
}

fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let open = |e: rusqlite::Error| StoreError::Open(explain(path, &e));
    let found = schema_version(connection, path)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Open(format!(
            "the job database {} has schema version {found}, newer than this codex-async-mcp \
             understands ({SCHEMA_VERSION}). Run a newer codex-async-mcp, or pass another --state-dir",
            path.display()
        )));
    }
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(found) {
        let tx = connection.transaction().map_err(open)?;
        tx.execute_batch(migration).map_err(open)?;
        tx.pragma_update(None, "user_version", int(version as u64 + 1))
            .map_err(open)?;
        tx.commit().map_err(open)?;
        tracing::info!(version = version + 1, "migrated the job database");
    }
    Ok(())
}

/// Applies only the first `version` migrations: for tests of upgrading an older database.
#[cfg(test)]
fn create_at_version(path: &Path, version: usize) -> Result<(), StoreError> {
    create_private_file(path)?;
    let connection = open_connection(path)?;
    let open = |e: rusqlite::Error| StoreError::Open(explain(path, &e));
    for (done, migration) in MIGRATIONS.iter().take(version).enumerate() {
        connection.execute_batch(migration).map_err(open)?;
        connection
            .pragma_update(None, "user_version", int(done as u64 + 1))
            .map_err(open)?;
    }
    Ok(())
}

/// SQLite integers are i64; seqs and counters are u64 that never come near 2^63.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn uint(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The condition that leaves out the kinds `hidden` names, with them written out: it is
/// `events_shown`'s condition when they are the default view's.
fn shown_condition(hidden: &[EventKind]) -> String {
    if hidden.is_empty() {
        return "true".to_owned();
    }
    let kinds: Vec<String> = (hidden.iter())
        .map(|k| format!("kind <> '{}'", k.as_str()))
        .collect();
    kinds.join(" AND ")
}

/// A transaction begun and ended by cached statements. rusqlite's own has SQLite parse `BEGIN`
/// and its end anew each time: about a third of a page read's time under the benchmark's 32 HTTP
/// clients. Dropped without [`Transaction::commit`], it is rolled back.
struct Transaction<'c>(&'c Connection);

impl<'c> Transaction<'c> {
    fn begin(connection: &'c Connection) -> rusqlite::Result<Self> {
        connection.prepare_cached("BEGIN")?.execute([])?;
        Ok(Self(connection))
    }

    fn commit(self) -> rusqlite::Result<()> {
        self.0.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.0
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        // Still open: not committed, or its COMMIT failed (SQLite keeps it open on SQLITE_BUSY).
        if !self.0.is_autocommit() {
            let rolled_back = self
                .0
                .prepare_cached("ROLLBACK")
                .and_then(|mut statement| statement.execute([]));
            if let Err(e) = rolled_back {
                tracing::error!(error = %e, "a transaction of the job database could not be rolled back");
            }
        }
    }
}

/// The SQL of a page of `job`'s events, and its values.
fn events_query(job: &JobId, query: &EventQuery) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut values: Vec<Value> = vec![
        job.as_str().to_owned().into(),
        i64::try_from(query.after).unwrap_or(i64::MAX).into(),
    ];
    let hidden = query.hidden();
    // Told, as SQLite cannot know without statistics that the index holds few of the rows.
    let index = if hidden.is_empty() {
        ""
    } else {
        "INDEXED BY events_shown"
    };
    let kinds = match &query.types {
        Some(types) => {
            values.extend(types.iter().map(|k| Value::from(k.as_str().to_owned())));
            format!("kind IN ({})", vec!["?"; types.len()].join(", "))
        }
        None => shown_condition(&hidden),
    };
    let turn = query.turn.map_or(Value::Null, |t| i64::from(t).into());
    values.push(turn.clone());
    values.push(turn);
    values.push(
        i64::try_from(query.limit.saturating_add(1))
            .unwrap_or(i64::MAX)
            .into(),
    );
    let sql = format!(
        "SELECT seq, kind, at, turn, data FROM events {index}
         WHERE job_id = ? AND seq > ? AND {kinds} AND (? IS NULL OR turn = ?)
         ORDER BY seq LIMIT ?"
    );
    (sql, values)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Write {
        problem: Problem::Other,
        detail: e.to_string(),
    })
}

impl Store for SqliteStore {
    fn write(&self, batch: &[Write]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let fail = |e: rusqlite::Error| self.write_error(e);
        let connection = self.writer()?;
        let tx = Transaction::begin(&connection).map_err(fail)?;
        // Cached statements: a flood of events runs the same few, prepared once per connection.
        let run = |sql: &str, values: &[&dyn rusqlite::ToSql]| {
            tx.prepare_cached(sql)
                .and_then(|mut statement| statement.execute(values))
                .map_err(fail)
        };
        for write in batch {
            match write {
                Write::Job(job) => {
                    run(
                        "INSERT INTO jobs (id, status, updated_at, record) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (id) DO UPDATE SET
                             status = excluded.status,
                             updated_at = excluded.updated_at,
                             record = excluded.record",
                        params![
                            job.id.as_str(),
                            job.status.as_str(),
                            job.updated_at,
                            to_json(job)?
                        ],
                    )?;
                }
                Write::Event(job, event) => {
                    run(
                        INSERT_EVENT,
                        params![
                            job.as_str(),
                            int(event.seq),
                            event.kind.as_str(),
                            event.at,
                            i64::from(event.turn),
                            to_json(&event.data)?
                        ],
                    )?;
                }
                Write::Notification(notification) => {
                    run(
                        "INSERT INTO notifications (seq, job_id, body) VALUES (?1, ?2, ?3)",
                        params![
                            int(notification.seq),
                            notification.job_id.as_str(),
                            to_json(notification)?
                        ],
                    )?;
                }
                Write::DeleteJob(job) => {
                    // The newest seq is kept aside only when a deletion could take it: a
                    // counter written with every notification was a page more in every commit
                    // that ends a turn. (`WHERE true` tells the parser that the upsert's ON
                    // CONFLICT is not a join's.)
                    run(
                        "INSERT INTO counters (name, value)
                         SELECT 'last_notification', coalesce(MAX(seq), 0) FROM notifications
                         WHERE true
                         ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
                        params![],
                    )?;
                    for table in [
                        "DELETE FROM events WHERE job_id = ?1",
                        "DELETE FROM notifications WHERE job_id = ?1",
                        "DELETE FROM jobs WHERE id = ?1",
                    ] {
                        run(table, params![job.as_str()])?;
                    }
                }
            }
        }
        tx.commit().map_err(fail)?;
        // Full means a checkpoint is due already.
        let _ = self.written.try_send(());
        Ok(())
    }

    fn read_events(&self, job: &JobId, query: &EventQuery) -> Result<EventPage, StoreError> {
        let connection = self.reader()?;
        // One read transaction: the page and the job's newest seq come from the same snapshot.
        let tx = Transaction::begin(&connection).map_err(|e| self.read_error(e))?;
        let (sql, values) = events_query(job, query);
        let mut events = {
            let mut statement = tx.prepare_cached(&sql).map_err(|e| self.read_error(e))?;
            let rows = statement
                .query_map(params_from_iter(values), |row| {
                    let kind: String = row.get(1)?;
                    let data: String = row.get(4)?;
                    Ok((
                        uint(row.get::<_, i64>(0)?),
                        kind,
                        row.get::<_, String>(2)?,
                        u32::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                        data,
                    ))
                })
                .map_err(|e| self.read_error(e))?;
            let mut events = Vec::new();
            for row in rows {
                let (seq, kind, at, turn, data) = row.map_err(|e| self.read_error(e))?;
                let kind = EventKind::parse(&kind).unwrap_or_else(|| {
                    tracing::warn!(%job, seq, kind, "an event of a kind this server does not know");
                    EventKind::CodexEvent
                });
                // One unreadable event must not make the whole job unreadable.
                let data = serde_json::from_str(&data).unwrap_or_else(|e| {
                    tracing::error!(%job, seq, error = %e, "an event's data cannot be read back");
                    serde_json::json!({"unreadable": format!("this event's data cannot be read back: {e}")})
                });
                events.push(Event {
                    seq,
                    kind,
                    at,
                    turn,
                    data,
                });
            }
            events
        };
        let has_more = events.len() > query.limit;
        events.truncate(query.limit);
        let cursor = if has_more {
            events.last().map_or(query.after, |e| e.seq)
        } else {
            let newest: Option<i64> = tx
                .prepare_cached("SELECT MAX(seq) FROM events WHERE job_id = ?1")
                .and_then(|mut statement| {
                    statement.query_row(params![job.as_str()], |row| row.get(0))
                })
                .map_err(|e| self.read_error(e))?;
            newest.map_or(0, uint).max(query.after)
        };
        Ok(EventPage {
            events,
            cursor,
            has_more,
        })
    }

    fn read_notifications(
        &self,
        after: u64,
        job: Option<&JobId>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        let connection = self.reader()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let mut statement = connection
            .prepare_cached(
                "SELECT body FROM notifications
                 WHERE seq > ?1 AND (?2 IS NULL OR job_id = ?2)
                 ORDER BY seq LIMIT ?3",
            )
            .map_err(|e| self.read_error(e))?;
        let rows = statement
            .query_map(params![after, job.map(JobId::as_str), limit], |row| {
                row.get::<_, String>(0)
            })
            .map_err(|e| self.read_error(e))?;
        rows.map(|row| {
            let body = row.map_err(|e| self.read_error(e))?;
            serde_json::from_str(&body).map_err(|e| StoreError::Read {
                problem: Problem::Damaged,
                detail: format!("a notification is not JSON: {e}"),
            })
        })
        .collect()
    }

    fn load(&self) -> Result<Loaded, StoreError> {
        let connection = self.reader()?;
        let read = |e| self.read_error(e);
        let mut statement = connection
            .prepare(
                "SELECT j.record,
                        (SELECT MAX(seq) FROM events e WHERE e.job_id = j.id),
                        (SELECT MAX(seq) FROM notifications n WHERE n.job_id = j.id)
                 FROM jobs j ORDER BY j.id",
            )
            .map_err(read)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<i64>>(1)?.map(uint),
                    row.get::<_, Option<i64>>(2)?.map(uint),
                ))
            })
            .map_err(read)?;
        let mut jobs = Vec::new();
        for row in rows {
            let (record, last_seq, last_notification) = row.map_err(read)?;
            let mut record: JobRecord =
                serde_json::from_str(&record).map_err(|e| StoreError::Read {
                    problem: Problem::Damaged,
                    detail: format!("a job record is not readable: {e}"),
                })?;
            record.last_seq = last_seq.unwrap_or(0);
            jobs.push(LoadedJob {
                record,
                last_notification,
            });
        }
        // The feed's newest entry, or the newest a deletion took if that was newer.
        let last_notification: i64 = connection
            .query_row(
                "SELECT max(
                     coalesce((SELECT MAX(seq) FROM notifications), 0),
                     coalesce((SELECT value FROM counters WHERE name = 'last_notification'), 0))",
                [],
                |row| row.get(0),
            )
            .map_err(read)?;
        Ok(Loaded {
            jobs,
            last_notification: uint(last_notification),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{JobStatus, ThreadOptions, sample_notification};
    use serde_json::json;

    fn record(id: &str) -> JobRecord {
        JobRecord {
            id: JobId::from(id),
            status: JobStatus::Completed,
            thread_id: Some("t".into()),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:00.000Z".into(),
            turns: 1,
            prompt: "p".into(),
            options: ThreadOptions::default(),
            client_request_id: None,
            last_message: Some("m".into()),
            error: None,
            last_seq: 0,
            approvals: crate::model::Approvals::Relay,
            usage: Default::default(),
            forked_from: None,
            worktree: None,
            result_json: None,
            changes: None,
        }
    }

    fn event(seq: u64, kind: EventKind) -> Event {
        Event {
            seq,
            kind,
            at: "2026-01-01T00:00:00.000Z".into(),
            turn: 1,
            data: json!({"n": seq}),
        }
    }

    fn fill(store: &SqliteStore, job: &str, kinds: &[EventKind]) {
        let mut batch = vec![Write::Job(Box::new(record(job)))];
        for (i, kind) in kinds.iter().enumerate() {
            batch.push(Write::Event(JobId::from(job), event(i as u64 + 1, *kind)));
        }
        store.write(&batch).unwrap();
    }

    fn user_version(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_new_database_is_created_private_at_the_current_schema() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        SqliteStore::open(&path).unwrap();
        assert_eq!(user_version(&path), SCHEMA_VERSION as i64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_database_of_the_previous_schema_is_migrated_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        create_at_version(&path, SCHEMA_VERSION - 1).unwrap();
        {
            // Written as the previous version's server would have.
            let connection = Connection::open(&path).unwrap();
            connection
                .execute(
                    "INSERT INTO jobs (id, status, updated_at, record) VALUES ('job-old', 'completed', 'x', ?1)",
                    params![serde_json::to_string(&record("job-old")).unwrap()],
                )
                .unwrap();
            connection
                .execute(
                    "INSERT INTO events (job_id, seq, kind, at, turn, data) VALUES ('job-old', 1, 'agent_message', 'x', 1, '{}')",
                    [],
                )
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(user_version(&path), SCHEMA_VERSION as i64);
        let loaded = store.load().unwrap();
        assert_eq!(loaded.jobs.len(), 1);
        assert_eq!(loaded.jobs[0].record.id.as_str(), "job-old");
        assert_eq!(loaded.jobs[0].record.last_seq, 1);
    }

    #[test]
    fn a_database_from_a_newer_server_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        SqliteStore::open(&path).unwrap();
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let Err(e) = SqliteStore::open(&path) else {
            panic!("opened a database from the future")
        };
        let message = e.to_string();
        assert!(
            message.contains("schema version 99") && message.contains("newer"),
            "{message}"
        );
    }

    #[test]
    fn a_damaged_database_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let Err(e) = SqliteStore::open(&path) else {
            panic!("opened garbage")
        };
        let message = e.to_string();
        assert!(
            message.contains("damaged") && message.contains("aside"),
            "{message}"
        );
    }

    #[test]
    fn a_database_path_that_is_not_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        std::fs::create_dir(&path).unwrap();
        let Err(e) = SqliteStore::open(&path) else {
            panic!("opened a directory")
        };
        assert!(e.to_string().contains("--state-dir"), "{e}");
    }

    #[test]
    fn what_is_written_reaches_the_database_file_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        let store = SqliteStore::open(&path).unwrap();
        let file_size = || std::fs::metadata(&path).unwrap().len();
        let before = file_size();
        store.write(&[Write::Job(Box::new(record("j")))]).unwrap();
        // Far fewer log pages than SQLite's own checkpoint waits for (1,000), one commit each.
        for seq in 1..=50 {
            let event = event(seq, EventKind::AgentMessageDelta);
            store
                .write(&[Write::Event(JobId::from("j"), event)])
                .unwrap();
        }
        until("the events stayed in the write-ahead log", || {
            file_size() > before
        });
    }

    /// Waits until `done` holds, failing with `otherwise` after 20 s: for the checkpointer's
    /// work, which no call of the test's waits for.
    fn until(otherwise: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{otherwise}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn once_the_log_is_copied_the_checkpointer_starts_it_afresh_not_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        let store = SqliteStore::open(&path).unwrap();
        store.write(&[Write::Job(Box::new(record("j")))]).unwrap();
        // The log's header names its generation (checkpoint count and salts), which a restart
        // changes.
        let log = dir.path().join("jobs.sqlite-wal");
        let generation = || std::fs::read(&log).unwrap()[12..24].to_vec();
        let written = generation();
        until("the log was left for the next commit to restart", || {
            generation() != written
        });
        let restarts: i64 = (store.reader().unwrap())
            .query_row(
                "SELECT value FROM counters WHERE name = 'log_restarts'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(restarts, 1);
    }

    #[test]
    fn a_full_disk_fails_the_write_whole_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("jobs.sqlite")).unwrap();
        fill(&store, "job-a", &[EventKind::AgentMessage]);
        // Cap the file at its current size: the next growth fails as a full disk would.
        let pages: i64 = store
            .writer()
            .unwrap()
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        store
            .writer()
            .unwrap()
            .pragma_update(None, "max_page_count", pages)
            .unwrap();
        let big = "x".repeat(64 * 1024);
        let batch = vec![
            Write::Event(JobId::from("job-a"), event(2, EventKind::AgentMessage)),
            Write::Event(
                JobId::from("job-a"),
                Event {
                    data: json!({"text": big}),
                    ..event(3, EventKind::AgentMessage)
                },
            ),
        ];
        let saved = || {
            let all = EventQuery {
                limit: 10,
                ..EventQuery::default()
            };
            store
                .read_events(&JobId::from("job-a"), &all)
                .unwrap()
                .events
                .len()
        };
        let e = store.write(&batch).unwrap_err();
        assert!(e.to_string().contains("full"), "{e}");
        assert_eq!(saved(), 1, "nothing of the failed batch was saved");
        // Rolled back, not left open: once there is room, the same batch is saved.
        store
            .writer()
            .unwrap()
            .pragma_update(None, "max_page_count", 1_000_000)
            .unwrap();
        store.write(&batch).unwrap();
        assert_eq!(saved(), 3);
    }

    #[test]
    fn saving_an_event_builds_no_temporary_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("jobs.sqlite")).unwrap();
        let connection = store.writer().unwrap();
        let mut explained = connection
            .prepare(&format!("EXPLAIN {INSERT_EVENT}"))
            .unwrap();
        let opcodes: Vec<String> = explained
            .query_map(params_from_iter([rusqlite::types::Null; 6]), |row| {
                row.get(1)
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let has = |opcode: &str| opcodes.iter().any(|op| op == opcode);
        assert!(has("IdxInsert"), "the insert's program: {opcodes:?}");
        assert!(!has("OpenEphemeral"), "{opcodes:?}");
    }

    /// How SQLite finds a page of `query`, in its words.
    fn plan(store: &SqliteStore, query: &EventQuery) -> String {
        let (sql, values) = events_query(&JobId::from("job-a"), query);
        let connection = store.reader().unwrap();
        let mut statement = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let rows = statement
            .query_map(params_from_iter(values), |row| row.get::<_, String>(3))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn paging_through_a_job_reuses_the_compiled_query() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("jobs.sqlite")).unwrap();
        fill(&store, "job-a", &[EventKind::AgentMessage; 6]);
        let page_after = |after| EventQuery {
            after,
            limit: 2,
            ..EventQuery::default()
        };
        for after in [0, 2, 4, 0] {
            store
                .read_events(&JobId::from("job-a"), &page_after(after))
                .unwrap();
        }
        let (sql, _) = events_query(&JobId::from("job-a"), &page_after(0));
        let connection = store.reader().unwrap();
        let statement = connection.prepare_cached(&sql).unwrap();
        assert_eq!(
            statement.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "each page compiled the query again"
        );
    }

    #[test]
    fn reads_and_writes_begin_and_end_their_transactions_with_compiled_statements() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("jobs.sqlite")).unwrap();
        fill(&store, "job-a", &[EventKind::AgentMessage; 3]);
        for _ in 0..4 {
            store
                .read_events(
                    &JobId::from("job-a"),
                    &EventQuery {
                        limit: 2,
                        ..EventQuery::default()
                    },
                )
                .unwrap();
        }
        let runs = |connection: &Connection, sql: &str| {
            let statement = connection.prepare_cached(sql).unwrap();
            statement.get_status(rusqlite::StatementStatus::Run)
        };
        let reader = store.reader().unwrap();
        assert_eq!(
            runs(&reader, "BEGIN"),
            4,
            "one compiled BEGIN for every page"
        );
        assert_eq!(runs(&reader, "ROLLBACK"), 4);
        let writer = store.writer().unwrap();
        assert!(
            runs(&writer, "COMMIT") >= 1,
            "the writer commits with its own"
        );
    }

    #[test]
    fn the_default_view_of_a_job_skips_its_streamed_pieces_without_reading_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("jobs.sqlite")).unwrap();
        let shown = plan(
            &store,
            &EventQuery {
                limit: 20,
                ..EventQuery::default()
            },
        );
        assert!(shown.contains("USING INDEX events_shown"), "{shown}");
        let with_deltas = plan(
            &store,
            &EventQuery {
                limit: 20,
                include_deltas: true,
                ..EventQuery::default()
            },
        );
        assert!(!with_deltas.contains("events_shown"), "{with_deltas}");
    }

    #[test]
    fn pages_of_events_continue_from_the_cursor_with_filters() {
        use EventKind::*;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("jobs.sqlite")).unwrap();
        fill(
            &store,
            "job-a",
            &[
                TurnStarted,
                AgentMessageDelta,
                AgentMessage,
                AgentMessageDelta,
                TurnCompleted,
            ],
        );
        let job = JobId::from("job-a");
        let seqs = |page: &EventPage| page.events.iter().map(|e| e.seq).collect::<Vec<_>>();

        let first = store
            .read_events(
                &job,
                &EventQuery {
                    limit: 2,
                    ..EventQuery::default()
                },
            )
            .unwrap();
        assert_eq!(seqs(&first), [1, 3], "deltas hidden by default");
        assert!(first.has_more);
        assert_eq!(first.cursor, 3);
        let rest = store
            .read_events(
                &job,
                &EventQuery {
                    after: first.cursor,
                    limit: 2,
                    ..EventQuery::default()
                },
            )
            .unwrap();
        assert_eq!(seqs(&rest), [5]);
        assert!(!rest.has_more);
        assert_eq!(rest.cursor, 5);

        let deltas = EventQuery {
            limit: 10,
            types: Some(vec![AgentMessageDelta]),
            ..EventQuery::default()
        };
        let page = store.read_events(&job, &deltas).unwrap();
        assert_eq!(seqs(&page), [2, 4]);
        assert_eq!(
            page.cursor, 5,
            "everything up to the newest event was looked at"
        );
        let all = EventQuery {
            limit: 10,
            include_deltas: true,
            ..EventQuery::default()
        };
        assert_eq!(
            seqs(&store.read_events(&job, &all).unwrap()),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(
            store.read_events(&job, &all).unwrap().events[1].data,
            json!({"n": 2})
        );
    }

    #[test]
    fn the_feed_goes_on_from_its_newest_notification_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        let store = SqliteStore::open(&path).unwrap();
        fill(&store, "job-a", &[EventKind::AgentMessage]);
        store
            .write(&[
                Write::Notification(Box::new(sample_notification(1, "job-a"))),
                Write::Notification(Box::new(sample_notification(2, "job-a"))),
            ])
            .unwrap();
        drop(store);
        let loaded = SqliteStore::open(&path).unwrap().load().unwrap();
        assert_eq!(loaded.last_notification, 2);
    }

    #[test]
    fn deleting_a_job_takes_its_events_and_notifications_but_not_the_feed_counter() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("jobs.sqlite")).unwrap();
        fill(&store, "job-a", &[EventKind::AgentMessage]);
        fill(&store, "job-b", &[EventKind::AgentMessage]);
        store
            .write(&[
                Write::Notification(Box::new(sample_notification(1, "job-a"))),
                Write::Notification(Box::new(sample_notification(2, "job-b"))),
            ])
            .unwrap();
        store
            .write(&[Write::DeleteJob(JobId::from("job-b"))])
            .unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.jobs.len(), 1);
        assert_eq!(
            loaded.last_notification, 2,
            "seqs are never handed out twice"
        );
        assert_eq!(loaded.jobs[0].last_notification, Some(1));
        let feed = store.read_notifications(0, None, 10).unwrap();
        assert_eq!(feed.iter().map(|n| n.seq).collect::<Vec<_>>(), [1]);
        let events = store
            .read_events(
                &JobId::from("job-b"),
                &EventQuery {
                    limit: 10,
                    ..EventQuery::default()
                },
            )
            .unwrap();
        assert!(events.events.is_empty());
    }
}
