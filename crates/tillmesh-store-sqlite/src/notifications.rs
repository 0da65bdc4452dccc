//! Operator notifications ([`NotificationStore`]).

use diesel::prelude::*;
use diesel::SqliteConnection;
use tillmesh_domain::ports::{NotificationStore, StoreError};
use tillmesh_domain::queue::Notification;
use tillmesh_domain::Timestamp;

use crate::schema::notifications as n;
use crate::store::{sql_limit, unexpected, Fail, Res, SqliteStore};

/// One stored notification, as read.
#[derive(Queryable, Selectable)]
#[diesel(table_name = n)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite))]
struct Row {
    id: String,
    kind: String,
    message: String,
    operation_id: Option<String>,
    created_at: i64,
    acknowledged: bool,
}

impl From<Row> for Notification {
    fn from(r: Row) -> Self {
        Notification {
            id: r.id,
            kind: r.kind,
            message: r.message,
            operation_id: r.operation_id,
            created_at: Timestamp(r.created_at),
            acknowledged: r.acknowledged,
        }
    }
}

fn load(conn: &mut SqliteConnection, id: &str) -> Res<Option<Notification>> {
    Ok(n::table.filter(n::id.eq(id)).select(Row::as_select()).first(conn).optional()?.map(Notification::from))
}

#[async_trait::async_trait]
impl NotificationStore for SqliteStore {
    /// Stores a notification. Adding an id that already exists is a no-op (the first
    /// one is kept), so a caller may safely repeat an add after a crash.
    async fn add_notification(&self, note: Notification) -> Result<(), StoreError> {
        self.write(move |conn| {
            diesel::insert_into(n::table)
                .values((
                    n::id.eq(&note.id),
                    n::kind.eq(&note.kind),
                    n::message.eq(&note.message),
                    n::operation_id.eq(&note.operation_id),
                    n::created_at.eq(note.created_at.0),
                    n::acknowledged.eq(note.acknowledged),
                ))
                .on_conflict_do_nothing()
                .execute(conn)?;
            Ok(())
        })
        .await
    }

    async fn notifications(&self, limit: usize) -> Result<Vec<Notification>, StoreError> {
        self.read(move |conn| {
            Ok(n::table
                .order((n::created_at.desc(), n::seq.desc()))
                .limit(sql_limit(limit))
                .select(Row::as_select())
                .load(conn)?
                .into_iter()
                .map(Notification::from)
                .collect())
        })
        .await
    }

    async fn acknowledge(&self, id: &str) -> Result<Notification, StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            let changed = diesel::update(n::table.filter(n::id.eq(&id))).set(n::acknowledged.eq(true)).execute(conn)?;
            if changed == 0 {
                return Err(Fail::Store(StoreError::NotFound(format!("notification {id}"))));
            }
            load(conn, &id)?.ok_or_else(|| unexpected(format!("notification {id} vanished")))
        })
        .await
    }
}
