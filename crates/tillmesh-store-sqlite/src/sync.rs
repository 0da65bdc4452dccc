//! The change log and sync bookkeeping ([`SyncStore`]): appending records, per-origin
//! progress (the known vector), paging the log for pullers, applying peers' batches,
//! and per-peer cursors.

use std::collections::{HashMap, HashSet};

use diesel::prelude::*;
use diesel::SqliteConnection;
use tillmesh_domain::change::MAX_RECORD_BYTES;
use tillmesh_domain::ports::{ApplyOutcome, ChangePage, ChangePageJson, PeerSyncState, StoreError, SyncStore};
use tillmesh_domain::{DeviceId, DomainError, EncodedChange, Timestamp, VectorClock, VerifiedChange};

use crate::entities::Working;
use crate::schema::{change_log, coverage, local_identity, origin_progress, peer_cursors};
use crate::store::{corrupt, to_i64, to_u64, unexpected, Res, SqliteStore};

/// Fewest log rows one `changes_after` call may examine (skipped ones included).
const MIN_SCAN: usize = 1_000;
/// Most log rows one `changes_after` call examines unless `limit` asks for more: a
/// puller that already knows everything advances by pages of this size instead of
/// making one call scan the whole log.
const MAX_SCAN: usize = 10_000;

/// Rows one multi-row `INSERT` writes: one statement of 16 rows costs less than 16
/// single-row ones (diesel walks, binds and resets once; measured +5-11% on bare
/// inserts of 548-byte rows). Diesel prepares it once only with owned values.
pub(crate) const INSERT_CHUNK: usize = 16;

/// This terminal's identity row: its device id (see `DeviceStore::local_device_id`),
/// its writer and whether that writer is retired (see `DeviceStore::take_writer`).
#[derive(Debug, Default)]
pub(crate) struct Identity {
    pub device_id: Option<String>,
    pub writer: Option<String>,
    pub retired: bool,
}

/// Reads [`Identity`] (all `None` before the first start stored a device id).
pub(crate) fn load_identity(conn: &mut SqliteConnection) -> Res<Identity> {
    let row: Option<(String, Option<String>, bool)> = local_identity::table
        .find(1)
        .select((local_identity::device_id, local_identity::writer_id, local_identity::writer_retired))
        .first(conn)
        .optional()?;
    Ok(row.map_or_else(Identity::default, |(device_id, writer, retired)| Identity {
        device_id: Some(device_id),
        writer,
        retired,
    }))
}

/// The highest sequence of `origin` held (0 when none).
pub(crate) fn load_progress(conn: &mut SqliteConnection, origin: &str) -> Res<u64> {
    let seq: Option<i64> =
        origin_progress::table.find(origin).select(origin_progress::max_seq).first(conn).optional()?;
    seq.map_or(Ok(0), |s| to_u64(s, "sequence"))
}

/// Records `seq` as the highest sequence of `origin` held.
pub(crate) fn save_progress(conn: &mut SqliteConnection, origin: &str, seq: u64) -> Res<()> {
    diesel::replace_into(origin_progress::table)
        .values((origin_progress::origin.eq(origin), origin_progress::max_seq.eq(to_i64(seq, "sequence")?)))
        .execute(conn)?;
    Ok(())
}

/// Hands out log positions inside one write transaction. The transaction holds the
/// write lock (`BEGIN IMMEDIATE`) and log rows are never deleted, so positions are
/// the current head + 1, 2, … — assigned here instead of read back with `RETURNING`,
/// which SQLite implements with a temporary table per execution.
pub(crate) struct LogAppender {
    next: i64,
}

impl LogAppender {
    /// Reads the head once, at the start of the write transaction.
    pub(crate) fn new(conn: &mut SqliteConnection) -> Res<Self> {
        let head: Option<i64> = change_log::table.select(diesel::dsl::max(change_log::pos)).first(conn)?;
        Ok(Self { next: head.unwrap_or(0) + 1 })
    }

    /// The position the next [`LogAppender::append`] takes.
    pub(crate) fn next(&self) -> i64 {
        self.next
    }

