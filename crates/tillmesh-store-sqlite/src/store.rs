//! The [`SqliteStore`] handle: opening files or private in-memory databases,
//! connection set-up (pragmas, migrations), the writer connection and reader pool,
//! running work on tokio's blocking pool, and error plumbing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::{Connection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use tillmesh_domain::ports::StoreError;

/// The schema, from the workspace's top-level `migrations/` folder.
pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT_MS: u32 = 5_000;

/// Reader connections of a file-backed store. Two matches the machines' two cores.
/// Measured: while a 20,000-op write transaction ran for ~0.9 s, the worst point read
/// took ~11 ms with readers and ~0.9 s without (it queued behind the writer).
const READERS: usize = 2;

/// Pragmas of the writer connection. `page_size` only matters when the file is
/// created: 8 KiB pages suit rows of ~1 KiB (a record or an entity state) and
/// measured ~10-20% more writes per CPU-second than 4 KiB. `journal_mode` is
/// persistent in the file; the others are per connection. (A `:memory:` database
/// keeps its `memory` journal.) Public so that benchmarks give their bare-SQLite
/// baselines the same settings.
///
/// `synchronous = FULL`: a commit is synced to the WAL before it returns and before
/// readers (so pullers) can see it. So a power cut loses no sale the till app was
/// told was saved, and no change a peer has pulled, which is what lets a terminal
/// keep its writer across power cuts (see the app's `identity.rs`). Group commit
/// shares one sync among the writes queued behind the writer.
pub const CONNECTION_PRAGMAS: &str = "PRAGMA page_size = 8192; \
     PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = FULL; \
     PRAGMA foreign_keys = ON; \
     PRAGMA temp_store = MEMORY; \
     PRAGMA cache_size = -16000;";

/// WAL pages after which the writer checkpoints by itself: only a safety net, as the
/// checkpointer thread normally keeps the WAL far below it (SQLite's default is 1,000).
/// During a long sync the WAL grows faster than the checkpointer can catch up; at
/// 8,000 pages (64 MB) the writer took over every ~0.5 s, blocking a sync for a copy
/// and two fsyncs (~60 ms, traced), so the net is wide enough for a whole burst.
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 32_000;

/// Size the WAL file is cut back to once a checkpoint emptied it, so that a burst's
/// WAL (up to [`WRITER_AUTOCHECKPOINT_PAGES`] pages of 8 KiB) does not stay on disk.
const WAL_SIZE_LIMIT_BYTES: u64 = 64 << 20;

/// Longest time between a commit and the checkpoint that copies it into the
/// database file (the commit itself is durable in the WAL already).
const CHECKPOINT_PERIOD: Duration = Duration::from_millis(250);

/// Pragmas of a reader connection (read-only, so an accidental write fails loudly).
const READER_PRAGMAS: &str = "PRAGMA synchronous = NORMAL; \
     PRAGMA foreign_keys = ON; \
     PRAGMA temp_store = MEMORY; \
     PRAGMA cache_size = -16000; \
     PRAGMA query_only = ON;";

/// Failure inside a transaction: a database error (mapped to
/// [`StoreError::Unexpected`]) or a store error to hand back as is. Both roll back.
#[derive(Debug)]
pub(crate) enum Fail {
    Db(DieselError),
    Store(StoreError),
}

impl From<DieselError> for Fail {
    fn from(e: DieselError) -> Self {
        Fail::Db(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl From<Fail> for StoreError {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Db(e) => StoreError::Unexpected(format!("sqlite: {e}")),
            Fail::Store(e) => e,
        }
    }
}

/// Result inside the store's blocking closures.
pub(crate) type Res<T> = Result<T, Fail>;

/// An [`StoreError::Unexpected`] as a [`Fail`].
pub(crate) fn unexpected(msg: impl Into<String>) -> Fail {
    Fail::Store(StoreError::Unexpected(msg.into()))
}

/// Whether a database error is a UNIQUE/PRIMARY KEY violation.
pub(crate) fn is_unique_violation(e: &DieselError) -> bool {
    matches!(e, DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))
}

/// Whether SQLite may have rolled back the whole transaction on this error (as it
/// does on I/O errors, a full disk or lack of memory). Constraint violations, a
/// missing row and values that do not convert only fail their statement or call.
fn may_end_transaction(e: &DieselError) -> bool {
    use DatabaseErrorKind as K;
    !matches!(
        e,
        DieselError::DatabaseError(
            K::UniqueViolation | K::ForeignKeyViolation | K::NotNullViolation | K::CheckViolation,
            _
        ) | DieselError::NotFound
            | DieselError::DeserializationError(_)
            | DieselError::SerializationError(_)
    )
}

