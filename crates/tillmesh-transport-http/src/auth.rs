//! Store-membership cryptography of the peer protocol, shared by the client (this
//! crate) and the server (`tillmesh-app`): the session handshake's proofs and key,
//! and the per-request and per-response signatures. See docs/PROTOCOL.md.
//!
//! Every MAC is HMAC-SHA-256 with a distinct label, so no value computed for one
//! purpose can be replayed as another.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Request header: the session id.
pub const HEADER_SESSION: &str = "x-tillmesh-session";
/// Request header: the request's sequence number in its session (strictly increasing).
pub const HEADER_SEQ: &str = "x-tillmesh-seq";
/// Request and response header: the hex HMAC-SHA-256 signature.
pub const HEADER_SIG: &str = "x-tillmesh-sig";

/// Random bytes in a handshake nonce.
pub const NONCE_BYTES: usize = 32;
/// Random bytes in a session id (and a join attempt id).
pub const ID_BYTES: usize = 16;

/// A 32-byte MAC or derived key.
pub type Tag = [u8; 32];

fn hmac(key: &[u8]) -> HmacSha256 {
    match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this arm cannot be reached.
        Err(_) => unreachable!("HMAC-SHA-256 takes keys of any length"),
    }
}

/// HMAC-SHA-256 under `key` of `label` and `parts`, each length-prefixed so that no
/// two different inputs encode alike.
pub fn mac(key: &[u8], label: &str, parts: &[&[u8]]) -> Tag {
    let mut m = hmac(key);
    for p in std::iter::once(label.as_bytes()).chain(parts.iter().copied()) {
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
    hex::encode(b)
}

/// Whether `s` is exactly `bytes` bytes of hex.
pub fn is_hex_of(s: &str, bytes: usize) -> bool {
    s.len() == bytes * 2 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

/// Constant-time comparison of an expected tag with a presented hex string (any
/// malformed presentation is simply unequal).
pub fn tag_matches(expected: &Tag, presented_hex: &str) -> bool {
    let mut got = [0u8; 32];
    if hex::decode_to_slice(presented_hex, &mut got).is_err() {
        return false;
    }
    expected.iter().zip(got.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The inputs both sides of a session handshake bind their proofs to.
#[derive(Clone, Debug)]
pub struct Handshake<'a> {
    /// Session id chosen by the server.
    pub session_id: &'a str,
    /// Client nonce (hex, as sent).
    pub client_nonce: &'a str,
    /// Server nonce (hex, as sent).
    pub server_nonce: &'a str,
    /// Client device id.
    pub client_device: &'a str,
    /// Server device id.
    pub server_device: &'a str,
}

impl Handshake<'_> {
    fn parts(&self) -> [&[u8]; 5] {
        [
            self.session_id.as_bytes(),
            self.client_nonce.as_bytes(),
            self.server_nonce.as_bytes(),
            self.client_device.as_bytes(),
            self.server_device.as_bytes(),
        ]
    }

    /// The client's proof of holding `store_key`.
    pub fn client_proof(&self, store_key: &[u8]) -> Tag {
        mac(store_key, "tillmesh-session-v1", &self.parts())
    }

    /// The server's proof of holding `store_key` (sent only after the client's proof
    /// checked out).
    pub fn server_proof(&self, store_key: &[u8]) -> Tag {
        mac(store_key, "tillmesh-session-server-v1", &self.parts())
    }

    /// The session key both sides derive; it signs every request and response.
    pub fn session_key(&self, store_key: &[u8]) -> Tag {
        mac(store_key, "tillmesh-key-v1", &self.parts())
    }
}

/// Signature of one request: binds method, path, query, sequence and body.
pub fn request_signature(
    session_key: &Tag,
    method: &str,
    path: &str,
    query: &str,
    seq: u64,
    body_sha256_hex: &str,
) -> Tag {
    let canonical = format!("{method}\n{path}\n{query}\n{seq}\n{body_sha256_hex}");
    mac(session_key, "tillmesh-req-v1", &[canonical.as_bytes()])
}

/// Signature of one response: binds it to the request's sequence, its status and
/// its body, so a response can be neither forged nor replayed for another request.
pub fn response_signature(session_key: &Tag, seq: u64, status: u16, body_sha256_hex: &str) -> Tag {
    let canonical = format!("{seq}\n{status}\n{body_sha256_hex}");
    mac(session_key, "tillmesh-resp-v1", &[canonical.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs() -> Handshake<'static> {
        Handshake { session_id: "s", client_nonce: "c", server_nonce: "n", client_device: "a", server_device: "b" }
    }

    #[test]
    fn proofs_and_keys_differ_by_purpose_and_by_store_key() {
        let h = hs();
        let k = b"store key";
        let all = [h.client_proof(k), h.server_proof(k), h.session_key(k)];
        assert_ne!(all[0], all[1]);
        assert_ne!(all[1], all[2]);
        assert_ne!(all[0], all[2]);
        assert_ne!(h.client_proof(k), h.client_proof(b"other key"));
    }

    #[test]
    fn length_prefixes_keep_shifted_boundaries_apart() {
        assert_ne!(mac(b"k", "l", &[b"ab", b"c"]), mac(b"k", "l", &[b"a", b"bc"]));
    }

    #[test]
    fn a_tag_matches_only_its_exact_hex() {
        let t = mac(b"k", "l", &[]);
        assert!(tag_matches(&t, &hex::encode(t)));
        assert!(tag_matches(&t, &hex::encode(t).to_uppercase()));
        let mut bad = t;
        bad[31] ^= 1;
        assert!(!tag_matches(&t, &hex::encode(bad)));
        assert!(!tag_matches(&t, "zz"));
        assert!(!tag_matches(&t, &hex::encode(&t[..31])));
    }

    #[test]
    fn request_signatures_bind_every_field() {
        let k = [7u8; 32];
        let base = request_signature(&k, "POST", "/peer/v1/pull", "", 1, "00");
        assert_ne!(base, request_signature(&k, "GET", "/peer/v1/pull", "", 1, "00"));
        assert_ne!(base, request_signature(&k, "POST", "/peer/v1/pulx", "", 1, "00"));
        assert_ne!(base, request_signature(&k, "POST", "/peer/v1/pull", "a=1", 1, "00"));
        assert_ne!(base, request_signature(&k, "POST", "/peer/v1/pull", "", 2, "00"));
        assert_ne!(base, request_signature(&k, "POST", "/peer/v1/pull", "", 1, "01"));
    }
}