    /// Appends a received record (as its JSON) to the log; `None` when `(origin, seq)`
    /// is already there. `own`: its origin is this terminal, whose records the caller
    /// de-duplicates by progress (they are not in the `(origin, seq)` index). Returns
    /// the new log position.
    pub(crate) fn append(
        &mut self,
        conn: &mut SqliteConnection,
        origin: &DeviceId,
        seq: u64,
        own: bool,
        json: &str,
    ) -> Res<Option<i64>> {
        let seq = to_i64(seq, "sequence")?;
        // `OR IGNORE` rather than `ON CONFLICT (origin, seq) DO NOTHING`: diesel caches
        // the prepared statement by type only without an ON CONFLICT clause; with one it
        // rebuilt the SQL text of every append (a quarter of an append's time).
        let inserted = diesel::insert_or_ignore_into(change_log::table)
            .values((
                change_log::pos.eq(self.next),
                change_log::origin.eq(origin.as_str()),
                change_log::seq.eq(seq),
                change_log::record.eq(json),
                change_log::own.eq(own),
            ))
            .execute(conn)?;
        if inserted == 0 {
            // Ignored: either (origin, seq) is held, which is what `OR IGNORE` is for,
            // or the position is taken, which only a change made outside this store
            // can cause. Told apart by the primary key: a lookup by (origin, seq) with
            // `own` bound as a parameter cannot use the partial index and would scan
            // the whole log (measured: convergence of 50 terminals 5.8 s -> 20.5 s).
            let taken: Option<i64> =
                change_log::table.find(self.next).select(change_log::pos).first(conn).optional()?;
            if taken.is_some() {
                return Err(unexpected(format!(
                    "log position {} is taken: the log was changed outside this store",
                    self.next
                )));
            }
            return Ok(None);
        }
        let pos = self.next;
        self.next += 1;
        Ok(Some(pos))
    }

    /// Appends [`INSERT_CHUNK`] received records with one statement, each `(origin,
    /// seq, own, json)`, at the next positions in order; `false` (and nothing
    /// appended) when any of them is held already — the caller then appends them one
    /// by one, which skips the held ones without leaving gaps in the positions.
    pub(crate) fn append_all(
        &mut self,
        conn: &mut SqliteConnection,
        records: &[(&DeviceId, u64, bool, &str)],
    ) -> Res<bool> {
        let mut rows = Vec::with_capacity(INSERT_CHUNK);
        for (i, (origin, seq, own, json)) in records.iter().enumerate() {
            rows.push(log_row(self.next + to_i64(i as u64, "log position")?, origin, *seq, (*json).to_string(), *own)?);
        }
        let inserted = insert_log_rows(conn, rows)?;
        if inserted == INSERT_CHUNK {
            self.next += INSERT_CHUNK as i64;
            return Ok(true);
        }
        // Every position from `next` on was free when this appender read the head (see
        // `LogAppender::new`) and only this statement wrote there since.
        diesel::delete(change_log::table.filter(change_log::pos.ge(self.next))).execute(conn)?;
        Ok(false)
    }
}

/// Appends a record this terminal just made at log position `pos`, which the caller
/// took from [`LogAppender::next`] before the batch (op `i` of a batch goes to
/// `next + i`, whatever order its records are made in). Its sequence number comes
/// from the origin progress. `own`: `origin` is this terminal's identity (always, but
/// for writes made in another device's name).
pub(crate) fn append_local_at(
    conn: &mut SqliteConnection,
    origin: &DeviceId,
    seq: u64,
    pos: i64,
    own: bool,
    json: &str,
) -> Res<()> {
    let inserted = diesel::insert_or_ignore_into(change_log::table)
        .values((
            change_log::pos.eq(pos),
            change_log::origin.eq(origin.as_str()),
            change_log::seq.eq(to_i64(seq, "sequence")?),
            change_log::record.eq(json),
            change_log::own.eq(own),
        ))
        .execute(conn)?;
    if inserted == 0 {
        return Err(unexpected(format!(
            "change {origin}#{seq} or log position {pos} is already in the log: origin progress is behind the log"
        )));
    }
    Ok(())
}

