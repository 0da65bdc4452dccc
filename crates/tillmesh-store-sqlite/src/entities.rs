//! Entities ([`EntityStore`]): reads, conflicts and the state digest, the entry point
//! of local writes (done in `local.rs`), the entity row and conflict row writes both
//! paths share, and the per-transaction working set of entity states that remote
//! application uses.

use std::collections::{BTreeSet, HashMap};

use diesel::prelude::*;
use diesel::SqliteConnection;
use serde::Deserialize;
use tillmesh_domain::digest::{entity_hash, DigestBuilder};
use tillmesh_domain::entity::transcode::StateSummary;
use tillmesh_domain::ports::{EntityStore, LocalOutcome, Outbox, StoreDigest, StoreError};
use tillmesh_domain::{
    Checksum, ClockOrdering, Conflict, ConflictId, DeviceId, EntityKey, EntityOp, EntityState, ReceivedState, Timestamp,
};

use crate::json::to_json;
use crate::local::apply_local_tx;
use crate::schema::{change_log, conflicts, entities};
use crate::store::{corrupt, sql_limit, to_u64, unexpected, Res, SqliteStore};
use crate::sync::INSERT_CHUNK;

/// One entity touched by the current transaction.
pub(crate) struct Slot {
    /// The stored state when the transaction first touched it (`None`: never written).
    before: Option<EntityState>,
    /// The state as modified so far in this transaction.
    state: EntityState,
    /// Whether a state exists now (stored, or created earlier in this batch).
    exists: bool,
    /// Log position of the last change this transaction made to it.
    last_pos: i64,
    /// Whether `state` is exactly the state inside the record at `last_pos`, so the
    /// entity row need not repeat it.
    state_in_log: bool,
    /// Entity hash of `state`, when already known after its last modification.
    hash: Option<Checksum>,
    /// A received state not decoded yet (the entity was new to this store): `state`
    /// is still empty and stands for the state inside this record text.
    pending: Option<Pending>,
    /// Log positions of the entity's records when the transaction first touched it.
    before_pos: Vec<i64>,
    /// Log positions of the records this transaction appended for it.
    appended: Vec<i64>,
}

/// A received record whose state became an entity's without being decoded.
pub(crate) struct Pending {
    json: String,
    summary: StateSummary,
}

impl Slot {
    /// Joins a verified received state (the record at log position `pos`). An
    /// entity new to this store takes it without decoding it; otherwise it is
    /// decoded and joined.
    pub(crate) fn receive(&mut self, state: ReceivedState, json: String, hash: Checksum, pos: i64) -> Res<()> {
        match state {
            ReceivedState::Encoded(summary) if !self.exists => {
                self.pending = Some(Pending { json, summary });
                self.state_in_log = true;
                self.hash = Some(hash);
            }
            state => {
                self.decode_pending()?;
                let incoming = match state {
                    ReceivedState::Decoded(s) => s,
                    ReceivedState::Encoded(_) => state_of_record(&json)?,
                };
                // Usually the change supersedes what was here: the entity row can point
                // at it, and its hash is the one the check computed.
                self.state_in_log = self.state.join_owned(incoming);
                self.hash = self.state_in_log.then_some(hash);
            }
        }
        self.exists = true;
        self.last_pos = pos;
        self.appended.push(pos);
        Ok(())
    }

    /// Makes `state` the real state when it stood for an undecoded record.
    fn decode_pending(&mut self) -> Res<()> {
        if let Some(p) = self.pending.take() {
            self.state = state_of_record(&p.json)?;
        }
        Ok(())
    }
}

/// Entity states loaded and modified by one transaction, written back by
/// [`Working::flush`] once per entity however many changes touched it.
#[derive(Default)]
pub(crate) struct Working {
    order: Vec<EntityKey>,
    slots: HashMap<EntityKey, Slot>,
}

