//! Decoding a pull answer: the envelope (or the header line) first, then its records
//! on two threads.
//!
//! Why two threads: decoding ~1,000 records is on the critical path of a sync (the
//! next request waits for it) while the puller's writer stores the previous batch,
//! and a terminal has few cores but rarely all of them busy.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use tillmesh_domain::ports::TransportError;
use tillmesh_domain::wire::{MemberV1, PullLinesHeaderV1, PullResponseV1, MAX_BATCH_SIZE};
use tillmesh_domain::{DeviceId, EncodedChange, VectorClock};

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
    #[serde(default)]
    covered: VectorClock,
    #[serde(default)]
    members: Vec<MemberV1>,
}

fn undecodable(e: impl std::fmt::Display) -> TransportError {
    TransportError::Protocol(format!("undecodable answer: {e}"))
}

fn over_limit(n: usize) -> Result<(), TransportError> {
    if n > MAX_BATCH_SIZE {
        return Err(TransportError::Protocol(format!(
            "peer sent {n} changes in one batch, over the limit of {MAX_BATCH_SIZE}"
        )));
    }
    Ok(())
}

/// Decodes the body of a successful `POST /peer/v1/pull` (JSON), off the async runtime.
pub(crate) async fn decode_pull(body: Vec<u8>) -> Result<PullResponseV1, TransportError> {
    let env = tokio::task::spawn_blocking(move || serde_json::from_slice::<Envelope>(&body))
        .await
        .map_err(undecodable)?
        .map_err(undecodable)?;
    over_limit(env.changes.len())?;
    let Envelope { device_id, mut changes, next, has_more, head, log_epoch, epoch_start, covered, members } = env;
    let tail = if changes.len() >= SPLIT_FROM { changes.split_off(changes.len() / 2) } else { Vec::new() };
    let decode = |raw: Vec<Box<RawValue>>| off_runtime(move || raw.into_iter().map(EncodedChange::from_json).collect());
    let (mut changes, tail) = tokio::try_join!(decode(changes), decode(tail))?;
    changes.extend(tail);
    Ok(PullResponseV1 { device_id, changes, next, has_more, head, log_epoch, epoch_start, covered, members })
}

/// Decodes a pull answer written as lines ([`tillmesh_domain::wire::PULL_LINES_MEDIA_TYPE`]):
/// the header line, then exactly `count` records, one per line.
pub(crate) async fn decode_pull_lines(body: Vec<u8>) -> Result<PullResponseV1, TransportError> {
    let header_end = memchr::memchr(b'\n', &body).ok_or_else(|| undecodable("no header line"))?;
    let header: PullLinesHeaderV1 = serde_json::from_slice(&body[..header_end]).map_err(undecodable)?;
    over_limit(header.count)?;
    let records = header_end + 1..body.len();
    if !records.is_empty() && body.last() != Some(&b'\n') {
        return Err(undecodable("the last record line is cut off"));
    }
    // Halves at a line boundary near the middle; each half's thread copies its lines.
    let split = if header.count >= SPLIT_FROM {
        let mid = records.start + records.len() / 2;
        memchr::memchr(b'\n', &body[mid..]).map_or(records.end, |i| mid + i + 1)
    } else {
        records.end
    };
    let body = Arc::new(body);
    let decode = |range: std::ops::Range<usize>| {
        let body = Arc::clone(&body);
        off_runtime(move || {
            let text = &body[range];
            let mut start = 0;
            memchr::memchr_iter(b'\n', text)
                .map(|end| {
                    let line = &text[start..end];
                    start = end + 1;
                    record_line(line)
                })
                .collect()
        })
    };
    let (mut changes, tail) = tokio::try_join!(decode(records.start..split), decode(split..records.end))?;
    changes.extend(tail);
    if changes.len() != header.count {
        return Err(undecodable(format!("{} record lines, the header says {}", changes.len(), header.count)));
    }
    let PullLinesHeaderV1 { device_id, next, has_more, head, log_epoch, epoch_start, covered, members, .. } = header;
    Ok(PullResponseV1 { device_id, changes, next, has_more, head, log_epoch, epoch_start, covered, members })
}