/// A change-log row with owned values (so that a multi-row statement of them gets a
/// static query id and is prepared once).
type LogRow = (
    diesel::dsl::Eq<change_log::pos, i64>,
    diesel::dsl::Eq<change_log::origin, String>,
    diesel::dsl::Eq<change_log::seq, i64>,
    diesel::dsl::Eq<change_log::record, String>,
    diesel::dsl::Eq<change_log::own, bool>,
);

fn log_row(pos: i64, origin: &DeviceId, seq: u64, json: String, own: bool) -> Res<LogRow> {
    Ok((
        change_log::pos.eq(pos),
        change_log::origin.eq(origin.as_str().to_string()),
        change_log::seq.eq(to_i64(seq, "sequence")?),
        change_log::record.eq(json),
        change_log::own.eq(own),
    ))
}

/// `INSERT OR IGNORE`s [`INSERT_CHUNK`] rows with one statement; returns how many went in.
fn insert_log_rows(conn: &mut SqliteConnection, rows: Vec<LogRow>) -> Res<usize> {
    let rows: [LogRow; INSERT_CHUNK] = rows.try_into().map_err(|_| unexpected("a chunk of records changed size"))?;
    Ok(diesel::insert_or_ignore_into(change_log::table).values(rows).execute(conn)?)
}

/// [`append_local_at`] for many records at once, each `(seq, pos, json)`; the JSON
/// texts are moved out.
pub(crate) fn append_local_all(
    conn: &mut SqliteConnection,
    origin: &DeviceId,
    own: bool,
    records: &mut [(u64, i64, String)],
) -> Res<()> {
    let mut chunks = records.chunks_exact_mut(INSERT_CHUNK);
    for chunk in &mut chunks {
        let mut rows = Vec::with_capacity(INSERT_CHUNK);
        for (seq, pos, json) in chunk.iter_mut() {
            rows.push(log_row(*pos, origin, *seq, std::mem::take(json), own)?);
        }
        let inserted = insert_log_rows(conn, rows)?;
        if inserted != INSERT_CHUNK {
            let (first, last) = (chunk[0].0, chunk[INSERT_CHUNK - 1].0);
            return Err(unexpected(format!(
                "changes {origin}#{first}..{last} or their log positions are already in the log: origin progress is behind the log"
            )));
        }
    }
    for (seq, pos, json) in chunks.into_remainder() {
        append_local_at(conn, origin, *seq, *pos, own, json)?;
    }
    Ok(())
}

/// Checks a peer's batch before anything is written: every record's checksum and
/// invariants, and that numbers fit SQLite. Each record keeps its JSON (stored as
/// received) and its state's canonical bytes (for the entity hash).
fn prepare_remote(changes: Vec<EncodedChange>) -> Result<Vec<VerifiedChange>, StoreError> {
    let mut out = Vec::with_capacity(changes.len());
    for c in changes {
        let v = c.into_verified().map_err(StoreError::BadBatch)?;
        if i64::try_from(v.header.seq).is_err() {
            return Err(StoreError::BadBatch(DomainError::InvalidRecord(format!(
                "sequence {} of {} is out of range",
                v.header.seq, v.header.origin
            ))));
        }
        out.push(v);
    }
    Ok(out)
}

/// Per origin touched by a batch: (highest sequence before, highest now).
type Progress = HashMap<String, (u64, u64)>;