impl Working {
    /// Room for `n` entities, so that a batch does not grow the map step by step
    /// (rehashing was ~2% of a received batch's time).
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self { order: Vec::with_capacity(n), slots: HashMap::with_capacity(n) }
    }

    fn insert_slot(&mut self, key: EntityKey, before: Option<Stored>) {
        self.order.push(key.clone());
        let (before, before_pos) = match before {
            Some(s) => (Some(s.state), s.positions),
            None => (None, Vec::new()),
        };
        self.slots.insert(
            key,
            Slot {
                exists: before.is_some(),
                state: before.clone().unwrap_or_default(),
                before,
                last_pos: 0,
                state_in_log: false,
                hash: None,
                pending: None,
                before_pos,
                appended: Vec::new(),
            },
        );
    }

    /// Loads the states of `keys` (distinct, none loaded yet) in a few statements,
    /// ahead of [`Working::slot`].
    pub(crate) fn preload(&mut self, conn: &mut SqliteConnection, keys: &[&EntityKey]) -> Res<()> {
        for (key, before) in keys.iter().zip(load_states(conn, keys)?) {
            self.insert_slot((*key).clone(), before);
        }
        Ok(())
    }

    /// The entity's working state, loaded from the database on first use.
    pub(crate) fn slot(&mut self, conn: &mut SqliteConnection, key: &EntityKey) -> Res<&mut Slot> {
        if !self.slots.contains_key(key) {
            let before = load_stored(conn, key)?;
            self.insert_slot(key.clone(), before);
        }
        self.slots.get_mut(key).ok_or_else(|| unexpected("working set lost an entity"))
    }

    /// Stores every entity whose state changed and rebuilds its conflict rows, and
    /// deletes the log records that no longer add anything (see [`compact`]).
    /// Returns the conflicts that were not open before the transaction, and how many
    /// records appended by it turned out to add nothing (already held in substance).
    pub(crate) fn flush(self, conn: &mut SqliteConnection) -> Res<(Vec<Conflict>, usize)> {
        let Working { order, mut slots } = self;
        let mut opened = Vec::new();
        let mut rows = Vec::with_capacity(order.len());
        let mut dead: Vec<i64> = Vec::new();
        let mut redundant = 0;
        for key in order {
            let Some(mut slot) = slots.remove(&key) else {
                continue;
            };
            if slot.pending.as_ref().is_some_and(|p| p.summary.may_conflict) {
                slot.decode_pending()?;
            }
            if let Some(p) = &slot.pending {
                // New to this store and without competing writes: no conflict rows.
                let hash = slot.hash.ok_or_else(|| unexpected("an undecoded state without its hash"))?;
                rows.push(EntityRowWrite {
                    key,
                    deleted: p.summary.deleted,
                    json: None,
                    hash,
                    pos: slot.last_pos,
                    older: Vec::new(),
                });
            } else if slot.before.as_ref() != Some(&slot.state) {
                let json = if slot.state_in_log { None } else { Some(to_json(&slot.state)?) };
                let hash = match slot.hash {
                    Some(hash) => hash,
                    None => entity_hash(&key, &slot.state),
                };
                if let Some(update) = conflict_update(&key, slot.before.as_ref(), &slot.state) {
                    opened.extend(write_conflict_update(conn, &key, update)?);
                }
                let mut candidates = slot.before_pos;
                candidates.extend(&slot.appended);
                let (pos, older) = if slot.state_in_log {
                    // The last record holds the whole state: the others add nothing.
                    dead.extend(candidates.into_iter().filter(|p| *p != slot.last_pos));
                    (slot.last_pos, Vec::new())
                } else {
                    let mut live = compact(conn, candidates, &mut dead)?;
                    let newest = live.pop().ok_or_else(|| unexpected("a merged entity lost its records"))?;
                    (newest, live)
                };
                rows.push(EntityRowWrite { key, deleted: slot.state.is_deleted(), json, hash, pos, older });
            } else {
                // Nothing received changed the state: those records were held already.
                redundant += slot.appended.len();
                dead.extend(slot.appended);
            }
        }
        write_entities(conn, rows)?;
        delete_records(conn, &dead)?;
        Ok((opened, redundant))
    }
}