/// Stored JSON that no longer decodes: corruption, reported as unexpected.
pub(crate) fn corrupt(what: &str, e: impl fmt::Display) -> Fail {
    unexpected(format!("stored {what} does not decode: {e}"))
}

/// A `u64` as SQLite's `INTEGER`.
pub(crate) fn to_i64(n: u64, what: &str) -> Res<i64> {
    i64::try_from(n).map_err(|_| unexpected(format!("{what} {n} exceeds the storable range")))
}

/// A stored `INTEGER` that must be non-negative.
pub(crate) fn to_u64(n: i64, what: &str) -> Res<u64> {
    u64::try_from(n).map_err(|_| unexpected(format!("stored {what} {n} is negative")))
}

/// A `usize` limit as a SQL `LIMIT` (saturating).
pub(crate) fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The SQLite implementation of every storage port
/// ([`tillmesh_domain::ports::Store`]).
///
/// Cheap to clone (all clones share the connections). Every port method runs its
/// database work on tokio's blocking pool (`spawn_blocking`), so it never blocks the
/// runtime; the methods must therefore be called from within a tokio runtime.
///
/// Connections: one writer behind a mutex (SQLite serializes writes anyway; every
/// write is one `BEGIN IMMEDIATE` transaction) and, for files, a small pool of
/// read-only connections that read beside the writer thanks to WAL. An in-memory
/// store has the one connection only.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the database lives, for `Debug` and messages.
    location: Option<PathBuf>,
    writer: Mutex<SqliteConnection>,
    /// Empty for in-memory stores: reads then use the writer.
    readers: Vec<Mutex<SqliteConnection>>,
    next_reader: AtomicUsize,
    /// File stores only: the thread that checkpoints the WAL.
    checkpoints: Option<Arc<Checkpoints>>,
    /// Writes waiting for the writer; whoever takes it runs all of them.
    queue: Mutex<Vec<Job>>,
}

/// A queued write. Given the connection inside the group's transaction and whether
/// it must isolate itself in a savepoint (other writes share the transaction), it
/// runs and returns how to hand its result over once the commit's outcome is known.
type Job = Box<dyn FnOnce(&mut SqliteConnection, bool) -> Ran + Send>;

/// A write that ran inside a group transaction.
struct Ran {
    /// Whether it succeeded (a lone failed write rolls the transaction back).
    ok: bool,
    /// It failed in SQLite in a way that may have rolled back the whole transaction
    /// ([`may_end_transaction`]); later writes of the group could then run outside
    /// any transaction, so the group is abandoned instead.
    db_failed: bool,
    /// Delivers its result, given the outcome of the group's commit.
    deliver: Box<dyn FnOnce(Result<(), String>) + Send>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(c) = &self.checkpoints {
            c.stop();
        }
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.location {
            Some(p) => write!(f, "SqliteStore({})", p.display()),
            None => f.write_str("SqliteStore(:memory:)"),
        }
    }
}

