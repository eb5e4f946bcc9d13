//! Classify up to 64 bytes at once into bit masks (bit `i` set when byte `i` matches).
//!
//! A [`Block<K>`] holds the first `16 * K` bytes (`K` = 1..=4) of a 64-byte buffer.
//! Character-class tests return a [`Class<K>`], which can be combined with `|`, `&`
//! and [`Class::and_not`] before being turned into a `u64` bit mask with
//! [`Class::bits`] (bits at and above `16 * K` are unspecified: callers always AND
//! the result with the mask of the bytes they care about).
//!
//! On x86_64 this is SSE2 (part of the x86_64 baseline, so no runtime detection is
//! needed): an `eq` test is one instruction per 16 bytes, a `range` test three, and
//! `bits` one `pmovmskb` per 16 bytes. Elsewhere (or with the `portable-block` cargo
//! feature) a portable scalar implementation with identical results is used. Both are
//! always compiled so the tests can check that they agree.

/// Number of bytes in a full block.
pub const LANES: usize = 64;

/// Mask with the low `n` bits set (`n` = 0..=64; larger `n` gives all bits).
#[inline(always)]
pub fn low_bits(n: usize) -> u64 {
    if n >= LANES {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// Copy up to 64 bytes into a zero-padded block buffer.
#[inline(always)]
pub fn padded(s: &[u8]) -> [u8; LANES] {
    let mut buf = [0u8; LANES];
    let n = s.len().min(LANES);
    if let (Some(dst), Some(src)) = (buf.get_mut(..n), s.get(..n)) {
        dst.copy_from_slice(src);
    }
    buf
}

#[cfg(target_arch = "x86_64")]
#[cfg_attr(feature = "portable-block", allow(dead_code))]
mod sse2 {
    use core::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_andnot_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128, _mm_sub_epi8,
    };
    use core::ops::{BitAnd, BitOr};

    // SAFETY (every `unsafe` block in this module except the one in `Block::load`):
    // the intrinsics only compute on register values, and SSE2 is part of the x86_64
    // baseline. Lanes are processed with plain index loops over `[__m128i; K]` (no
    // `array::map`), which LLVM fully unrolls and inlines.

    #[derive(Clone, Copy)]
    pub struct Block<const K: usize>([__m128i; K]);

    #[derive(Clone, Copy)]
    pub struct Class<const K: usize>([__m128i; K]);

    impl<const K: usize> Block<K> {
        #[inline(always)]
        pub fn load(bytes: &[u8; super::LANES]) -> Self {
            const { assert!(K >= 1 && K <= 4) };
            let mut v = [unsafe { _mm_setzero_si128() }; K];
            for (i, lane) in v.iter_mut().enumerate() {
                // SAFETY: i < K <= 4, so the 16-byte unaligned load at offset 16 * i
                // stays inside the 64-byte array; `loadu` has no alignment requirement.
                *lane = unsafe { _mm_loadu_si128(bytes.as_ptr().add(16 * i).cast()) };
            }
            Self(v)
        }

        #[inline(always)]
        fn map(&self, f: impl Fn(__m128i) -> __m128i) -> [__m128i; K] {
            let mut out = self.0;
            for lane in out.iter_mut() {
                *lane = f(*lane);
            }
            out
        }

        /// Bytes equal to `c`.
        #[inline(always)]
        pub fn eq(&self, c: u8) -> Class<K> {
            let n = unsafe { _mm_set1_epi8(c as i8) };
            Class(self.map(|x| unsafe { _mm_cmpeq_epi8(x, n) }))
        }

        /// Bytes in `lo..=hi` (unsigned; requires `lo <= hi`).
        #[inline(always)]
        pub fn range(&self, lo: u8, hi: u8) -> Class<K> {
            let (l, w) = unsafe {
                (
                    _mm_set1_epi8(lo as i8),
                    _mm_set1_epi8(hi.wrapping_sub(lo) as i8),
                )
            };
            Class(self.map(|x| unsafe {
                let d = _mm_sub_epi8(x, l);
                // d <= w (unsigned)  <=>  min(d, w) == d
                _mm_cmpeq_epi8(_mm_min_epu8(d, w), d)
            }))
        }

        /// The block with bit 5 (0x20) set in every byte: ASCII letters become lower case.
        #[inline(always)]
        pub fn with_bit5(&self) -> Self {
            let b = unsafe { _mm_set1_epi8(0x20) };
            Self(self.map(|x| unsafe { _mm_or_si128(x, b) }))
        }
    }

    impl<const K: usize> Class<K> {
        /// One bit per byte, bit `i` for byte `i`.
        #[inline(always)]
        pub fn bits(self) -> u64 {
            let mut m = 0u64;
            for (i, lane) in self.0.iter().enumerate() {
                m |= (unsafe { _mm_movemask_epi8(*lane) } as u16 as u64) << (16 * i);
            }
            m
        }

        /// `self & !other`.
        #[inline(always)]
        pub fn and_not(self, other: Self) -> Self {
            let mut out = self.0;
            for (o, n) in out.iter_mut().zip(other.0) {
                *o = unsafe { _mm_andnot_si128(n, *o) };
            }
            Self(out)
        }
    }

    impl<const K: usize> BitOr for Class<K> {
        type Output = Self;
        #[inline(always)]
        fn bitor(self, other: Self) -> Self {
            let mut out = self.0;
            for (o, n) in out.iter_mut().zip(other.0) {
                *o = unsafe { _mm_or_si128(*o, n) };
            }
            Self(out)
        }
    }

    impl<const K: usize> BitAnd for Class<K> {
        type Output = Self;
        #[inline(always)]
        fn bitand(self, other: Self) -> Self {
            let mut out = self.0;
            for (o, n) in out.iter_mut().zip(other.0) {
                *o = unsafe { _mm_and_si128(*o, n) };
            }
            Self(out)
        }
    }
}

/// Portable implementation, used on non-x86_64 targets and as the test reference.
#[cfg_attr(
    all(target_arch = "x86_64", not(feature = "portable-block")),
    allow(dead_code)
)]
pub mod portable {
    use core::ops::{BitAnd, BitOr};