/// Of the records at `positions` (one entity's), keeps those no other one includes and
/// adds the rest to `dead`. Returns the kept positions, ascending.
///
/// Why it is safe: records carry whole states, and a state whose clock another
/// record's clock covers holds nothing that one lacks (every dot it saw, the other saw,
/// with what became of it). The join of the kept records is the join of them all.
/// Only concurrent writes leave more than one: their number is bounded by the writers
/// competing on the entity.
fn compact(conn: &mut SqliteConnection, mut positions: Vec<i64>, dead: &mut Vec<i64>) -> Res<Vec<i64>> {
    positions.sort_unstable();
    positions.dedup();
    let mut clocks = Vec::with_capacity(positions.len());
    // A position whose row is gone already (nothing should delete one behind the
    // entity's back, but a store must not wedge on it) is simply not kept.
    let mut present = Vec::with_capacity(positions.len());
    for &pos in &positions {
        let record: Option<String> = change_log::table.find(pos).select(change_log::record).first(conn).optional()?;
        if let Some(record) = record {
            clocks.push(state_of_record(&record)?.context);
            present.push(pos);
        }
    }
    let positions = present;
    let mut live = Vec::with_capacity(positions.len());
    for (i, pos) in positions.iter().enumerate() {
        // Included in a later record, or in an earlier one that is not equal to it.
        let included = clocks.iter().enumerate().any(|(j, other)| {
            j != i
                && match clocks[i].compare(other) {
                    ClockOrdering::Before => true,
                    ClockOrdering::Equal => j > i,
                    _ => false,
                }
        });
        if included {
            dead.push(*pos);
        } else {
            live.push(*pos);
        }
    }
    Ok(live)
}

/// Deletes the log records at `positions`.
pub(crate) fn delete_records(conn: &mut SqliteConnection, positions: &[i64]) -> Res<()> {
    for chunk in positions.chunks(500) {
        diesel::delete(change_log::table.filter(change_log::pos.eq_any(chunk))).execute(conn)?;
    }
    Ok(())
}

/// An entity as stored: its state and the log positions of the records whose join it
/// is (the one at `updated_pos` first).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Stored {
    pub(crate) state: EntityState,
    pub(crate) positions: Vec<i64>,
}

fn positions_of(updated_pos: i64, older: Option<&str>) -> Res<Vec<i64>> {
    let mut out = vec![updated_pos];
    if let Some(list) = older.filter(|l| !l.is_empty()) {
        for p in list.split(',') {
            out.push(p.trim().parse().map_err(|e| corrupt("entity's log positions", e))?);
        }
    }
    Ok(out)
}

/// The state inside a stored change record (the rest of the record is skipped).
#[derive(Deserialize)]
struct StateOfRecord {
    state: EntityState,
}

/// An entity row's state columns (see [`StateColumns`]), its `updated_pos` and
/// `older_pos`.
type StoredColumns = (Option<String>, Option<String>, i64, Option<String>);

/// An entity row's state: its own column, or else the record at `updated_pos`.
type StateColumns = (Option<String>, Option<String>);

fn decode_state((own, record): StateColumns) -> Res<EntityState> {
    match (own, record) {
        (Some(json), _) => serde_json::from_str(&json).map_err(|e| corrupt("entity state", e)),
        (None, Some(record)) => state_of_record(&record),
        (None, None) => Err(corrupt("entity state", "neither stored nor in the change log")),
    }
}

/// The state inside a change record's JSON text.
fn state_of_record(record: &str) -> Res<EntityState> {
    serde_json::from_str::<StateOfRecord>(record).map(|r| r.state).map_err(|e| corrupt("change record of an entity", e))
}

/// Entity rows with the change record that holds their state when the row does not
/// (`state` NULL: the record at `updated_pos`).
#[diesel::dsl::auto_type]
fn with_logged_state() -> _ {
    entities::table
        .left_join(change_log::table.on(change_log::pos.eq(entities::updated_pos).and(entities::state.is_null())))
}

/// The stored state of one entity.
pub(crate) fn load_state(conn: &mut SqliteConnection, key: &EntityKey) -> Res<Option<EntityState>> {
    Ok(load_stored(conn, key)?.map(|s| s.state))
}

/// The stored state of one entity, with its records' log positions.
pub(crate) fn load_stored(conn: &mut SqliteConnection, key: &EntityKey) -> Res<Option<Stored>> {
    let row: Option<StoredColumns> = with_logged_state()
        .filter(entities::entity_type.eq(key.entity_type()))
        .filter(entities::entity_id.eq(key.entity_id()))
        .select((entities::state, change_log::record.nullable(), entities::updated_pos, entities::older_pos))
        .first(conn)
        .optional()?;
    row.map(|(own, record, pos, older)| {
        Ok(Stored { state: decode_state((own, record))?, positions: positions_of(pos, older.as_deref())? })
    })
    .transpose()
}

/// Keys one statement of [`load_states`] reads.
const READ_CHUNK: usize = 16;

