//! The serving side of pairing codes: one active six-digit code at a time, valid for
//! a few minutes, burned after a few wrong guesses (each answered after a delay) or
//! its one successful use; SPAKE2 join attempts made with it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use rand::Rng;
use tillmesh_domain::wire::{JoinChallengeV1, JoinFinishV1, JoinGrantV1, JoinStartV1};
use tillmesh_domain::DeviceId;
use tillmesh_transport_http::auth::{random_hex, tag_matches, ID_BYTES};
use tillmesh_transport_http::join::{server_respond, JoinKey, Transcript};

use super::PeerAuth;
use crate::http::error::ApiError;

/// Most join attempts kept between their two steps.
const MAX_JOINS: usize = 16;
/// A join attempt not finished within this is forgotten.
const JOIN_TTL: Duration = Duration::from_secs(60);
/// Longest SPAKE2 message accepted, in bytes (Ed25519 ones are 33).
const MAX_SPAKE_MSG: usize = 64;

struct ActiveCode {
    code: String,
    expires: Instant,
    tries_left: u32,
    generation: u64,
}

struct PendingJoin {
    key: JoinKey,
    client_msg: Vec<u8>,
    server_msg: Vec<u8>,
    client_device: DeviceId,
    created: Instant,
    code_generation: u64,
}

/// The active code and the join attempts made with it.
#[derive(Default)]
pub(super) struct Pairing {
    code: Option<ActiveCode>,
    generation: u64,
    joins: HashMap<String, PendingJoin>,
}

impl Pairing {
    fn active(&mut self, now: Instant) -> Option<&mut ActiveCode> {
        if self.code.as_ref().is_some_and(|c| now >= c.expires) {
            self.code = None;
        }
        self.code.as_mut()
    }
}

/// A pairing code just made.
#[derive(Clone, Debug)]
pub struct IssuedCode {
    /// Six digits.
    pub code: String,
    /// How long it stays valid.
    pub valid_for: Duration,
}

fn no_code() -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "no_pairing_code",
        "this terminal has no active pairing code (never made, expired, already used, or burned \
         after too many wrong tries): make a new one with GET /api/network/pairing-code",
    )
}

impl PeerAuth {
    /// Makes a new pairing code, replacing any previous one.
    pub fn issue_code(&self) -> IssuedCode {
        let code = format!("{:06}", rand::thread_rng().gen_range(0..1_000_000u32));
        let mut p = self.pairing();
        p.generation += 1;
        let generation = p.generation;
        p.code = Some(ActiveCode {
            code: code.clone(),
            expires: Instant::now() + self.limits.code_validity,
            tries_left: self.limits.code_tries.max(1),
            generation,
        });
        p.joins.clear();
        IssuedCode { code, valid_for: self.limits.code_validity }
    }

    /// Step 1 of a join: answers the client's SPAKE2 message with ours.
    pub(super) fn join_start(&self, req: &JoinStartV1) -> Result<JoinChallengeV1, ApiError> {
        let client_msg = hex::decode(&req.msg)
            .ok()
            .filter(|m| !m.is_empty() && m.len() <= MAX_SPAKE_MSG)
            .ok_or_else(|| ApiError::bad_request("invalid_message", "msg must be a SPAKE2 message in hex"))?;
        let now = Instant::now();
        let (code, code_generation) = {
            let mut p = self.pairing();
            let c = p.active(now).ok_or_else(no_code)?;
            (c.code.clone(), c.generation)
        };
        let (key, server_msg) = server_respond(&code, &client_msg)
            .ok_or_else(|| ApiError::bad_request("invalid_message", "msg is not a valid SPAKE2 message"))?;
        let join_id = random_hex(ID_BYTES);
        let mut p = self.pairing();
        p.joins.retain(|_, j| now.duration_since(j.created) <= JOIN_TTL);
        while p.joins.len() >= MAX_JOINS {
            let Some(oldest) = p.joins.iter().min_by_key(|(_, j)| j.created).map(|(k, _)| k.clone()) else {
                break;
            };
            p.joins.remove(&oldest);
        }
        p.joins.insert(
            join_id.clone(),
            PendingJoin {
                key,
                client_msg,
                server_msg: server_msg.clone(),
                client_device: req.client_device.clone(),
                created: now,
                code_generation,
            },
        );
        Ok(JoinChallengeV1 { join_id, msg: hex::encode(server_msg), server_device: self.device_id.clone() })
    }

    /// Step 2: checks the client's key confirmation. Right: the code is used up and
    /// the store key goes back sealed. Wrong: one try fewer (the code is burned at
    /// zero), answered after a delay.
    pub(super) async fn join_finish(&self, req: &JoinFinishV1) -> Result<JoinGrantV1, ApiError> {
        let now = Instant::now();
        let outcome = {
            let mut p = self.pairing();
            let join = p
                .joins
                .remove(&req.join_id)
                .ok_or_else(|| ApiError::bad_request("unknown_join", "unknown or expired join attempt: start again"))?;
            if now.duration_since(join.created) > JOIN_TTL {
                return Err(no_code());
            }
            let code = p.active(now).ok_or_else(no_code)?;
            if code.generation != join.code_generation {
                return Err(no_code());
            }
            let transcript = Transcript {
                join_id: &req.join_id,
                client_msg: &join.client_msg,
                server_msg: &join.server_msg,
                client_device: join.client_device.as_str(),
                server_device: self.device_id.as_str(),
            };
            if tag_matches(&join.key.client_confirm(&transcript), &req.confirm) {
                p.code = None;
                p.joins.clear();
                let key = self.key.current();
                let (sealed, tag) = join.key.seal(&req.join_id, key.as_bytes());
                tracing::info!(device = %join.client_device, "a terminal joined the store with the pairing code");
                Ok(JoinGrantV1 {
                    server_confirm: hex::encode(join.key.server_confirm(&transcript)),
                    sealed_key: hex::encode(sealed),
                    tag: hex::encode(tag),
                })
            } else {
                code.tries_left = code.tries_left.saturating_sub(1);
                let left = code.tries_left;
                if left == 0 {
                    p.code = None;
                    p.joins.clear();
                }
                tracing::warn!(device = %join.client_device, tries_left = left, "wrong pairing code");
                Err(left)
            }
        };
        match outcome {
            Ok(grant) => Ok(grant),
            Err(left) => {
                tokio::time::sleep(self.limits.wrong_code_delay).await;
                let message = if left == 0 {
                    "wrong pairing code; that was the last try, so the code is burned: make a new one".to_string()
                } else {
                    format!("wrong pairing code ({left} tries left)")
                };
                Err(ApiError::new(StatusCode::FORBIDDEN, "wrong_pairing_code", message))
            }
        }
    }
}