fn record_line(line: &[u8]) -> Result<EncodedChange, String> {
    let text = std::str::from_utf8(line.trim_ascii()).map_err(|e| e.to_string())?;
    EncodedChange::decode(text.to_owned()).map_err(|e| e.to_string())
}

/// Runs a decoding step on the blocking pool.
async fn off_runtime<E: std::fmt::Display + Send + 'static>(
    step: impl FnOnce() -> Result<Vec<EncodedChange>, E> + Send + 'static,
) -> Result<Vec<EncodedChange>, TransportError> {
    tokio::task::spawn_blocking(step).await.map_err(undecodable)?.map_err(undecodable)
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
            covered: Default::default(),
            members: Vec::new(),
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

    /// `m` written as lines, as a server writes it.
    fn lines(m: &PullResponseV1) -> Vec<u8> {
        let header = PullLinesHeaderV1 {
            covered: m.covered.clone(),
            members: m.members.clone(),
            device_id: m.device_id.clone(),
            count: m.changes.len(),
            next: m.next,
            has_more: m.has_more,
            head: m.head,
            log_epoch: m.log_epoch.clone(),
            epoch_start: m.epoch_start,
        };
        let mut out = serde_json::to_string(&header).expect("encode");
        out.push('\n');
        for c in &m.changes {
            out.push_str(c.json());
            out.push('\n');
        }
        out.into_bytes()
    }

    fn refused_as(got: Result<PullResponseV1, TransportError>, what: &str) {
        let err = got.expect_err("refused");
        assert!(matches!(err, TransportError::Protocol(ref m) if m.contains(what)), "{err:?}");
    }

    #[tokio::test]
    async fn answers_as_lines_small_and_split_decode_to_the_message_in_order() {
        for n in [0, 1, SPLIT_FROM as u64 - 1, SPLIT_FROM as u64, 201] {
            let sent = message(n);
            let got = decode_pull_lines(lines(&sent)).await.expect("decodes");
            assert_eq!(got, sent, "{n} records");
            let texts: Vec<&str> = got.changes.iter().map(EncodedChange::json).collect();
            assert_eq!(texts, sent.changes.iter().map(EncodedChange::json).collect::<Vec<_>>(), "texts kept");
        }
    }

    #[tokio::test]
    async fn answers_as_lines_must_hold_exactly_their_records() {
        let sent = message(100);
        let good = String::from_utf8(lines(&sent)).expect("text");
        let records: Vec<&str> = good.lines().skip(1).collect();
        // A bad record in either half.
        for bad in [3, 97] {
            let text = good.replace(records[bad], &records[bad].replacen("\"seq\":", "\"seq\":\"x\",\"y\":", 1));
            refused_as(decode_pull_lines(text.into_bytes()).await, "undecodable");
        }
        // One line fewer or more than the header says, a blank line, a cut-off last line.
        let fewer = good.replacen(&format!("{}\n", records[50]), "", 1);
        let more = format!("{good}{}\n", records[0]);
        let blank = good.replacen(&format!("{}\n", records[50]), &format!("{}\n\n", records[50]), 1);
        let cut = good.trim_end().to_string();
        for text in [fewer, more, blank, cut] {
            refused_as(decode_pull_lines(text.into_bytes()).await, "undecodable");
        }
        // No header line, or a header that is not one.
        refused_as(decode_pull_lines(b"{}".to_vec()).await, "undecodable");
        refused_as(decode_pull_lines(good.replacen("\"count\"", "\"cnt\"", 1).into_bytes()).await, "undecodable");
        // Blanks around a record are not part of it.
        let padded = good.replacen(records[7], &format!(" {}\r", records[7]), 1);
        let got = decode_pull_lines(padded.into_bytes()).await.expect("decodes");
        assert_eq!(got.changes[7].json(), records[7]);
    }

    #[tokio::test]
    async fn answers_as_lines_over_the_batch_limit_are_refused_before_decoding() {
        let sent = message(3);
        let text = String::from_utf8(lines(&sent)).expect("text").replacen("\"count\":3", "\"count\":1001", 1);
        refused_as(decode_pull_lines(text.into_bytes()).await, "over the limit");
    }
}