/// The stored states of many entities, in the order of `keys` (which must be
/// distinct), [`READ_CHUNK`] keys of a type per statement.
///
/// Why not `IN (…)`: diesel prepares a statement with a bind list again on every
/// call; a fixed chain of `OR`ed equalities is prepared once, and SQLite turns it into
/// an `IN` lookup on the primary key. Short remainders are read one by one.
pub(crate) fn load_states(conn: &mut SqliteConnection, keys: &[&EntityKey]) -> Res<Vec<Option<Stored>>> {
    let mut out: Vec<Option<Stored>> = keys.iter().map(|_| None).collect();
    let mut by_type: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        match by_type.iter_mut().find(|(t, _)| *t == key.entity_type()) {
            Some((_, idx)) => idx.push(i),
            None => by_type.push((key.entity_type(), vec![i])),
        }
    }
    for (entity_type, idx) in by_type {
        for chunk in idx.chunks(READ_CHUNK) {
            if chunk.len() < READ_CHUNK / 4 {
                for &i in chunk {
                    out[i] = load_stored(conn, keys[i])?;
                }
                continue;
            }
            // Unused places repeat the last id.
            let ids: [&str; READ_CHUNK] = std::array::from_fn(|j| keys[chunk[j.min(chunk.len() - 1)]].entity_id());
            macro_rules! any_id {
                ($($j:literal)+) => { entities::entity_id.eq(ids[0]) $(.or(entities::entity_id.eq(ids[$j])))+ };
            }
            let rows: Vec<(String, StoredColumns)> = with_logged_state()
                .filter(entities::entity_type.eq(entity_type))
                .filter(any_id!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15))
                .select((
                    entities::entity_id,
                    (entities::state, change_log::record.nullable(), entities::updated_pos, entities::older_pos),
                ))
                .load(conn)?;
            for (id, (own, record, pos, older)) in rows {
                let i = chunk
                    .iter()
                    .copied()
                    .find(|&i| keys[i].entity_id() == id)
                    .ok_or_else(|| unexpected("read an entity that was not asked for"))?;
                out[i] = Some(Stored {
                    state: decode_state((own, record))?,
                    positions: positions_of(pos, older.as_deref())?,
                });
            }
        }
    }
    Ok(out)
}

pub(crate) fn write_entity(conn: &mut SqliteConnection, r: EntityRowWrite) -> Res<()> {
    diesel::replace_into(entities::table)
        .values((
            entities::entity_type.eq(r.key.entity_type()),
            entities::entity_id.eq(r.key.entity_id()),
            entities::state.eq(r.json),
            entities::state_hash.eq(r.hash.as_bytes().as_slice()),
            entities::deleted.eq(r.deleted),
            entities::updated_pos.eq(r.pos),
            entities::older_pos.eq(older_column(&r.older)),
        ))
        .execute(conn)?;
    Ok(())
}

/// `older_pos` as stored: NULL when the record at `updated_pos` holds the whole state.
fn older_column(older: &[i64]) -> Option<String> {
    (!older.is_empty()).then(|| older.iter().map(i64::to_string).collect::<Vec<_>>().join(","))
}

/// An entity row to write (see [`write_entity`]).
pub(crate) struct EntityRowWrite {
    pub(crate) key: EntityKey,
    pub(crate) deleted: bool,
    pub(crate) json: Option<String>,
    pub(crate) hash: Checksum,
    pub(crate) pos: i64,
    /// Positions of the entity's other records its state still needs.
    pub(crate) older: Vec<i64>,
}

/// [`write_entity`] for many rows, [`INSERT_CHUNK`] per statement.
pub(crate) fn write_entities(conn: &mut SqliteConnection, rows: Vec<EntityRowWrite>) -> Res<()> {
    let mut rows = rows.into_iter();
    while rows.len() >= INSERT_CHUNK {
        let chunk: Vec<_> = rows
            .by_ref()
            .take(INSERT_CHUNK)
            .map(|r| {
                (
                    entities::entity_type.eq(r.key.entity_type().to_string()),
                    entities::entity_id.eq(r.key.entity_id().to_string()),
                    entities::state.eq(r.json),
                    entities::state_hash.eq(r.hash.as_bytes().to_vec()),
                    entities::deleted.eq(r.deleted),
                    entities::updated_pos.eq(r.pos),
                    entities::older_pos.eq(older_column(&r.older)),
                )
            })
            .collect();
        let chunk: [_; INSERT_CHUNK] =
            chunk.try_into().map_err(|_| unexpected("a chunk of entity rows changed size"))?;
        diesel::replace_into(entities::table).values(chunk).execute(conn)?;
    }
    for r in rows {
        write_entity(conn, r)?;
    }
    Ok(())
}

