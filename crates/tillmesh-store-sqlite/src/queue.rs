//! The persistent offline queue ([`QueueStore`]): outbound operations and their
//! lifecycle pending → processing → completed / failed / cancelled.

use diesel::prelude::*;
use diesel::SqliteConnection;
use tillmesh_domain::ports::{QueueStore, StoreError};
use tillmesh_domain::queue::{NewOperation, OperationStatus, QueueStats, QueuedOperation};
use tillmesh_domain::Timestamp;

use crate::schema::offline_queue as q;
use crate::store::{corrupt, is_unique_violation, sql_limit, unexpected, Fail, Res, SqliteStore};

/// One stored operation, as read.
#[derive(Queryable, Selectable)]
#[diesel(table_name = q)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite))]
struct Row {
    id: String,
    kind: String,
    target: String,
    payload: String,
    status: String,
    attempts: i64,
    max_retries: i64,
    next_attempt_at: i64,
    last_error: Option<String>,
    created_at: i64,
}

impl Row {
    fn into_operation(self) -> Res<QueuedOperation> {
        Ok(QueuedOperation {
            payload: serde_json::from_str(&self.payload).map_err(|e| corrupt("payload", e))?,
            status: parse_status(&self.status)?,
            attempts: u32::try_from(self.attempts).map_err(|e| corrupt("attempts", e))?,
            max_retries: u32::try_from(self.max_retries).map_err(|e| corrupt("max_retries", e))?,
            next_attempt_at: Timestamp(self.next_attempt_at),
            last_error: self.last_error,
            created_at: Timestamp(self.created_at),
            id: self.id,
            kind: self.kind,
            target: self.target,
        })
    }
}

fn parse_status(s: &str) -> Res<OperationStatus> {
    OperationStatus::parse(s).ok_or_else(|| corrupt("operation status", s))
}

fn not_found(id: &str) -> Fail {
    Fail::Store(StoreError::NotFound(format!("operation {id}")))
}

fn load(conn: &mut SqliteConnection, id: &str) -> Res<Option<QueuedOperation>> {
    q::table.filter(q::id.eq(id)).select(Row::as_select()).first(conn).optional()?.map(Row::into_operation).transpose()
}

/// Loads an operation that must exist and be in one of `allowed` states.
fn load_in(conn: &mut SqliteConnection, id: &str, allowed: &[OperationStatus], action: &str) -> Res<QueuedOperation> {
    let op = load(conn, id)?.ok_or_else(|| not_found(id))?;
    if allowed.contains(&op.status) {
        Ok(op)
    } else {
        Err(Fail::Store(StoreError::InvalidState(format!(
            "operation {id} is {}; it cannot be {action}",
            op.status.as_str()
        ))))
    }
}

/// Reloads an operation just updated in this transaction.
fn reload(conn: &mut SqliteConnection, id: &str) -> Res<QueuedOperation> {
    load(conn, id)?.ok_or_else(|| unexpected(format!("operation {id} vanished")))
}

/// Inserts a new pending operation (inside the caller's transaction).
pub(crate) fn insert_operation(conn: &mut SqliteConnection, op: NewOperation) -> Res<QueuedOperation> {
    let payload = serde_json::to_string(&op.payload).map_err(|e| unexpected(e.to_string()))?;
    let inserted = diesel::insert_into(q::table)
        .values((
            q::id.eq(&op.id),
            q::kind.eq(&op.kind),
            q::target.eq(&op.target),
            q::payload.eq(payload),
            q::status.eq(OperationStatus::Pending.as_str()),
            q::attempts.eq(0_i64),
            q::max_retries.eq(i64::from(op.max_retries)),
            q::next_attempt_at.eq(op.created_at.0),
            q::last_error.eq(None::<String>),
            q::created_at.eq(op.created_at.0),
            q::updated_at.eq(op.created_at.0),
        ))
        .execute(conn);
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(Fail::Store(StoreError::InvalidState(format!("operation {} already exists", op.id))))
        }
        Err(e) => return Err(e.into()),
    }
    Ok(QueuedOperation {
        id: op.id,
        kind: op.kind,
        target: op.target,
        payload: op.payload,
        status: OperationStatus::Pending,
        attempts: 0,
        max_retries: op.max_retries,
        next_attempt_at: op.created_at,
        last_error: None,
        created_at: op.created_at,
    })
}

