//! This terminal's identity and the device registry ([`DeviceStore`]).

use diesel::prelude::*;
use diesel::SqliteConnection;
use tillmesh_domain::device::{DeviceRecord, DeviceSource};
use tillmesh_domain::ports::{DeviceStore, StoreError, WriterRecord};
use tillmesh_domain::{DeviceId, Timestamp};

use crate::schema::{devices, local_identity};
use crate::store::{corrupt, to_i64, to_u64, unexpected, Res, SqliteStore};
use crate::sync::{load_identity, load_progress, log_head_tx, raise_coverage};

type WriterRow = (Option<String>, Option<String>, Option<i64>, bool);

fn load_writer(conn: &mut SqliteConnection) -> Res<Option<WriterRecord>> {
    let row: Option<WriterRow> = local_identity::table
        .find(1)
        .select((
            local_identity::writer_id,
            local_identity::writer_marker,
            local_identity::writer_since,
            local_identity::writer_retired,
        ))
        .first(conn)
        .optional()?;
    match row {
        Some((Some(writer), Some(marker), Some(since), retired)) => Ok(Some(WriterRecord {
            writer: DeviceId::parse(writer).map_err(|e| corrupt("writer id", e))?,
            marker,
            since: to_u64(since, "writer epoch")?,
            retired,
        })),
        _ => Ok(None),
    }
}

type DeviceRow = (String, String, String, i32, i64, String, bool);

const DEVICE_COLUMNS: (
    devices::device_id,
    devices::name,
    devices::address,
    devices::port,
    devices::last_seen,
    devices::source,
    devices::trusted,
) = (
    devices::device_id,
    devices::name,
    devices::address,
    devices::port,
    devices::last_seen,
    devices::source,
    devices::trusted,
);

fn device_record(row: DeviceRow) -> Result<DeviceRecord, crate::store::Fail> {
    let (id, name, address, port, last_seen, source, trusted) = row;
    Ok(DeviceRecord {
        device_id: DeviceId::parse(id).map_err(|e| corrupt("device id", e))?,
        name,
        address,
        port: u16::try_from(port).map_err(|e| corrupt("device port", e))?,
        last_seen: Timestamp(last_seen),
        source: DeviceSource::parse(&source).ok_or_else(|| corrupt("device source", &source))?,
        trusted,
    })
}

#[async_trait::async_trait]
impl DeviceStore for SqliteStore {
    async fn local_device_id(&self, fresh: DeviceId) -> Result<DeviceId, StoreError> {
        self.write(move |conn| {
            diesel::insert_into(local_identity::table)
                .values((local_identity::singleton.eq(1), local_identity::device_id.eq(fresh.as_str())))
                .on_conflict_do_nothing()
                .execute(conn)?;
            let id: String = local_identity::table.find(1).select(local_identity::device_id).first(conn)?;
            DeviceId::parse(id).map_err(|e| corrupt("local device id", e))
        })
        .await
    }

    async fn writer(&self) -> Result<Option<WriterRecord>, StoreError> {
        self.read(load_writer).await
    }

    async fn take_writer(
        &self,
        writer: DeviceId,
        marker: String,
        since: Option<u64>,
    ) -> Result<WriterRecord, StoreError> {
        self.write(move |conn| {
            if load_progress(conn, writer.as_str())? > 0 {
                return Err(
                    StoreError::InvalidState(format!("the log already holds changes of writer {writer}")).into()
                );
            }
            let head = log_head_tx(conn)?;
            let since = since.map_or(head, |s| s.min(head));
            // The writer being replaced stops counting as this terminal's own: what the
            // log holds of it now, it holds whole (it wrote it); record that as coverage
            // before later records of it arrive out of order. (A retired one was
            // recorded when it was retired.)
            let before = load_identity(conn)?;
            if let (Some(prev), false) = (before.writer, before.retired) {
                let held = load_progress(conn, &prev)?;
                raise_coverage(conn, &prev, held)?;
            }
            let updated = diesel::update(local_identity::table.find(1))
                .set((
                    local_identity::writer_id.eq(Some(writer.as_str())),
                    local_identity::writer_marker.eq(Some(marker.as_str())),
                    local_identity::writer_since.eq(Some(to_i64(since, "log head")?)),
                    local_identity::writer_retired.eq(false),
                ))
                .execute(conn)?;
            if updated != 1 {
                return Err(unexpected("a writer is taken after the device id is stored"));
            }
            Ok(WriterRecord { writer, marker, since, retired: false })
        })
        .await
    }