impl SqliteStore {
    /// Opens (creating it if needed) the database file at `path` and brings its schema
    /// up to date with the embedded migrations. The parent directory must exist.
    ///
    /// Blocking (it runs migrations): call it at start-up, or inside
    /// `tokio::task::spawn_blocking` from async code.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`] when the file cannot be opened or migrated.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let url = path
            .to_str()
            .ok_or_else(|| StoreError::Unexpected(format!("database path {} is not UTF-8", path.display())))?;
        let mut writer = connect(url, false)?;
        writer
            .batch_execute(&format!(
                "PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES}; \
                 PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES};"
            ))
            .map_err(|e| StoreError::Unexpected(format!("cannot configure database {url}: {e}")))?;
        let readers = (0..READERS).map(|_| connect(url, true).map(Mutex::new)).collect::<Result<Vec<_>, _>>()?;
        let checkpoints = Checkpoints::start(connect(url, false)?)?;
        let mut store = Self::from_parts(Some(path.to_path_buf()), writer, readers);
        if let Some(inner) = Arc::get_mut(&mut store.inner) {
            inner.checkpoints = Some(checkpoints);
        }
        Ok(store)
    }

    /// Opens a fresh private in-memory database: the memory-backed implementation of
    /// the storage ports (same code and schema as the file store, nothing persisted),
    /// for in-process harnesses and tests. Its one connection serves reads and writes.
    ///
    /// # Errors
    /// [`StoreError::Unexpected`] if SQLite cannot be initialised.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let writer = connect(":memory:", false)?;
        Ok(Self::from_parts(None, writer, Vec::new()))
    }

    fn from_parts(location: Option<PathBuf>, writer: SqliteConnection, readers: Vec<Mutex<SqliteConnection>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                location,
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                checkpoints: None,
                queue: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Copies every commit from the WAL into the database file and empties the WAL, so
    /// a data dir left by a clean shutdown is its database file alone (the WAL of a
    /// burst may otherwise stay on disk at its largest). Waits for readers and writes
    /// in progress. A failure is logged: the WAL keeps every commit meanwhile.
    pub async fn checkpoint(&self) {
        let inner = Arc::clone(&self.inner);
        // On the writer itself, outside any transaction (a checkpoint cannot run in one).
        let done = blocking(move || {
            let mut conn = lock(&inner.writer)?;
            conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE);")?;
            Ok(())
        })
        .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "final WAL checkpoint failed");
        }
    }

    /// Runs `f` atomically on the writer, on the blocking pool: any error undoes all
    /// of `f`'s writes and nothing else.
    ///
    /// Group commit: writes that queue while another holds the writer run together in
    /// the next `BEGIN IMMEDIATE` transaction, each inside its own savepoint, and share
    /// one commit. Why: a commit writes every page it touched to the WAL in full
    /// (8 KiB each), so with concurrent single-entity PUTs the commits, not the
    /// writes, were most of the work. A write's result is handed over only after its
    /// group committed; if the commit fails, every write of the group fails.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Res<T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |conn, isolated| {
            let result = if isolated { conn.transaction(f) } else { f(conn) };
            Ran {
                ok: result.is_ok(),
                db_failed: matches!(&result, Err(Fail::Db(e)) if may_end_transaction(e)),
                deliver: Box::new(move |commit| {
                    let out = match (commit, result) {
                        (Ok(()), result) => result.map_err(StoreError::from),
                        (Err(_), Err(own)) => Err(own.into()),
                        (Err(e), Ok(_)) => Err(StoreError::Unexpected(format!("sqlite: commit failed: {e}"))),
                    };
                    let _ = tx.send(out);
                }),
            }
        });
        self.inner.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(job);
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            inner.run_queued();
            Ok(())
        })
        .await?;
        rx.await.map_err(|_| StoreError::Unexpected("store task failed while writing".into()))?
    }

    /// Runs `pre` (CPU work that needs no connection, e.g. verifying checksums) and,
    /// if it succeeds, the transaction body it returns inside one write transaction;
    /// both on the blocking pool, `pre` before taking the writer so that it does not
    /// hold other writers up.
    pub(crate) async fn write_after<P, T, F>(&self, pre: P) -> Result<T, StoreError>
    where
        P: FnOnce() -> Result<F, StoreError> + Send + 'static,
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Res<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let f = pre().map_err(Fail::Store)?;
            let mut conn = lock(&inner.writer)?;
            let out = conn.immediate_transaction(f);
            inner.committed();
            out
        })
        .await
    }

    /// Runs `f` inside one read (deferred) transaction — a consistent snapshot — on a
    /// reader connection (the writer for in-memory stores), on the blocking pool.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Res<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let mut conn = inner.reader()?;
            conn.transaction(f)
        })
        .await
    }
}

impl Inner {
    /// Takes the writer and runs every queued write in one transaction (nothing to
    /// do when another caller's turn already ran this caller's write).
    fn run_queued(&self) {
        let conn = lock(&self.writer);
        let jobs = std::mem::take(&mut *self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        if jobs.is_empty() {
            return;
        }
        let Ok(mut conn) = conn else {
            // The writer is unusable: the writes never run, and dropping them tells
            // their callers that they failed.
            return;
        };
        let single = jobs.len() == 1;
        let mut deliveries = Vec::with_capacity(jobs.len());
        let commit = conn.immediate_transaction(|conn| {
            for job in jobs {
                let ran = job(conn, !single);
                deliveries.push(ran.deliver);
                if !ran.ok && (single || ran.db_failed) {
                    // Writes not run yet are dropped, which fails them.
                    return Err(Fail::Store(StoreError::Unexpected("a write of the group failed in SQLite".into())));
                }
            }
            Ok(())
        });
        drop(conn);
        self.committed();
        let commit = commit.map_err(|e| StoreError::from(e).to_string());
        for deliver in deliveries {
            deliver(commit.clone());
        }
    }

    /// Tells the checkpointer that the WAL may have grown.
    fn committed(&self) {
        if let Some(c) = &self.checkpoints {
            c.nudge();
        }
    }

    /// A free reader if there is one, else waits for the next in turn.
    fn reader(&self) -> Res<MutexGuard<'_, SqliteConnection>> {
        let n = self.readers.len();
        if n == 0 {
            return lock(&self.writer);
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let m = &self.readers[(start + i) % n];
            match m.try_lock() {
                Ok(guard) => return Ok(guard),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Poisoned(_)) => return lock(m),
            }
        }
        lock(&self.readers[start % n])
    }
}