    #[derive(Clone, Copy)]
    pub struct Block<const K: usize>([u8; super::LANES]);

    #[derive(Clone, Copy)]
    pub struct Class<const K: usize>(u64);

    impl<const K: usize> Block<K> {
        #[inline(always)]
        pub fn load(bytes: &[u8; super::LANES]) -> Self {
            const { assert!(K >= 1 && K <= 4) };
            Self(*bytes)
        }

        #[inline(always)]
        fn mask(&self, f: impl Fn(u8) -> bool) -> Class<K> {
            let m = self
                .0
                .iter()
                .take(16 * K)
                .enumerate()
                .fold(0u64, |m, (i, &b)| m | (u64::from(f(b)) << i));
            Class(m)
        }

        #[inline(always)]
        pub fn eq(&self, c: u8) -> Class<K> {
            self.mask(|b| b == c)
        }

        #[inline(always)]
        pub fn range(&self, lo: u8, hi: u8) -> Class<K> {
            self.mask(|b| (lo..=hi).contains(&b))
        }

        #[inline(always)]
        pub fn with_bit5(&self) -> Self {
            Self(self.0.map(|b| b | 0x20))
        }
    }

    impl<const K: usize> Class<K> {
        #[inline(always)]
        pub fn bits(self) -> u64 {
            self.0
        }

        #[inline(always)]
        pub fn and_not(self, other: Self) -> Self {
            Self(self.0 & !other.0)
        }
    }

    impl<const K: usize> BitOr for Class<K> {
        type Output = Self;
        #[inline(always)]
        fn bitor(self, other: Self) -> Self {
            Self(self.0 | other.0)
        }
    }

    impl<const K: usize> BitAnd for Class<K> {
        type Output = Self;
        #[inline(always)]
        fn bitand(self, other: Self) -> Self {
            Self(self.0 & other.0)
        }
    }
}

// `--features portable-block` forces the portable version on x86_64 too, so that
// `cargo test --features portable-block` runs every check through it.
#[cfg(any(not(target_arch = "x86_64"), feature = "portable-block"))]
pub use portable::Block;
#[cfg(all(target_arch = "x86_64", not(feature = "portable-block")))]
pub use sse2::Block;

#[cfg(test)]
mod tests {
    use super::*;

    fn compare<const K: usize>(bytes: &[u8; LANES]) {
        let live = low_bits(16 * K);
        let fast = Block::<K>::load(bytes);
        let slow = portable::Block::<K>::load(bytes);
        for (lo, hi) in [
            (0, 0),
            (0, 255),
            (b'a', b'z'),
            (b'0', b'9'),
            (0x80, 0xFF),
            (9, 13),
        ] {
            assert_eq!(
                fast.range(lo, hi).bits() & live,
                slow.range(lo, hi).bits() & live,
                "range {lo}..={hi}"
            );
            assert_eq!(
                fast.with_bit5().range(lo, hi).bits() & live,
                slow.with_bit5().range(lo, hi).bits() & live,
                "bit5 range {lo}..={hi}"
            );
        }
        for c in [0u8, b'-', b'.', b'@', 0x7F, 0x80, 0xFF] {
            assert_eq!(fast.eq(c).bits() & live, slow.eq(c).bits() & live, "eq {c}");
        }
        let f =
            (fast.eq(b'a') | fast.range(b'0', b'9')).and_not(fast.eq(b'5')) & fast.range(0, 0x7F);
        let s =
            (slow.eq(b'a') | slow.range(b'0', b'9')).and_not(slow.eq(b'5')) & slow.range(0, 0x7F);
        assert_eq!(f.bits() & live, s.bits() & live);
    }

    #[test]
    fn sse2_or_native_matches_portable() {
        let mut bytes = [0u8; LANES];
        let mut state = 0x1234_5678_9ABC_DEF0u64;
        for round in 0..4_000 {
            for b in bytes.iter_mut() {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                *b = (state >> 56) as u8;
                if round % 2 == 0 {
                    *b = b"a5z09-.@\x00\xff"[*b as usize % 10];
                }
            }
            compare::<1>(&bytes);
            compare::<2>(&bytes);
            compare::<3>(&bytes);
            compare::<4>(&bytes);
        }
    }

    #[test]
    fn bit_order_is_byte_order() {
        let mut bytes = [b'x'; LANES];
        bytes[0] = b'-';
        bytes[17] = b'-';
        bytes[63] = b'-';
        let expected = 1 | (1 << 17) | (1 << 63);
        assert_eq!(Block::<4>::load(&bytes).eq(b'-').bits(), expected);
        assert_eq!(portable::Block::<4>::load(&bytes).eq(b'-').bits(), expected);
        assert_eq!(
            Block::<2>::load(&bytes).eq(b'-').bits() & low_bits(32),
            1 | (1 << 17)
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(low_bits(0), 0);
        assert_eq!(low_bits(1), 1);
        assert_eq!(low_bits(63), u64::MAX >> 1);
        assert_eq!(low_bits(64), u64::MAX);
        assert_eq!(low_bits(1000), u64::MAX);
        let p = padded(b"abc");
        assert_eq!(&p[..4], b"abc\0");
        let long = [7u8; 100];
        assert_eq!(padded(&long), [7u8; LANES]);
    }
}