/// The body of `apply_remote`, inside its transaction.
fn apply_remote_tx(
    conn: &mut SqliteConnection,
    peer: &DeviceId,
    changes: Vec<VerifiedChange>,
    next: i64,
    peer_head: i64,
    covered: Option<VectorClock>,
    epoch: Option<String>,
) -> Res<ApplyOutcome> {
    let mut outcome = ApplyOutcome::default();
    let mut work = Working::with_capacity(changes.len());
    let mut progress = Progress::new();
    let mut log = LogAppender::new(conn)?;
    let identity = load_identity(conn)?;
    let me = identity.device_id.clone();
    // A record of this terminal's own writer beyond what its log holds means the log
    // lost changes that peers have: the writer must not write again.
    let mut writer_behind = false;
    // The entities of changes past their origin's progress (all but duplicates, as a
    // rule) are read together, in the order the changes come (which is the order their
    // rows are written in).
    let (mut wanted, mut seen) = (Vec::with_capacity(changes.len()), HashSet::with_capacity(changes.len()));
    for c in &changes {
        let origin = c.header.origin.as_str();
        let held = match progress.get(origin) {
            Some(&(held, _)) => held,
            None => {
                let held = load_progress(conn, origin)?;
                progress.insert(origin.to_string(), (held, held));
                held
            }
        };
        if c.header.seq > held && seen.insert(&c.header.key) {
            wanted.push(&c.header.key);
        }
    }
    work.preload(conn, &wanted)?;
    // Changes not known to be held, appended INSERT_CHUNK at a time.
    let mut pending: Vec<(VerifiedChange, bool)> = Vec::with_capacity(INSERT_CHUNK);
    for change in changes {
        let (origin, seq) = (change.header.origin.as_str(), change.header.seq);
        let entry = match progress.get_mut(origin) {
            Some(e) => e,
            None => {
                let held = load_progress(conn, origin)?;
                progress.entry(origin.to_string()).or_insert((held, held))
            }
        };
        // A change is held iff its (origin, seq) is in the log: for this terminal's
        // own origin, iff its sequence is within the progress (its records are not in
        // the (origin, seq) index); otherwise the UNIQUE index says. Relaying keeps
        // the original origin, seq and checksum, so A -> B -> C works.
        let own = me.as_deref() == Some(origin);
        if seq > entry.0 && identity.writer.as_deref() == Some(origin) {
            writer_behind = true;
        }
        if own && seq <= entry.1 {
            outcome.duplicates += 1;
            continue;
        }
        // Per-origin sequences normally arrive in order; after a gap the progress
        // still moves to the maximum (see the crate docs). A change the index finds
        // held leaves it as is: the progress is the highest sequence held already.
        entry.1 = entry.1.max(seq);
        pending.push((change, own));
        if pending.len() == INSERT_CHUNK {
            append_received(conn, &mut log, &mut work, &mut outcome, &mut pending)?;
        }
    }
    append_received(conn, &mut log, &mut work, &mut outcome, &mut pending)?;
    let (new_conflicts, redundant) = work.flush(conn)?;
    outcome.new_conflicts = new_conflicts;
    // Records appended that the entity already held in substance are duplicates too.
    outcome.applied -= redundant.min(outcome.applied);
    outcome.duplicates += redundant;
    if writer_behind && !identity.retired {
        tracing::warn!(writer = ?identity.writer, "a peer holds changes of this terminal's writer that its log lost; retiring the writer");
        diesel::update(local_identity::table.find(1)).set(local_identity::writer_retired.eq(true)).execute(conn)?;
        outcome.writer_retired = true;
        // What the log held of it before this batch, it held whole: its own writes.
        if let Some(w) = identity.writer.as_deref() {
            if let Some(&(before, _)) = progress.get(w) {
                raise_coverage(conn, w, before)?;
            }
        }
    }
    for (origin, (before, now)) in progress {
        if now > before {
            save_progress(conn, &origin, now)?;
        }
    }
    if let Some(covered) = covered {
        add_coverage(conn, &covered)?;
    }
    diesel::insert_into(peer_cursors::table)
        .values((
            peer_cursors::device_id.eq(peer.as_str()),
            peer_cursors::cursor.eq(next),
            peer_cursors::peer_head.eq(peer_head),
            peer_cursors::cursor_epoch.eq(&epoch),
        ))
        .on_conflict(peer_cursors::device_id)
        .do_update()
        .set((peer_cursors::cursor.eq(next), peer_cursors::peer_head.eq(peer_head)))
        .execute(conn)?;
    if epoch.is_some() {
        diesel::update(peer_cursors::table.find(peer.as_str()))
            .set(peer_cursors::cursor_epoch.eq(&epoch))
            .execute(conn)?;
    }
    Ok(outcome)
}

