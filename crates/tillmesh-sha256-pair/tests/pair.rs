//! `sha256_pair` against `sha2`, for every shape of input that matters: lengths
//! around block and padding boundaries, parts cut anywhere, empty parts and messages,
//! and messages of very different lengths (the longer finishes alone).

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use tillmesh_sha256_pair::{sha256_pair, sha256_parts};

fn reference(parts: &[&[u8]]) -> [u8; 32] {
    Sha256::digest(parts.concat()).into()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Splits `msg` at the given cut points (clamped and sorted), possibly
/// producing empty parts.
fn split<'m>(msg: &'m [u8], cuts: &[usize]) -> Vec<&'m [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(msg.len())).collect();
    cuts.sort();
    let mut parts = Vec::new();
    let mut start = 0;
    for c in cuts {
        parts.push(&msg[start..c]);
        start = c;
    }
    parts.push(&msg[start..]);
    parts
}

fn check(a: &[&[u8]], b: &[&[u8]]) {
    let (da, db) = sha256_pair(a, b);
    let (ra, rb) = (reference(a), reference(b));
    let la: usize = a.iter().map(|p| p.len()).sum();
    let lb: usize = b.iter().map(|p| p.len()).sum();
    assert_eq!(da, ra, "A mismatch: len {la}, part lens {:?}", a.iter().map(|p| p.len()).collect::<Vec<_>>());
    assert_eq!(db, rb, "B mismatch: len {lb}, part lens {:?}", b.iter().map(|p| p.len()).collect::<Vec<_>>());
    // Swapped roles exercise the "other message finishes alone" path too.
    let (sb, sa) = sha256_pair(b, a);
    assert_eq!((sa, sb), (ra, rb), "swapped mismatch: lens {la}/{lb}");
}

const SUFFIX_LENS: [usize; 14] = [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 1000, 1582, 3000];

#[test]
fn prefix_suffix_grid() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let pool = rng.bytes(3200);
    let mut cases = 0;
    for &sl in &SUFFIX_LENS {
        let state = &pool[..sl];
        for pl in 0..=200usize {
            let prefix_a = &pool[1000..1000 + pl];
            // B gets a different, shorter prefix so block boundaries differ.
            let pb = (pl * 40) / 123;
            let prefix_b = &pool[2000..2000 + pb];
            // Split 1: the realistic two-part shape.
            check(&[prefix_a, state], &[prefix_b, state]);
            // Split 2: one contiguous buffer.
            let a_full = [prefix_a, state].concat();
            let b_full = [prefix_b, state].concat();
            check(&[&a_full], &[&b_full]);
            // Split 3: with empty parts sprinkled in.
            check(&[&[], prefix_a, &[], state, &[]], &[prefix_b, &[], &[], state]);
            // Split 4: many small/odd parts, including a zero-length message.
            check(&split(&a_full, &[1, 7, 64, 65, 130, 500, 501, 2000]), &split(&b_full, &[63, 128, 129, 1700]));
            check(&split(&a_full, &[3, 3, 90]), &[]);
            // Split 5: same message on both sides (aligned blocks).
            check(&[prefix_a, state], &[prefix_a, state]);
            cases += 6;
        }
    }
    assert_eq!(cases, SUFFIX_LENS.len() * 201 * 6);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn random_messages_cut_anywhere(
        a in proptest::collection::vec(any::<u8>(), 0..4000),
        b in proptest::collection::vec(any::<u8>(), 0..4000),
        cuts_a in proptest::collection::vec(any::<usize>(), 0..6),
        cuts_b in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let ca: Vec<usize> = cuts_a.iter().map(|c| c % (a.len() + 1)).collect();
        let cb: Vec<usize> = cuts_b.iter().map(|c| c % (b.len() + 1)).collect();
        check(&split(&a, &ca), &split(&b, &cb));
    }
}

#[test]
fn every_length_pair_up_to_200() {
    let mut rng = Rng(777);
    let pool = rng.bytes(400);
    for la in 0..=200 {
        for lb in (0..=200).step_by(7) {
            check(&[&pool[..la]], &[&pool[200..200 + lb]]);
        }
    }
}

#[test]
fn known_vectors_and_the_single_stream_agree() {
    let (a, b) = sha256_pair(&[b"ab", b"c"], &[]);
    assert_eq!(hex(&a), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(hex(&b), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

#[test]
fn the_single_stream_is_sha256() {
    for len in [0, 1, 63, 64, 65, 1000] {
        let m = vec![7u8; len];
        assert_eq!(sha256_parts(&[&m[..len / 2], &m[len / 2..]]), reference(&[&m]));
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|x| format!("{x:02x}")).collect()
}
