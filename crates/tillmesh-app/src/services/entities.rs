//! Local reads and writes of replicated entities, through the domain (clock tick,
//! change record with checksum) and the store, in one transaction per request.

use std::sync::Arc;

use serde_json::Value;
use tillmesh_domain::ports::{Clock, LocalOutcome, Store, StoreError};
use tillmesh_domain::{DeviceId, EntityKey, EntityOp, EntityState};

use crate::identity::Writer;
use crate::services::queue::OfflineQueueService;

/// Most ops accepted in one batch.
pub const MAX_BATCH_OPS: usize = 10_000;

/// Entity reads and writes for the API.
pub struct EntityService {
    writer: Arc<Writer>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    queue: Arc<OfflineQueueService>,
}

impl EntityService {
    /// Wires the service.
    pub fn new(
        writer: Arc<Writer>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        queue: Arc<OfflineQueueService>,
    ) -> Self {
        Self { writer, store, clock, queue }
    }

    /// Applies ops atomically and, in the same transaction, queues the sales they
    /// created for head office (when one is configured).
    ///
    /// # Errors
    /// Store errors; nothing is written or queued on error.
    pub async fn apply(&self, ops: Vec<(EntityKey, EntityOp)>) -> Result<LocalOutcome, StoreError> {
        for (_, op) in &ops {
            op.validate()?;
        }
        let writer = self.writer.current().writer;
        let result = self.write_as(&writer, ops).await;
        if matches!(result, Err(StoreError::WriterRetired(_))) {
            // A batch from a peer retired the writer just before this write (the sync
            // service replaces it right after such a batch): nothing was written, and
            // the caller's next attempt goes under a new writer.
            self.writer.replace(&writer).await?;
        }
        result
    }

    async fn write_as(&self, writer: &DeviceId, ops: Vec<(EntityKey, EntityOp)>) -> Result<LocalOutcome, StoreError> {
        let now = self.clock.now();
        match self.queue.sale_outbox() {
            Some(outbox) => {
                let outcome = self.store.apply_local_with_outbox(writer, ops, now, outbox).await?;
                self.queue.wake();
                Ok(outcome)
            }
            None => self.store.apply_local(writer, ops, now).await,
        }
    }

    /// One entity's state.
    ///
    /// # Errors
    /// Store errors.
    pub async fn get(&self, key: &EntityKey) -> Result<Option<EntityState>, StoreError> {
        self.store.entity(key).await
    }

    /// A page of entities of one type.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list(
        &self,
        entity_type: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(EntityKey, EntityState)>, StoreError> {
        self.store.list_entities(entity_type, after, limit).await
    }
}

/// The JSON body of a sale forwarded to head office.
pub fn sale_payload(key: &EntityKey, state: &EntityState, origin: &DeviceId) -> Value {
    serde_json::json!({
        "type": key.entity_type(),
        "id": key.entity_id(),
        "fields": state.view().fields,
        "terminal": origin.as_str(),
    })
}