#[async_trait::async_trait]
impl QueueStore for SqliteStore {
    async fn enqueue(&self, op: NewOperation) -> Result<QueuedOperation, StoreError> {
        self.write(move |conn| insert_operation(conn, op)).await
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<QueuedOperation>, StoreError> {
        self.read(move |conn| {
            q::table
                .filter(q::status.eq(OperationStatus::Pending.as_str()))
                .filter(q::next_attempt_at.le(now.0))
                .order((q::next_attempt_at, q::seq))
                .limit(sql_limit(limit))
                .select(Row::as_select())
                .load(conn)?
                .into_iter()
                .map(Row::into_operation)
                .collect()
        })
        .await
    }

    async fn mark_processing(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            // Compare-and-set: only one caller moves it out of pending.
            let n =
                diesel::update(q::table.filter(q::id.eq(&id)).filter(q::status.eq(OperationStatus::Pending.as_str())))
                    .set(q::status.eq(OperationStatus::Processing.as_str()))
                    .execute(conn)?;
            Ok(n == 1)
        })
        .await
    }

    async fn mark_completed(&self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            let op = load_in(conn, &id, &[OperationStatus::Processing, OperationStatus::Pending], "completed")?;
            diesel::update(q::table.filter(q::id.eq(&id)))
                .set((
                    q::status.eq(OperationStatus::Completed.as_str()),
                    q::attempts.eq(i64::from(op.attempts) + 1),
                    q::updated_at.eq(at.0),
                ))
                .execute(conn)?;
            Ok(())
        })
        .await
    }

    async fn mark_failed(
        &self,
        id: &str,
        error: &str,
        retry_at: Option<Timestamp>,
    ) -> Result<QueuedOperation, StoreError> {
        let (id, error) = (id.to_string(), error.to_string());
        self.write(move |conn| {
            let op = load_in(conn, &id, &[OperationStatus::Processing, OperationStatus::Pending], "marked failed")?;
            let (status, next) = match retry_at {
                Some(t) => (OperationStatus::Pending, t),
                None => (OperationStatus::Failed, op.next_attempt_at),
            };
            diesel::update(q::table.filter(q::id.eq(&id)))
                .set((
                    q::status.eq(status.as_str()),
                    q::attempts.eq(i64::from(op.attempts) + 1),
                    q::last_error.eq(Some(&error)),
                    q::next_attempt_at.eq(next.0),
                ))
                .execute(conn)?;
            reload(conn, &id)
        })
        .await
    }

    async fn operations(
        &self,
        status: Option<OperationStatus>,
        limit: usize,
    ) -> Result<Vec<QueuedOperation>, StoreError> {
        self.read(move |conn| {
            let mut query = q::table
                .order((q::created_at.desc(), q::seq.desc()))
                .limit(sql_limit(limit))
                .select(Row::as_select())
                .into_boxed();
            if let Some(s) = status {
                query = query.filter(q::status.eq(s.as_str()));
            }
            query.load(conn)?.into_iter().map(Row::into_operation).collect()
        })
        .await
    }

    async fn operation(&self, id: &str) -> Result<Option<QueuedOperation>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| load(conn, &id)).await
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        self.read(|conn| {
            let rows: Vec<(String, i64)> =
                q::table.group_by(q::status).select((q::status, diesel::dsl::count_star())).load(conn)?;
            let mut stats = QueueStats::default();
            for (status, n) in rows {
                let n = u64::try_from(n).map_err(|e| corrupt("count", e))?;
                match parse_status(&status)? {
                    OperationStatus::Pending => stats.pending = n,
                    OperationStatus::Processing => stats.processing = n,
                    OperationStatus::Completed => stats.completed = n,
                    OperationStatus::Failed => stats.failed = n,
                    OperationStatus::Cancelled => {}
                }
            }
            Ok(stats)
        })
        .await
    }

    async fn retry(&self, id: &str, now: Timestamp) -> Result<QueuedOperation, StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            load_in(conn, &id, &[OperationStatus::Failed], "retried")?;
            diesel::update(q::table.filter(q::id.eq(&id)))
                .set((
                    q::status.eq(OperationStatus::Pending.as_str()),
                    q::attempts.eq(0_i64),
                    q::next_attempt_at.eq(now.0),
                    q::updated_at.eq(now.0),
                ))
                .execute(conn)?;
            reload(conn, &id)
        })
        .await
    }

    async fn cancel(&self, id: &str) -> Result<QueuedOperation, StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            load_in(conn, &id, &[OperationStatus::Pending, OperationStatus::Failed], "cancelled")?;
            diesel::update(q::table.filter(q::id.eq(&id)))
                .set(q::status.eq(OperationStatus::Cancelled.as_str()))
                .execute(conn)?;
            reload(conn, &id)
        })
        .await
    }

    async fn recover_processing(&self) -> Result<u64, StoreError> {
        self.write(|conn| {
            let n = diesel::update(q::table.filter(q::status.eq(OperationStatus::Processing.as_str())))
                .set(q::status.eq(OperationStatus::Pending.as_str()))
                .execute(conn)?;
            Ok(n as u64)
        })
        .await
    }
}