/// Appends received changes to the log (together when there are [`INSERT_CHUNK`] and
/// none is held, else one by one) and joins each appended one into its entity.
fn append_received(
    conn: &mut SqliteConnection,
    log: &mut LogAppender,
    work: &mut Working,
    outcome: &mut ApplyOutcome,
    pending: &mut Vec<(VerifiedChange, bool)>,
) -> Res<()> {
    let first = log.next();
    let together = pending.len() == INSERT_CHUNK && {
        let records: Vec<(&DeviceId, u64, bool, &str)> =
            pending.iter().map(|(c, own)| (&c.header.origin, c.header.seq, *own, c.json.as_str())).collect();
        log.append_all(conn, &records)?
    };
    for (i, (VerifiedChange { header, json, entity_hash, state }, own)) in pending.drain(..).enumerate() {
        let pos = if together {
            first + i as i64
        } else {
            match log.append(conn, &header.origin, header.seq, own, &json)? {
                Some(pos) => pos,
                None => {
                    outcome.duplicates += 1;
                    continue;
                }
            }
        };
        outcome.applied += 1;
        work.slot(conn, &header.key)?.receive(state, json, entity_hash, pos)?;
    }
    Ok(())
}

/// Adds a peer's coverage to this store's, writer by writer, up to the highest
/// sequence of that writer held here: a peer's claim never reaches past what this
/// terminal has seen of a writer.
fn add_coverage(conn: &mut SqliteConnection, covered: &VectorClock) -> Res<()> {
    for (origin, seq) in covered.iter() {
        let held = load_progress(conn, origin.as_str())?;
        raise_coverage(conn, origin.as_str(), (*seq).min(held))?;
    }
    Ok(())
}

/// Raises the recorded coverage of `origin` to `seq` (never lowers it).
pub(crate) fn raise_coverage(conn: &mut SqliteConnection, origin: &str, seq: u64) -> Res<()> {
    let before: Option<i64> = coverage::table.find(origin).select(coverage::seq).first(conn).optional()?;
    let seq = to_i64(seq, "sequence")?;
    if seq > 0 && before.is_none_or(|b| seq > b) {
        diesel::replace_into(coverage::table)
            .values((coverage::origin.eq(origin), coverage::seq.eq(seq)))
            .execute(conn)?;
    }
    Ok(())
}

/// The store's coverage (see [`SyncStore::covered`]).
fn covered_tx(conn: &mut SqliteConnection) -> Res<VectorClock> {
    let rows: Vec<(String, i64)> = coverage::table.select((coverage::origin, coverage::seq)).load(conn)?;
    let mut out = VectorClock::new();
    for (origin, seq) in rows {
        out.observe(&DeviceId::parse(origin).map_err(|e| corrupt("origin", e))?, to_u64(seq, "sequence")?);
    }
    // This terminal holds every change its current writer made (a writer is retired
    // before the log can be behind what it wrote). Not its earlier writers: after a
    // restore or a rollback, their changes come back from peers out of order, so the
    // highest one held says nothing of the others; their coverage was recorded when
    // they were replaced. A store that never took a writer (tests, harnesses) writes
    // under its device id.
    let identity = load_identity(conn)?;
    let own = match identity.writer {
        Some(w) if !identity.retired => Some(w),
        Some(_) => None,
        None => identity.device_id,
    };
    if let Some(own) = own {
        let seq = load_progress(conn, &own)?;
        out.observe(&DeviceId::parse(own).map_err(|e| corrupt("writer", e))?, seq);
    }
    Ok(out)
}

/// The body of `changes_after`, inside a read transaction.
fn changes_after_tx(
    conn: &mut SqliteConnection,
    after: u64,
    limit: usize,
    max_bytes: usize,
    known: &HashMap<String, u64>,
) -> Res<ChangePage> {
    let raw = changes_after_json_tx(conn, after, limit, max_bytes, known)?;
    let changes = raw
        .changes
        .into_iter()
        .map(|record| EncodedChange::decode(record).map_err(|e| corrupt("change record", e)))
        .collect::<Res<Vec<_>>>()?;
    Ok(ChangePage { changes, next: raw.next, has_more: raw.has_more, head: raw.head, covered: raw.covered })
}