/// WAL checkpoints on a thread of their own.
///
/// Why: SQLite's automatic checkpoint runs inside the commit that crosses the WAL
/// size limit, so the writer (and the request or sync batch it serves) paid for
/// copying pages into the database file and for two fsyncs: half of a sync batch's
/// commit time, measured. Here a thread with its own connection runs a `PASSIVE`
/// checkpoint (it never blocks the writer or readers) at most every
/// [`CHECKPOINT_PERIOD`] after commits, on the other core. (Durability does not depend
/// on it: with `synchronous = FULL` every commit is synced to the WAL as it is made.)
struct Checkpoints {
    state: Mutex<CheckpointState>,
    wake: Condvar,
}

#[derive(Default)]
struct CheckpointState {
    /// Commits happened since the last checkpoint started.
    dirty: bool,
    /// The store is gone: checkpoint what is left and end the thread.
    stop: bool,
}

impl Checkpoints {
    fn start(conn: SqliteConnection) -> Result<Arc<Self>, StoreError> {
        let this = Arc::new(Self { state: Mutex::new(CheckpointState::default()), wake: Condvar::new() });
        let worker = Arc::clone(&this);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || worker.run(conn))
            .map_err(|e| StoreError::Unexpected(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(this)
    }

    fn nudge(&self) {
        if let Ok(mut s) = self.state.lock() {
            if !s.dirty {
                s.dirty = true;
                self.wake.notify_one();
            }
        }
    }

    fn stop(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.stop = true;
            self.wake.notify_one();
        }
    }

    fn run(&self, mut conn: SqliteConnection) {
        loop {
            let stop = {
                let Ok(mut s) = self.state.lock() else { return };
                while !s.dirty && !s.stop {
                    s = match self.wake.wait(s) {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                }
                s.dirty = false;
                s.stop
            };
            // A failure (e.g. the disk is full) is retried at the next commit; the WAL
            // keeps every commit meanwhile, and the writer's own limit still applies.
            if let Err(e) = conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE);") {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
            if stop {
                return;
            }
            std::thread::sleep(CHECKPOINT_PERIOD);
        }
    }
}

/// Runs blocking database work on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Res<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unexpected(format!("store task failed: {e}")))?
        .map_err(StoreError::from)
}

/// Locks a connection. A mutex poisoned by a panic while the connection was held is
/// recovered: a transaction the panic left open is rolled back first.
fn lock(m: &Mutex<SqliteConnection>) -> Res<MutexGuard<'_, SqliteConnection>> {
    match m.lock() {
        Ok(g) => Ok(g),
        Err(poisoned) => {
            let mut g = poisoned.into_inner();
            let conn: &mut SqliteConnection = &mut g;
            let status = AnsiTransactionManager::transaction_manager_status_mut(conn);
            match status.transaction_depth() {
                Ok(None) => {}
                Ok(Some(_)) => AnsiTransactionManager::rollback_transaction(conn)?,
                Err(e) => return Err(unexpected(format!("connection unusable: {e}"))),
            }
            m.clear_poison();
            Ok(g)
        }
    }
}

/// Opens one connection, applies the pragmas and, for the writer, runs migrations.
fn connect(url: &str, read_only: bool) -> Result<SqliteConnection, StoreError> {
    let fail = |what: &str, e: &dyn fmt::Display| StoreError::Unexpected(format!("cannot {what} database {url}: {e}"));
    let mut conn = SqliteConnection::establish(url).map_err(|e| fail("open", &e))?;
    // busy_timeout first, so the WAL switch itself waits for other connections.
    conn.batch_execute(&format!("PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};")).map_err(|e| fail("configure", &e))?;
    if read_only {
        conn.batch_execute(READER_PRAGMAS).map_err(|e| fail("configure", &e))?;
    } else {
        conn.batch_execute(CONNECTION_PRAGMAS).map_err(|e| fail("configure", &e))?;
        conn.run_pending_migrations(MIGRATIONS).map_err(|e| fail("migrate", &e))?;
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(kind: DatabaseErrorKind) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(String::from("test")))
    }

    /// Only errors after which SQLite may have ended the transaction abandon a group.
    #[test]
    fn a_group_survives_statement_errors_only() {
        assert!(!may_end_transaction(&db(DatabaseErrorKind::UniqueViolation)));
        assert!(!may_end_transaction(&db(DatabaseErrorKind::ForeignKeyViolation)));
        assert!(!may_end_transaction(&DieselError::NotFound));
        assert!(may_end_transaction(&db(DatabaseErrorKind::Unknown)));
        assert!(may_end_transaction(&DieselError::BrokenTransactionManager));
    }
}
