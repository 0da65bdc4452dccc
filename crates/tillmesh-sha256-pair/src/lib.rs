//! Two SHA-256 digests computed together, in one thread.
//!
//! Why: a terminal hashes every change's state twice — its record checksum and its
//! entity hash cover the same ~1.6 KB of canonical bytes behind different prefixes —
//! and with SHA-NI one SHA-256 stream is bound by the latency of the serial
//! `sha256rnds2` chain, leaving the SHA unit idle much of the time. Feeding a second,
//! independent message through the same loop overlaps the two chains: a pair costs
//! about 10% more than one hash (measured on this project's machines, Zen 4: 1.8x
//! faster than two `sha2` calls for two ~1.6 KB messages, 1.65x for ~300 bytes).
//!
//! The two messages are padded and processed as ordinary, independent SHA-256
//! streams (their block boundaries need not line up); when one runs out of blocks,
//! the other is finished alone. Without SHA-NI (or off x86_64) it is two `sha2` calls.
//!
//! Owns nothing of tillmesh's model and depends on no tillmesh crate. The workspace's
//! only `unsafe` code lives here: the `shani` module and its one call.

use sha2::{Digest, Sha256};

/// SHA-256 of `a_parts` concatenated and of `b_parts` concatenated,
/// computed together. Equal to `sha2::Sha256` of each concatenation.
pub fn sha256_pair(a_parts: &[&[u8]], b_parts: &[&[u8]]) -> ([u8; 32], [u8; 32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if shani::available() {
            // SAFETY: the required CPU features were just detected.
            #[allow(unsafe_code)]
            return unsafe { shani::pair(a_parts, b_parts) };
        }
    }
    (sha256_parts(a_parts), sha256_parts(b_parts))
}

/// SHA-256 of `parts` concatenated, one stream: the fallback, and the reference the
/// tests hold the pair to.
pub fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Splits a message given as a list of parts into padded SHA-256 blocks.
///
/// Whole blocks lying inside one part are lent out in place; only blocks that
/// straddle a part boundary and the final padded block(s) are assembled in a
/// caller-provided 64-byte scratch buffer, so the message is never copied.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Blocks<'a> {
    parts: &'a [&'a [u8]],
    /// Position of the next unread message byte: part index and offset in it.
    part: usize,
    offset: usize,
    /// Message bytes not yet emitted.
    remaining: usize,
    /// Message length in bits, for the padding trailer.
    bit_len: u64,
    phase: Phase,
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    /// Emitting full 64-byte message blocks.
    Data,
    /// Fewer than 64 message bytes are left: emit them with the padding.
    Tail,
    /// The tail had no room for the length field (>= 56 bytes): one more
    /// all-zero block carrying only the length is needed.
    LengthOnly,
    Done,
}