/// The page as stored JSON texts; [`changes_after_tx`] decodes them.
fn changes_after_json_tx(
    conn: &mut SqliteConnection,
    after: u64,
    limit: usize,
    max_bytes: usize,
    known: &HashMap<String, u64>,
) -> Res<ChangePageJson> {
    let head = log_head_tx(conn)?;
    let covered = covered_tx(conn)?;
    let mut page = ChangePageJson { changes: Vec::new(), next: after, has_more: false, head, covered };
    if after >= head {
        return Ok(page);
    }
    let limit = limit.max(1);
    let scan = limit.saturating_mul(20).clamp(MIN_SCAN, MAX_SCAN).max(limit);
    let rows = change_log::table
        .filter(change_log::pos.gt(to_i64(after, "log position")?))
        .order(change_log::pos)
        .select((change_log::pos, change_log::origin, change_log::seq, change_log::record))
        .limit(to_i64(scan as u64, "scan")?)
        .load_iter::<(i64, String, i64, String), _>(conn)?;
    let mut bytes: usize = 0;
    for row in rows {
        let (pos, origin, seq, record) = row?;
        let seq = to_u64(seq, "sequence")?;
        let size = record.len();
        if known.get(&origin).is_some_and(|k| seq <= *k) {
            page.next = to_u64(pos, "log position")?;
            continue;
        }
        if size > MAX_RECORD_BYTES {
            // Written before records had a cap: every puller would refuse it (and the
            // batch around it), so it is not served at all.
            tracing::warn!(origin, seq, size, "not serving a change record over the size cap");
            page.next = to_u64(pos, "log position")?;
            continue;
        }
        if page.changes.len() >= limit || (!page.changes.is_empty() && bytes.saturating_add(size) > max_bytes) {
            break;
        }
        page.changes.push(record);
        bytes = bytes.saturating_add(size);
        page.next = to_u64(pos, "log position")?;
    }
    page.has_more = page.next < head;
    Ok(page)
}

/// A known vector keyed by origin text, as log rows name origins.
fn known_by_origin(known: &VectorClock) -> HashMap<String, u64> {
    known.iter().map(|(d, n)| (d.as_str().to_string(), *n)).collect()
}

pub(crate) fn log_head_tx(conn: &mut SqliteConnection) -> Res<u64> {
    let head: Option<i64> = change_log::table.select(diesel::dsl::max(change_log::pos)).first(conn)?;
    to_u64(head.unwrap_or(0), "log position")
}

type CursorRow = (String, i64, i64, Option<i64>, Option<String>, Option<String>);

fn peer_sync_state(row: CursorRow) -> Res<PeerSyncState> {
    let (id, cursor, head, last_sync, last_error, epoch) = row;
    Ok(PeerSyncState {
        device_id: DeviceId::parse(id).map_err(|e| corrupt("peer id", e))?,
        cursor: to_u64(cursor, "cursor")?,
        peer_head: to_u64(head, "peer head")?,
        last_sync: last_sync.map(Timestamp),
        last_error,
        epoch,
    })
}

const CURSOR_COLUMNS: (
    peer_cursors::device_id,
    peer_cursors::cursor,
    peer_cursors::peer_head,
    peer_cursors::last_sync,
    peer_cursors::last_error,
    peer_cursors::cursor_epoch,
) = (
    peer_cursors::device_id,
    peer_cursors::cursor,
    peer_cursors::peer_head,
    peer_cursors::last_sync,
    peer_cursors::last_error,
    peer_cursors::cursor_epoch,
);

#[async_trait::async_trait]
impl SyncStore for SqliteStore {
    async fn changes_after(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
        known: &VectorClock,
    ) -> Result<ChangePage, StoreError> {
        let known = known_by_origin(known);
        self.read(move |conn| changes_after_tx(conn, after, limit, max_bytes, &known)).await
    }