/// How an entity's conflict rows must change after its state changed.
pub(crate) struct ConflictUpdate {
    /// Whether rows are open under the old state (they are all deleted first).
    clear_old: bool,
    /// Rows of the new state.
    new: Vec<Conflict>,
    /// Which of `new` were not open under the old state.
    opened: Vec<bool>,
}

/// What must change so that the entity's conflict rows match `after.conflicts(key)`:
/// nothing (`None`) unless the set of conflict ids changes. Pure, so it can run off
/// the writer.
pub(crate) fn conflict_update(
    key: &EntityKey,
    before: Option<&EntityState>,
    after: &EntityState,
) -> Option<ConflictUpdate> {
    let old: BTreeSet<ConflictId> =
        before.map(|s| s.conflicts(key).into_iter().map(|c| c.id).collect()).unwrap_or_default();
    let new = after.conflicts(key);
    let new_ids: BTreeSet<&ConflictId> = new.iter().map(|c| &c.id).collect();
    if new_ids.len() == old.len() && old.iter().all(|id| new_ids.contains(id)) {
        return None;
    }
    let opened = new.iter().map(|c| !old.contains(&c.id)).collect();
    Some(ConflictUpdate { clear_old: !old.is_empty(), new, opened })
}

/// Applies a [`conflict_update`] to the entity's rows. Returns the conflicts that
/// were not open before.
pub(crate) fn write_conflict_update(
    conn: &mut SqliteConnection,
    key: &EntityKey,
    update: ConflictUpdate,
) -> Res<Vec<Conflict>> {
    if update.clear_old {
        diesel::delete(
            conflicts::table
                .filter(conflicts::entity_type.eq(key.entity_type()))
                .filter(conflicts::entity_id.eq(key.entity_id())),
        )
        .execute(conn)?;
    }
    let mut opened = Vec::new();
    for (c, is_new) in update.new.into_iter().zip(update.opened) {
        let json = to_json(&c)?;
        diesel::replace_into(conflicts::table)
            .values((
                conflicts::conflict_id.eq(&c.id.0),
                conflicts::entity_type.eq(key.entity_type()),
                conflicts::entity_id.eq(key.entity_id()),
                conflicts::field.eq(&c.field),
                conflicts::conflict.eq(json),
            ))
            .execute(conn)?;
        if is_new {
            opened.push(c);
        }
    }
    Ok(opened)
}

#[async_trait::async_trait]
impl EntityStore for SqliteStore {
    async fn apply_local(
        &self,
        device: &DeviceId,
        ops: Vec<(EntityKey, EntityOp)>,
        at: Timestamp,
    ) -> Result<LocalOutcome, StoreError> {
        self.apply_local_with_outbox(device, ops, at, Box::new(|_| Vec::new())).await
    }

    async fn apply_local_with_outbox(
        &self,
        device: &DeviceId,
        ops: Vec<(EntityKey, EntityOp)>,
        at: Timestamp,
        outbox: Outbox,
    ) -> Result<LocalOutcome, StoreError> {
        let device = device.clone();
        self.write(move |conn| apply_local_tx(conn, &device, ops, at, outbox)).await
    }

    async fn entity(&self, key: &EntityKey) -> Result<Option<EntityState>, StoreError> {
        let key = key.clone();
        self.read(move |conn| load_state(conn, &key)).await
    }

