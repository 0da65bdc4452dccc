//! Joining a store with a one-time pairing code: a SPAKE2 exchange (password-
//! authenticated key exchange, so neither a passive listener nor a fake peer can test
//! code guesses offline), key confirmation both ways, and the store key sealed under
//! the agreed key. Used by the client here and by the server in `tillmesh-app`.

use spake2::{Ed25519Group, Identity, Password, Spake2};

use crate::auth::{mac, tag_matches, Tag};

const ID_CLIENT: &[u8] = b"tillmesh-join-client-v1";
const ID_SERVER: &[u8] = b"tillmesh-join-server-v1";
/// Longest store key a grant may carry, in bytes.
pub const MAX_SEALED_KEY: usize = 4096;

fn password(code: &str) -> Password {
    Password::new(format!("tillmesh-pairing-code-v1:{}", code.trim()))
}

/// The client's half-done exchange.
pub struct ClientJoin {
    state: Spake2<Ed25519Group>,
}

/// Starts the client side: returns the state and the message to send.
pub fn client_start(code: &str) -> (ClientJoin, Vec<u8>) {
    let (state, msg) =
        Spake2::<Ed25519Group>::start_a(&password(code), &Identity::new(ID_CLIENT), &Identity::new(ID_SERVER));
    (ClientJoin { state }, msg)
}

impl ClientJoin {
    /// Finishes with the server's message; `None` when the message is malformed.
    pub fn finish(self, server_msg: &[u8]) -> Option<JoinKey> {
        key_from(self.state.finish(server_msg).ok()?)
    }
}

/// The server side in one step: the agreed key and the message to send back;
/// `None` when the client's message is malformed.
pub fn server_respond(code: &str, client_msg: &[u8]) -> Option<(JoinKey, Vec<u8>)> {
    let (state, msg) =
        Spake2::<Ed25519Group>::start_b(&password(code), &Identity::new(ID_CLIENT), &Identity::new(ID_SERVER));
    let key = key_from(state.finish(client_msg).ok()?)?;
    Some((key, msg))
}

fn key_from(v: Vec<u8>) -> Option<JoinKey> {
    let bytes: [u8; 32] = v.try_into().ok()?;
    Some(JoinKey(bytes))
}

/// The key both sides derive; equal only when both used the same code.
#[derive(Clone)]
pub struct JoinKey([u8; 32]);

/// What both confirmations bind: the attempt and both SPAKE2 messages and devices.
#[derive(Clone, Debug)]
pub struct Transcript<'a> {
    /// Join attempt id.
    pub join_id: &'a str,
    /// The client's SPAKE2 message.
    pub client_msg: &'a [u8],
    /// The server's SPAKE2 message.
    pub server_msg: &'a [u8],
    /// Joining device.
    pub client_device: &'a str,
    /// Serving device.
    pub server_device: &'a str,
}

impl Transcript<'_> {
    fn parts(&self) -> [&[u8]; 5] {
        [
            self.join_id.as_bytes(),
            self.client_msg,
            self.server_msg,
            self.client_device.as_bytes(),
            self.server_device.as_bytes(),
        ]
    }
}

impl JoinKey {
    /// The client's key confirmation.
    pub fn client_confirm(&self, t: &Transcript<'_>) -> Tag {
        mac(&self.0, "tillmesh-join-client-confirm-v1", &t.parts())
    }

    /// The server's key confirmation.
    pub fn server_confirm(&self, t: &Transcript<'_>) -> Tag {
        mac(&self.0, "tillmesh-join-server-confirm-v1", &t.parts())
    }

    fn keystream(&self, join_id: &str, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 32);
        let mut block = 0u64;
        while out.len() < len {
            out.extend_from_slice(&mac(
                &self.0,
                "tillmesh-join-stream-v1",
                &[join_id.as_bytes(), &block.to_be_bytes()],
            ));
            block += 1;
        }
        out.truncate(len);
        out
    }

    /// Seals `secret` (encrypt-then-MAC): returns the ciphertext and its tag.
    pub fn seal(&self, join_id: &str, secret: &[u8]) -> (Vec<u8>, Tag) {
        let sealed: Vec<u8> = secret.iter().zip(self.keystream(join_id, secret.len())).map(|(a, b)| a ^ b).collect();
        let tag = mac(&self.0, "tillmesh-join-tag-v1", &[join_id.as_bytes(), &sealed]);
        (sealed, tag)
    }

    /// Opens what [`JoinKey::seal`] made; `None` if the tag does not match.
    pub fn open(&self, join_id: &str, sealed: &[u8], tag_hex: &str) -> Option<Vec<u8>> {
        if sealed.len() > MAX_SEALED_KEY {
            return None;
        }
        let tag = mac(&self.0, "tillmesh-join-tag-v1", &[join_id.as_bytes(), sealed]);
        if !tag_matches(&tag, tag_hex) {
            return None;
        }
        Some(sealed.iter().zip(self.keystream(join_id, sealed.len())).map(|(a, b)| a ^ b).collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn transcript<'a>(a: &'a [u8], b: &'a [u8]) -> Transcript<'a> {
        Transcript { join_id: "j", client_msg: a, server_msg: b, client_device: "new", server_device: "old" }
    }

    #[test]
    fn the_same_code_agrees_on_a_key_that_unseals_the_store_key() {
        let (c, msg_a) = client_start("123456");
        let (server_key, msg_b) = server_respond("123456", &msg_a).unwrap();
        let client_key = c.finish(&msg_b).unwrap();
        let t = transcript(&msg_a, &msg_b);
        assert_eq!(client_key.client_confirm(&t), server_key.client_confirm(&t));
        let (sealed, tag) = server_key.seal("j", b"the store key of some length, longer than 32 bytes");
        assert_ne!(&sealed[..], b"the store key of some length, longer than 32 bytes");
        let opened = client_key.open("j", &sealed, &hex::encode(tag)).unwrap();
        assert_eq!(opened, b"the store key of some length, longer than 32 bytes");
        assert!(client_key.open("k", &sealed, &hex::encode(tag)).is_none());
    }

    #[test]
    fn a_different_code_gives_keys_whose_confirmations_differ() {
        let (c, msg_a) = client_start("123456");
        let (server_key, msg_b) = server_respond("654321", &msg_a).unwrap();
        let client_key = c.finish(&msg_b).unwrap();
        let t = transcript(&msg_a, &msg_b);
        assert_ne!(client_key.client_confirm(&t), server_key.client_confirm(&t));
    }

    #[test]
    fn a_malformed_spake2_message_is_refused() {
        assert!(server_respond("123456", b"garbage").is_none());
        assert!(server_respond("123456", &[]).is_none());
        let (c, _) = client_start("123456");
        assert!(c.finish(&[0u8; 33]).is_none());
    }
}
