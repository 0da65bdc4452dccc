//! Decoding a pull answer: the envelope first, then its records on two threads.
//!
//! Why two threads: decoding ~1,000 records is on the critical path of a sync (the
//! next request waits for it) while the puller's writer stores the previous batch,
//! and a terminal has few cores but rarely all of them busy.

use serde::Deserialize;
use serde_json::value::RawValue;
use tillmesh_domain::ports::TransportError;
use tillmesh_domain::wire::{PullResponseV1, MAX_BATCH_SIZE};
use tillmesh_domain::{DeviceId, EncodedChange};

/// Batches of at least this many records are decoded on two threads.
const SPLIT_FROM: usize = 64;

/// [`PullResponseV1`] with its records still as text.
#[derive(Deserialize)]
struct Envelope {
    device_id: DeviceId,
    changes: Vec<Box<RawValue>>,
    next: u64,
    has_more: bool,
    head: u64,
    #[serde(default)]
    log_epoch: String,
    #[serde(default)]
    epoch_start: u64,
}

fn undecodable(e: impl std::fmt::Display) -> TransportError {
    TransportError::Protocol(format!("undecodable answer: {e}"))
}

/// Decodes the body of a successful `POST /peer/v1/pull`, off the async runtime.
pub(crate) async fn decode_pull(body: Vec<u8>) -> Result<PullResponseV1, TransportError> {
    let env = tokio::task::spawn_blocking(move || serde_json::from_slice::<Envelope>(&body))
        .await
        .map_err(undecodable)?
        .map_err(undecodable)?;
    if env.changes.len() > MAX_BATCH_SIZE {
        return Err(TransportError::Protocol(format!(
            "peer sent {} changes in one batch, over the limit of {MAX_BATCH_SIZE}",
            env.changes.len()
        )));
    }
    let Envelope { device_id, mut changes, next, has_more, head, log_epoch, epoch_start } = env;
    let tail = if changes.len() >= SPLIT_FROM { changes.split_off(changes.len() / 2) } else { Vec::new() };
    let (mut changes, tail) = tokio::try_join!(decode_records(changes), decode_records(tail))?;
    changes.extend(tail);
    Ok(PullResponseV1 { device_id, changes, next, has_more, head, log_epoch, epoch_start })
}

async fn decode_records(raw: Vec<Box<RawValue>>) -> Result<Vec<EncodedChange>, TransportError> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    tokio::task::spawn_blocking(move || {
        raw.into_iter().map(EncodedChange::from_json).collect::<Result<Vec<_>, _>>().map_err(undecodable)
    })
    .await
    .map_err(undecodable)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tillmesh_domain::{ChangeRecord, EntityKey, EntityState, Timestamp};

    fn message(n: u64) -> PullResponseV1 {
        let d = DeviceId::parse("origin").expect("id");
        let changes = (1..=n)
            .map(|seq| {
                let mut s = EntityState::default();
                s.context.observe(&d, seq);
                let key = EntityKey::new("t", format!("e{seq}")).expect("key");
                EncodedChange::new(ChangeRecord::new(d.clone(), seq, key, Timestamp(seq as i64), s))
            })
            .collect();
        PullResponseV1 {
            device_id: DeviceId::parse("server").expect("id"),
            changes,
            next: n + 3,
            has_more: n.is_multiple_of(2),
            head: n + 9,
            log_epoch: "run".into(),
            epoch_start: 2,
        }
    }

    #[tokio::test]
    async fn batches_small_and_split_decode_to_the_message_in_order() {
        for n in [0, 1, SPLIT_FROM as u64 - 1, SPLIT_FROM as u64, 201] {
            let sent = message(n);
            let got = decode_pull(serde_json::to_vec(&sent).expect("encode")).await.expect("decodes");
            assert_eq!(got, sent, "{n} records");
        }
    }

    #[tokio::test]
    async fn a_bad_record_in_either_half_fails_the_answer() {
        let sent = message(100);
        for bad in [3, 97] {
            let mut text = serde_json::to_value(&sent).expect("encode");
            text["changes"][bad]["seq"] = serde_json::json!("not a number");
            let err = decode_pull(serde_json::to_vec(&text).expect("encode")).await.expect_err("refused");
            assert!(matches!(err, TransportError::Protocol(ref m) if m.contains("undecodable")), "{err:?}");
        }
    }

    #[tokio::test]
    async fn more_records_than_a_batch_may_hold_are_refused() {
        let sent = message(MAX_BATCH_SIZE as u64 + 1);
        let err = decode_pull(serde_json::to_vec(&sent).expect("encode")).await.expect_err("refused");
        assert!(matches!(err, TransportError::Protocol(ref m) if m.contains("over the limit")), "{err:?}");
    }
}