    async fn list_entities(
        &self,
        entity_type: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(EntityKey, EntityState)>, StoreError> {
        let entity_type = entity_type.to_string();
        self.read(move |conn| {
            // Every valid id is non-empty, so "after the empty string" means from the start.
            let rows: Vec<(String, Option<String>, Option<String>)> = with_logged_state()
                .filter(entities::entity_type.eq(&entity_type))
                .filter(entities::entity_id.gt(after.unwrap_or_default()))
                .order(entities::entity_id)
                .limit(sql_limit(limit))
                .select((entities::entity_id, entities::state, change_log::record.nullable()))
                .load(conn)?;
            rows.into_iter()
                .map(|(id, own, record)| {
                    let key = EntityKey::new(entity_type.clone(), id).map_err(|e| corrupt("entity key", e))?;
                    Ok((key, decode_state((own, record))?))
                })
                .collect()
        })
        .await
    }

    async fn open_conflicts(&self) -> Result<Vec<Conflict>, StoreError> {
        self.read(|conn| {
            let rows: Vec<String> = conflicts::table
                .order((conflicts::entity_type, conflicts::entity_id, conflicts::field, conflicts::conflict_id))
                .select(conflicts::conflict)
                .load(conn)?;
            rows.iter().map(|j| serde_json::from_str(j).map_err(|e| corrupt("conflict", e))).collect()
        })
        .await
    }

    async fn conflict(&self, id: &ConflictId) -> Result<Option<Conflict>, StoreError> {
        let id = id.0.clone();
        self.read(move |conn| {
            let json: Option<String> = conflicts::table.find(&id).select(conflicts::conflict).first(conn).optional()?;
            json.map(|j| serde_json::from_str(&j).map_err(|e| corrupt("conflict", e))).transpose()
        })
        .await
    }

    async fn digest(&self) -> Result<StoreDigest, StoreError> {
        self.read(|conn| {
            let mut builder = DigestBuilder::new();
            let rows = entities::table
                .order((entities::entity_type, entities::entity_id))
                .select((entities::entity_type, entities::entity_id, entities::state_hash))
                .load_iter::<(String, String, Vec<u8>), _>(conn)?;
            for row in rows {
                let (t, id, hash) = row?;
                let hash: &[u8; 32] =
                    hash.as_slice().try_into().map_err(|_| unexpected("stored entity hash is not 32 bytes"))?;
                builder.add_parts(&t, &id, hash);
            }
            let open: i64 = conflicts::table.count().get_result(conn)?;
            let (digest, entities) = builder.finish();
            Ok(StoreDigest { digest, entities, open_conflicts: to_u64(open, "conflict count")? })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tillmesh_domain::ports::{DeviceStore, SyncStore};
    use tillmesh_domain::{ChangeRecord, EncodedChange};

    use super::*;

    fn key(t: &str, id: String) -> EntityKey {
        EntityKey::new(t, id).expect("key")
    }

    fn put(v: i64) -> EntityOp {
        EntityOp::Put { fields: [("n".to_string(), Some(json!(v)))].into_iter().collect() }
    }

    /// Reading many keys at once gives what reading them one by one gives: entities of
    /// two types, states in the log or merged into their own column, deleted ones and
    /// keys never written, in chunks, remainders and single reads.
    #[tokio::test]
    async fn states_read_together_are_the_states_read_alone() {
        let store = SqliteStore::open_in_memory().expect("store");
        let me = store.local_device_id(DeviceId::parse("a").expect("id")).await.expect("identity");
        let ops = (0..40)
            .map(|i| (key(if i % 3 == 0 { "stock" } else { "product" }, format!("e{i}")), put(i)))
            .chain(
                (0..40)
                    .step_by(7)
                    .map(|i| (key(if i % 3 == 0 { "stock" } else { "product" }, format!("e{i}")), EntityOp::Delete)),
            )
            .collect();
        store.apply_local(&me, ops, Timestamp(1)).await.expect("writes");
        // A peer's concurrent writes: their merge is stored in the entity's own column.
        let peer = DeviceId::parse("b").expect("id");
        let changes: Vec<EncodedChange> = (1..=5u64)
            .map(|seq| {
                let mut s = EntityState::default();
                s.apply_local_owned(put(100 + seq as i64), &peer, Timestamp(2)).expect("op");
                let mut state = s;
                state.context.observe(&peer, seq);
                ChangeRecord::new(peer.clone(), seq, key("product", format!("e{seq}")), Timestamp(2), state).into()
            })
            .collect();
        store.apply_remote(&peer, changes, 5, 5, None, None).await.expect("merge");
        let keys: Vec<EntityKey> =
            (0..60).rev().map(|i| key(if i % 3 == 0 { "stock" } else { "product" }, format!("e{i}"))).collect();
        for n in [0, 1, 3, 4, 16, 17, 35, 60] {
            let owned: Vec<EntityKey> = keys.iter().take(n).cloned().collect();
            let (together, alone) = store
                .read(move |conn| {
                    let asked: Vec<&EntityKey> = owned.iter().collect();
                    let together = load_states(conn, &asked)?;
                    let alone = asked.iter().map(|k| load_stored(conn, k)).collect::<Res<Vec<_>>>()?;
                    Ok((together, alone))
                })
                .await
                .expect("reads");
            assert_eq!(together, alone, "{n} keys");
            assert_eq!(together.iter().filter(|s| s.is_some()).count(), n.saturating_sub(20).min(40), "{n} keys");
        }
    }
}