impl<'a> Blocks<'a> {
    fn new(parts: &'a [&'a [u8]]) -> Self {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        Blocks {
            parts,
            part: 0,
            offset: 0,
            remaining: len,
            bit_len: (len as u64).wrapping_mul(8),
            phase: if len >= 64 { Phase::Data } else { Phase::Tail },
        }
    }

    /// Copies the next `out.len()` message bytes into `out`.
    fn copy_to(&mut self, out: &mut [u8]) {
        let mut filled = 0;
        while filled < out.len() {
            let src = &self.parts[self.part][self.offset..];
            let n = src.len().min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&src[..n]);
            filled += n;
            self.offset += n;
            if self.offset == self.parts[self.part].len() {
                self.part += 1;
                self.offset = 0;
            }
        }
        self.remaining -= out.len();
    }

    /// Returns the next block, either borrowed from the input or assembled
    /// in `scratch`; `None` once the padded message is exhausted.
    #[inline(always)]
    fn next<'s>(&mut self, scratch: &'s mut [u8; 64]) -> Option<&'s [u8; 64]>
    where
        'a: 's,
    {
        match self.phase {
            Phase::Data => {
                // Skip empty parts so the in-place check sees real data.
                while self.offset == self.parts[self.part].len() {
                    self.part += 1;
                    self.offset = 0;
                }
                let src = &self.parts[self.part][self.offset..];
                let block = if let Some((block, _)) = src.split_first_chunk::<64>() {
                    self.offset += 64;
                    self.remaining -= 64;
                    block
                } else {
                    self.copy_to(scratch);
                    &*scratch
                };
                if self.remaining < 64 {
                    self.phase = Phase::Tail;
                }
                Some(block)
            }
            Phase::Tail => {
                let r = self.remaining;
                self.copy_to(&mut scratch[..r]);
                scratch[r] = 0x80;
                scratch[r + 1..].fill(0);
                if r < 56 {
                    scratch[56..].copy_from_slice(&self.bit_len.to_be_bytes());
                    self.phase = Phase::Done;
                } else {
                    self.phase = Phase::LengthOnly;
                }
                Some(&*scratch)
            }
            Phase::LengthOnly => {
                scratch[..56].fill(0);
                scratch[56..].copy_from_slice(&self.bit_len.to_be_bytes());
                self.phase = Phase::Done;
                Some(&*scratch)
            }
            Phase::Done => None,
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod shani {
    use super::Blocks;
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        is_x86_feature_detected!("sha")
            && is_x86_feature_detected!("sse2")
            && is_x86_feature_detected!("ssse3")
            && is_x86_feature_detected!("sse4.1")
    }

    const H0: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
        0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
        0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
        0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
        0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
        0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
        0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// Expands `$body` 16 times with `$i` bound to 0..16. The round loop must
    /// be fully unrolled so the message-word window stays in registers; LLVM
    /// declines to unroll bodies this large on its own.
    macro_rules! unroll16 {
        ($i:ident => $body:block) => {
            unroll16!(@ $i $body; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
        };
        (@ $i:ident $body:block; $($n:literal)*) => {
            $({ let $i: usize = $n; $body })*
        };
    }

    /// SHA-256 state in the register layout `sha256rnds2` works on.
    #[derive(Clone, Copy)]
    struct State {
        abef: __m128i,
        cdgh: __m128i,
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn to_state(h: &[u32; 8]) -> State {
        let dcba = _mm_set_epi32(h[3] as i32, h[2] as i32, h[1] as i32, h[0] as i32);
        let hgfe = _mm_set_epi32(h[7] as i32, h[6] as i32, h[5] as i32, h[4] as i32);
        let cdab = _mm_shuffle_epi32(dcba, 0xB1);
        let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
        State { abef: _mm_alignr_epi8(cdab, efgh, 8), cdgh: _mm_blend_epi16(efgh, cdab, 0xF0) }
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn to_digest(s: State) -> [u8; 32] {
        let feba = _mm_shuffle_epi32(s.abef, 0x1B);
        let dchg = _mm_shuffle_epi32(s.cdgh, 0xB1);
        let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
        let hgfe = _mm_alignr_epi8(dchg, feba, 8);
        let words = [
            _mm_extract_epi32(dcba, 0),
            _mm_extract_epi32(dcba, 1),
            _mm_extract_epi32(dcba, 2),
            _mm_extract_epi32(dcba, 3),
            _mm_extract_epi32(hgfe, 0),
            _mm_extract_epi32(hgfe, 1),
            _mm_extract_epi32(hgfe, 2),
            _mm_extract_epi32(hgfe, 3),
        ];
        let mut out = [0u8; 32];
        for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&(w as u32).to_be_bytes());
        }
        out
    }

    /// Loads a block as four vectors of big-endian message words.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    #[inline]
    fn load_block(block: &[u8; 64]) -> [__m128i; 4] {
        let bswap = _mm_set_epi64x(0x0c0d0e0f_08090a0b, 0x04050607_00010203);
        let p = block.as_ptr() as *const __m128i;
        // SAFETY: `block` is 64 readable bytes; the loads are unaligned.
        unsafe {
            [
                _mm_shuffle_epi8(_mm_loadu_si128(p), bswap),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(1)), bswap),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(2)), bswap),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(3)), bswap),
            ]
        }
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    #[inline]
    fn k4(i: usize) -> __m128i {
        // `i` is a constant after unrolling, so this folds to one load.
        let k = |j: usize| K[4 * i + j] as i32;
        _mm_set_epi32(k(3), k(2), k(1), k(0))
    }

    /// Next four schedule words from the previous sixteen.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    #[inline]
    fn schedule(w0: __m128i, w1: __m128i, w2: __m128i, w3: __m128i) -> __m128i {
        let t = _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8(w3, w2, 4));
        _mm_sha256msg2_epu32(t, w3)
    }

    /// Four rounds on one state with schedule words `w`.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    #[inline]
    fn rounds4(s: &mut State, w: __m128i, i: usize) {
        let t = _mm_add_epi32(w, k4(i));
        s.cdgh = _mm_sha256rnds2_epu32(s.cdgh, s.abef, t);
        s.abef = _mm_sha256rnds2_epu32(s.abef, s.cdgh, _mm_shuffle_epi32(t, 0x0E));
    }

    /// Compresses one block into each of two states.
    ///
    /// The two states are advanced step by step in lock-step: each step of
    /// `a` is immediately followed by the same step of `b`, so the two
    /// independent round chains are in flight together.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    #[inline]
    fn compress2(a: &mut State, ba: &[u8; 64], b: &mut State, bb: &[u8; 64]) {
        let (sa, sb) = (*a, *b);
        let mut wa = load_block(ba);
        let mut wb = load_block(bb);
        unroll16!(i => {
            // Schedule words for rounds 16.. overwrite the oldest slot, as
            // only the last sixteen words are ever needed.
            if i >= 4 {
                wa[i % 4] = schedule(wa[i % 4], wa[(i + 1) % 4], wa[(i + 2) % 4], wa[(i + 3) % 4]);
                wb[i % 4] = schedule(wb[i % 4], wb[(i + 1) % 4], wb[(i + 2) % 4], wb[(i + 3) % 4]);
            }
            rounds4(a, wa[i % 4], i);
            rounds4(b, wb[i % 4], i);
        });
        a.abef = _mm_add_epi32(a.abef, sa.abef);
        a.cdgh = _mm_add_epi32(a.cdgh, sa.cdgh);
        b.abef = _mm_add_epi32(b.abef, sb.abef);
        b.cdgh = _mm_add_epi32(b.cdgh, sb.cdgh);
    }

    /// Compresses one block into a single state (for the longer message's
    /// trailing blocks once the other is done).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    #[inline]
    fn compress1(a: &mut State, block: &[u8; 64]) {
        let sa = *a;
        let mut w = load_block(block);
        unroll16!(i => {
            if i >= 4 {
                w[i % 4] = schedule(w[i % 4], w[(i + 1) % 4], w[(i + 2) % 4], w[(i + 3) % 4]);
            }
            rounds4(a, w[i % 4], i);
        });
        a.abef = _mm_add_epi32(a.abef, sa.abef);
        a.cdgh = _mm_add_epi32(a.cdgh, sa.cdgh);
    }

    /// # Safety
    /// The CPU must support SHA, SSE2, SSSE3 and SSE4.1 (see [`available`]).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub unsafe fn pair(a_parts: &[&[u8]], b_parts: &[&[u8]]) -> ([u8; 32], [u8; 32]) {
        let (mut a, mut b) = (to_state(&H0), to_state(&H0));
        let (mut ia, mut ib) = (Blocks::new(a_parts), Blocks::new(b_parts));
        let (mut buf_a, mut buf_b) = ([0u8; 64], [0u8; 64]);
        loop {
            match (ia.next(&mut buf_a), ib.next(&mut buf_b)) {
                (Some(x), Some(y)) => compress2(&mut a, x, &mut b, y),
                (Some(x), None) => {
                    compress1(&mut a, x);
                    while let Some(x) = ia.next(&mut buf_a) {
                        compress1(&mut a, x);
                    }
                    break;
                }
                (None, Some(y)) => {
                    compress1(&mut b, y);
                    while let Some(y) = ib.next(&mut buf_b) {
                        compress1(&mut b, y);
                    }
                    break;
                }
                (None, None) => break,
            }
        }
        (to_digest(a), to_digest(b))
    }
}
