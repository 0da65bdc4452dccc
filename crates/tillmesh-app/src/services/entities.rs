//! Local reads and writes of replicated entities, through the domain (clock tick,
//! change record with checksum) and the store, in one transaction per request.

use std::sync::Arc;

use serde_json::Value;
use tillmesh_domain::ports::{Clock, LocalOutcome, Store, StoreError};
use tillmesh_domain::{DeviceId, EntityKey, EntityOp, EntityState};

use crate::services::queue::OfflineQueueService;

/// Most ops accepted in one batch.
pub const MAX_BATCH_OPS: usize = 10_000;

/// Entity reads and writes for the API.
pub struct EntityService {
    device: DeviceId,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    queue: Arc<OfflineQueueService>,
}

impl EntityService {
    /// Wires the service.
    pub fn new(
        device: DeviceId,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        queue: Arc<OfflineQueueService>,
    ) -> Self {
        Self { device, store, clock, queue }
    }

    /// Applies ops atomically and forwards newly created sales upstream.
    ///
    /// # Errors
    /// Store errors; nothing is written on error.
    pub async fn apply(&self, ops: Vec<(EntityKey, EntityOp)>) -> Result<LocalOutcome, StoreError> {
        for (_, op) in &ops {
            op.validate()?;
        }
        let outcome = self.store.apply_local(&self.device, ops, self.clock.now()).await?;
        // A sale is forwarded once, with its state at the end of the batch, when the
        // batch created it and did not delete it again.
        let mut new_sales: Vec<&EntityKey> = Vec::new();
        let mut last_state: std::collections::HashMap<&EntityKey, &EntityState> = std::collections::HashMap::new();
        for (key, state, created) in &outcome.entities {
            if key.entity_type() == "sale" {
                if *created && !new_sales.contains(&key) {
                    new_sales.push(key);
                }
                last_state.insert(key, state);
            }
        }
        for key in new_sales {
            if let Some(state) = last_state.get(key).filter(|s| !s.is_deleted()) {
                self.queue.forward_sale(key, state).await;
            }
        }
        Ok(outcome)
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