    async fn changes_after_json(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
        known: &VectorClock,
    ) -> Result<ChangePageJson, StoreError> {
        let known = known_by_origin(known);
        self.read(move |conn| changes_after_json_tx(conn, after, limit, max_bytes, &known)).await
    }

    async fn apply_remote(
        &self,
        peer: &DeviceId,
        changes: Vec<EncodedChange>,
        next: u64,
        peer_head: u64,
        covered: Option<VectorClock>,
        epoch: Option<String>,
    ) -> Result<ApplyOutcome, StoreError> {
        let peer = peer.clone();
        let (next, peer_head) = match (i64::try_from(next), i64::try_from(peer_head)) {
            (Ok(n), Ok(h)) => (n, h),
            _ => {
                return Err(StoreError::BadBatch(DomainError::InvalidRecord(format!(
                    "log position {next} or head {peer_head} is out of range"
                ))))
            }
        };
        self.write_after(move || {
            let prepared = prepare_remote(changes)?;
            Ok(move |conn: &mut SqliteConnection| {
                apply_remote_tx(conn, &peer, prepared, next, peer_head, covered, epoch)
            })
        })
        .await
    }

    async fn known_origins(&self) -> Result<VectorClock, StoreError> {
        self.read(|conn| {
            let rows: Vec<(String, i64)> =
                origin_progress::table.select((origin_progress::origin, origin_progress::max_seq)).load(conn)?;
            let mut entries = Vec::with_capacity(rows.len());
            for (origin, seq) in rows {
                let d = DeviceId::parse(origin).map_err(|e| corrupt("origin", e))?;
                entries.push((d, to_u64(seq, "sequence")?));
            }
            Ok(VectorClock::from_entries(entries))
        })
        .await
    }

    async fn covered(&self) -> Result<VectorClock, StoreError> {
        self.read(covered_tx).await
    }

    async fn log_head(&self) -> Result<u64, StoreError> {
        self.read(log_head_tx).await
    }

    async fn peer_state(&self, peer: &DeviceId) -> Result<PeerSyncState, StoreError> {
        let peer = peer.clone();
        self.read(move |conn| {
            let row: Option<CursorRow> =
                peer_cursors::table.find(peer.as_str()).select(CURSOR_COLUMNS).first(conn).optional()?;
            match row {
                Some(r) => peer_sync_state(r),
                None => Ok(PeerSyncState {
                    device_id: peer,
                    cursor: 0,
                    peer_head: 0,
                    last_sync: None,
                    last_error: None,
                    epoch: None,
                }),
            }
        })
        .await
    }

    async fn peer_states(&self) -> Result<Vec<PeerSyncState>, StoreError> {
        self.read(|conn| {
            let rows: Vec<CursorRow> =
                peer_cursors::table.order(peer_cursors::device_id).select(CURSOR_COLUMNS).load(conn)?;
            rows.into_iter().map(peer_sync_state).collect()
        })
        .await
    }

    async fn record_sync_result(
        &self,
        peer: &DeviceId,
        at: Timestamp,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let peer = peer.clone();
        self.write(move |conn| {
            let insert = diesel::insert_into(peer_cursors::table).values((
                peer_cursors::device_id.eq(peer.as_str()),
                peer_cursors::cursor.eq(0),
                peer_cursors::peer_head.eq(0),
                peer_cursors::last_sync.eq(error.is_none().then_some(at.0)),
                peer_cursors::last_error.eq(&error),
            ));
            match &error {
                None => insert
                    .on_conflict(peer_cursors::device_id)
                    .do_update()
                    .set((peer_cursors::last_sync.eq(Some(at.0)), peer_cursors::last_error.eq(None::<String>)))
                    .execute(conn)?,
                Some(e) => insert
                    .on_conflict(peer_cursors::device_id)
                    .do_update()
                    .set(peer_cursors::last_error.eq(Some(e)))
                    .execute(conn)?,
            };
            Ok(())
        })
        .await
    }
}