    async fn note_held_elsewhere(&self, writer: &DeviceId, seq: u64) -> Result<bool, StoreError> {
        let writer = writer.clone();
        let retiring = writer.clone();
        // (is it this terminal's writer, is it retired already, does the peer hold more)
        let check = move |conn: &mut SqliteConnection| -> Res<(bool, bool, bool)> {
            let id = load_identity(conn)?;
            if id.writer.as_deref() != Some(writer.as_str()) {
                return Ok((false, false, false));
            }
            Ok((true, id.retired, seq > load_progress(conn, writer.as_str())?))
        };
        // Read first: nearly always the peer holds no more than this log.
        match self.read(check.clone()).await? {
            (true, true, _) => return Ok(true),
            (true, false, true) => {}
            _ => return Ok(false),
        }
        self.write(move |conn| match check(conn)? {
            (true, true, _) => Ok(true),
            (true, false, true) => {
                // What the log holds of it, it holds whole (its own writes).
                let held = load_progress(conn, retiring.as_str())?;
                raise_coverage(conn, retiring.as_str(), held)?;
                diesel::update(local_identity::table.find(1))
                    .set(local_identity::writer_retired.eq(true))
                    .execute(conn)?;
                Ok(true)
            }
            _ => Ok(false),
        })
        .await
    }

    async fn upsert_device(&self, device: DeviceRecord) -> Result<(), StoreError> {
        self.write(move |conn| {
            let existing: Option<String> =
                devices::table.find(device.device_id.as_str()).select(devices::source).first(conn).optional()?;
            // A stronger source (this terminal, paired by hand, found by mDNS) survives
            // being told of again by a weaker one.
            let source = match (existing.as_deref().and_then(DeviceSource::parse), device.source) {
                (Some(old), new) if old.rank() > new.rank() => old,
                (_, new) => new,
            };
            diesel::replace_into(devices::table)
                .values((
                    devices::device_id.eq(device.device_id.as_str()),
                    devices::name.eq(&device.name),
                    devices::address.eq(&device.address),
                    devices::port.eq(i32::from(device.port)),
                    devices::last_seen.eq(device.last_seen.0),
                    devices::source.eq(source.as_str()),
                    devices::trusted.eq(device.trusted),
                ))
                .execute(conn)?;
            Ok(())
        })
        .await
    }

    async fn touch_device(&self, id: &DeviceId, at: Timestamp) -> Result<(), StoreError> {
        let id = id.clone();
        self.write(move |conn| {
            let exists: Option<i64> =
                devices::table.find(id.as_str()).select(devices::last_seen).first(conn).optional()?;
            match exists {
                None => Err(StoreError::NotFound(format!("device {id}")).into()),
                Some(seen) if seen >= at.0 => Ok(()),
                Some(_) => {
                    diesel::update(devices::table.find(id.as_str())).set(devices::last_seen.eq(at.0)).execute(conn)?;
                    Ok(())
                }
            }
        })
        .await
    }

    async fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        let id = id.clone();
        self.read(move |conn| {
            let row: Option<DeviceRow> =
                devices::table.find(id.as_str()).select(DEVICE_COLUMNS).first(conn).optional()?;
            row.map(device_record).transpose()
        })
        .await
    }

    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.read(|conn| {
            let rows: Vec<DeviceRow> = devices::table.order(devices::device_id).select(DEVICE_COLUMNS).load(conn)?;
            rows.into_iter().map(device_record).collect()
        })
        .await
    }
}
