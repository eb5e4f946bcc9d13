//! Byte-level value checks used by the Python bindings in `lib.rs`.
//!
//! Every function takes the raw bytes of one value (`is_uuid(s: &[u8]) -> bool`, ...),
//! allocates nothing and never panics: all indexing goes through iterators,
//! fixed-size arrays or `get`. The inputs are expected to be UTF-8 (they come from
//! Arrow string arrays), but arbitrary bytes are handled: any non-ASCII byte simply
//! fails the ASCII-only checks, and `word_count` treats undecodable bytes as word
//! characters.
//!
//! The main implementations classify up to 64 bytes at a time into bit masks
//! (`block.rs`, SSE2 on x86_64) and express the rules as bit operations on those
//! masks, e.g. "no `..`" is `dot & (dot << 1) == 0`. The `*_value` variants take a
//! [`Value`], whose window may extend past the value inside the Arrow buffer so
//! that blocks are read in place instead of copied. [`scalar`] holds straightforward
//! byte-at-a-time versions: the fallback for long e-mail addresses and non-ASCII
//! text, and the reference the block versions are tested against.

/// Character classes, one bit each, looked up through [`CLASS`].
const HEX: u8 = 1 << 0;
/// `[a-z0-9]`: slug characters.
const SLUG: u8 = 1 << 1;
/// `[A-Za-z0-9]`.
const ALNUM: u8 = 1 << 2;
/// Allowed in the local part of an e-mail address (besides `.`).
const LOCAL: u8 = 1 << 3;
/// `[A-Za-z0-9_-]`: token-id body characters.
const TOKEN: u8 = 1 << 4;
/// `[A-Za-z]`.
const ALPHA: u8 = 1 << 5;

use crate::block::{Block, LANES, low_bits, padded};

const fn build_classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0usize;
    while i < 256 {
        let b = i as u8;
        let mut c = 0u8;
        let lower = b.is_ascii_lowercase();
        let upper = b.is_ascii_uppercase();
        let digit = b.is_ascii_digit();
        if digit || matches!(b, b'a'..=b'f' | b'A'..=b'F') {
            c |= HEX;
        }
        if lower || digit {
            c |= SLUG;
        }
        if lower || upper {
            c |= ALPHA;
        }
        if lower || upper || digit {
            c |= ALNUM | LOCAL | TOKEN;
        }
        if matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'/'
                | b'='
                | b'?'
                | b'^'
                | b'_'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'~'
                | b'-'
        ) {
            c |= LOCAL;
        }
        if matches!(b, b'_' | b'-') {
            c |= TOKEN;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CLASS: [u8; 256] = build_classes();

#[inline(always)]
fn has(b: u8, class: u8) -> bool {
    CLASS[b as usize] & class != 0
}

/// Maximum length of a slug, in bytes.
pub const SLUG_MAX_LEN: usize = 200;
/// Maximum length of a whole e-mail address, in bytes.
pub const EMAIL_MAX_LEN: usize = 254;
/// Maximum length of the local part (before `@`).
pub const EMAIL_LOCAL_MAX_LEN: usize = 64;
/// Maximum length of the domain (after `@`).
pub const EMAIL_DOMAIN_MAX_LEN: usize = 253;
/// Maximum length of one domain label.
pub const EMAIL_LABEL_MAX_LEN: usize = 63;

/// One value to check: its `len` bytes at the start of `window`, where `window` may
/// continue with more readable bytes of the same buffer (typically the following values
/// of an Arrow array). The block code reads whole 64-byte blocks straight from the
/// window when it can, ignoring the bytes past `len`, and only copies into a padded
/// buffer near the end of the window; the result never depends on the extra bytes.
#[derive(Clone, Copy, Debug)]
pub struct Value<'a> {
    window: &'a [u8],
    len: usize,
}

impl<'a> Value<'a> {
    /// The empty value.
    pub const EMPTY: Value<'static> = Value {
        window: &[],
        len: 0,
    };

    /// The first `len` bytes of `window` (clamped to the window length).
    #[inline(always)]
    pub fn new(window: &'a [u8], len: usize) -> Self {
        Self {
            window,
            len: len.min(window.len()),
        }
    }

    /// A value with nothing readable after it.
    #[inline(always)]
    pub fn exact(s: &'a [u8]) -> Self {
        Self::new(s, s.len())
    }

    /// The value's bytes.
    #[inline(always)]
    pub fn bytes(self) -> &'a [u8] {
        self.window.get(..self.len).unwrap_or_default()
    }

    /// The value without its first `n` bytes.
    #[inline(always)]
    fn skip(self, n: usize) -> Self {
        Self {
            window: self.window.get(n..).unwrap_or_default(),
            len: self.len.saturating_sub(n),
        }
    }

    /// The block of `16 * K` bytes starting at byte `start` of the value, and the mask
    /// of the lanes that belong to the value.
    #[inline(always)]
    fn block<const K: usize>(self, start: usize) -> (Block<K>, u64) {
        let live = low_bits(self.len.saturating_sub(start));
        let block = match self
            .window
            .get(start..)
            .and_then(|w| w.first_chunk::<LANES>())
        {
            Some(full) => Block::load(full),
            // Nothing of the value in this block (e.g. an empty string at the end of
            // the buffer, or all values empty): no copy needed.
            None if self.len <= start => Block::load(&[0; LANES]),
            None => Block::load(&padded(self.bytes().get(start..).unwrap_or_default())),
        };
        (block, live)
    }
}

/// Number of bytes of a `len`-byte value in the block starting at `start` (< `len`).
#[inline(always)]
fn block_len(len: usize, start: usize) -> usize {
    (len - start).min(LANES)
}

/// Canonical dashed UUID: `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex digits of
/// either case. No braces, no `urn:uuid:` prefix, no 32-digit undashed form.
pub fn is_uuid(s: &[u8]) -> bool {
    is_uuid_value(Value::exact(s))
}

/// [`is_uuid`] on a [`Value`].
#[inline(always)]
pub fn is_uuid_value(v: Value<'_>) -> bool {
    const DASHES: u64 = (1 << 8) | (1 << 13) | (1 << 18) | (1 << 23);
    const HEX_DIGITS: u64 = ((1 << 36) - 1) & !DASHES;
    if v.len != 36 {
        return false;
    }
    let (b, live) = v.block::<3>(0);
    let hex = (b.range(b'0', b'9') | b.with_bit5().range(b'a', b'f')).bits();
    hex & live == HEX_DIGITS && b.eq(b'-').bits() & live == DASHES
}

/// Kebab-case slug: `^[a-z0-9]+(-[a-z0-9]+)*$`, at most [`SLUG_MAX_LEN`] bytes.
pub fn is_slug(s: &[u8]) -> bool {
    is_slug_value(Value::exact(s))
}

/// [`is_slug`] on a [`Value`].
#[inline(always)]
pub fn is_slug_value(v: Value<'_>) -> bool {
    if v.len == 0 || v.len > SLUG_MAX_LEN {
        return false;
    }
    // Bit 0: was the byte before this block a dash? "Before the start" counts as a
    // dash so that a leading '-' is rejected like a doubled one.
    let mut dash_before = 1u64;
    let mut start = 0;
    loop {
        let (valid, last_is_dash) = slug_block::<4>(v, start, dash_before);
        start += LANES;
        if start >= v.len {
            // Last (usually only) block: no data-dependent branch.
            return valid & (last_is_dash == 0);
        }
        if !valid {
            return false;
        }
        dash_before = last_is_dash;
    }
}

/// One block of [`is_slug_value`]: is it valid, and is its last byte a '-'?
#[inline(always)]
fn slug_block<const K: usize>(v: Value<'_>, start: usize, dash_before: u64) -> (bool, u64) {
    let (b, live) = v.block::<K>(start);
    let dash_c = b.eq(b'-');
    let ok = (b.range(b'a', b'z') | b.range(b'0', b'9') | dash_c).bits() & live;
    let dash = dash_c.bits() & live;
    let valid = (ok == live) & (dash & ((dash << 1) | dash_before) == 0);
    (valid, (dash >> (block_len(v.len, start) - 1)) & 1)
}

/// `prefix` followed by 1..=`max_len` characters of `[A-Za-z0-9_-]`.
pub fn is_token_id(s: &[u8], prefix: &[u8], max_len: usize) -> bool {
    is_token_id_value(Value::exact(s), prefix, max_len)
}

/// [`is_token_id`] on a [`Value`].
#[inline(always)]
pub fn is_token_id_value(v: Value<'_>, prefix: &[u8], max_len: usize) -> bool {
    if !v.bytes().starts_with(prefix) {
        return false;
    }
    let body = v.skip(prefix.len());
    if body.len == 0 || body.len > max_len {
        return false;
    }
    let mut start = 0;
    while start < body.len {
        if !token_block::<4>(body, start) {
            return false;
        }
        start += LANES;
    }
    true
}

/// One block of [`is_token_id_value`]'s body: all bytes in `[A-Za-z0-9_-]`?
#[inline(always)]
fn token_block<const K: usize>(v: Value<'_>, start: usize) -> bool {
    let (b, live) = v.block::<K>(start);
    let ok = b.with_bit5().range(b'a', b'z') | b.range(b'0', b'9') | b.eq(b'_') | b.eq(b'-');
    ok.bits() & live == live
}

/// Pragmatic e-mail syntax check (no quoted local parts, no IP literals, ASCII only):
///
/// * exactly one `@`, total length at most [`EMAIL_MAX_LEN`] bytes;
/// * local part: 1..=64 of ``[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]``, not starting or
///   ending with `.`, no `..`;
/// * domain: 1..=253 bytes, at least two `.`-separated labels, each label 1..=63
///   of `[A-Za-z0-9-]` not starting or ending with `-`; the last label (TLD) is
///   at least two ASCII letters and letters only.
///
/// Whitespace is rejected everywhere, because no allowed class contains it.
/// Addresses of up to 64 bytes (nearly all) are checked with one block of bit masks;
/// longer ones by the byte-at-a-time [`scalar::is_email`].
pub fn is_email(s: &[u8]) -> bool {
    is_email_value(Value::exact(s))
}

/// [`is_email`] on a [`Value`].
#[inline(always)]
pub fn is_email_value(v: Value<'_>) -> bool {
    if v.len > LANES {
        return scalar::is_email(v.bytes());
    }
    // Two block widths only: a finer split costs more in branch mispredictions on
    // mixed lengths than it saves.
    if v.len <= 32 {
        email_block::<2>(v)
    } else {
        email_block::<4>(v)
    }
}

/// [`is_email_value`] for a value of at most `16 * K` bytes.
#[inline(always)]
fn email_block<const K: usize>(v: Value<'_>) -> bool {
    // Branch-free on purpose (except for the rarely taken full local-part test): with
    // a mix of valid and invalid values, early returns cost more in mispredictions
    // than evaluating every rule. With n <= 64 the local part is <= 63 bytes and the
    // domain and each label <= 62 bytes, so no length limit can be exceeded here.
    let (b, live) = v.block::<K>(0);
    let at = b.eq(b'@').bits() & live;
    let one_at = (at != 0) & (at & at.wrapping_sub(1) == 0);
    let local = at.wrapping_sub(1); // the bytes before the '@' (if there is exactly one)
    let domain = live & !(local | at);
    let last = live & !(live >> 1); // the value's last byte
    let dot_c = b.eq(b'.');
    let dash_c = b.eq(b'-');
    let digit_c = b.range(b'0', b'9');
    let base_c = b.with_bit5().range(b'a', b'z') | digit_c | dot_c | dash_c;
    let dot = dot_c.bits() & live;
    let dash = dash_c.bits() & domain;
    let domain_dots = dot & domain;
    // Domain: letters, digits, '-' and '.'. Local part: nearly always those too; only
    // otherwise test the full set (printable ASCII except the specials `"(),:;<>[\]`;
    // '@' cannot occur before the only '@', and the '.' rules are checked below).
    let base = base_c.bits();
    let local_ok = base & local == local || {
        let specials = b.eq(b'"')
            | b.range(b'(', b')')
            | b.eq(b',')
            | b.range(b':', b'<')
            | b.eq(b'>')
            | b.range(b'[', b']');
        b.range(0x21, 0x7E).and_not(specials).bits() & local == local
    };
    one_at
        & (local != 0)
        & (domain_dots != 0)
        & local_ok
        & (base & domain == domain)
        // no "..", no '.' first, last or next to '@'; not second to last either, so
        // the TLD has at least two bytes
        & (dot & ((dot << 1) | 1 | last | (last >> 1) | (at << 1) | (at >> 1)) == 0)
        // no label starting or ending with '-'
        & (dash & (((dot | at) << 1) | (dot >> 1) | last) == 0)
        // TLD letters only: every digit and '-' of the domain comes before its last
        // '.' (compared as integers: all their bits are below the highest dot bit)
        & ((digit_c.bits() | dash) & domain < domain_dots)
}

/// Number of words separated by Unicode whitespace (the `White_Space` property,
/// i.e. what `char::is_whitespace` accepts): ASCII TAB, LF, VT, FF, CR, SPACE and
/// U+0085, U+00A0, U+1680, U+2000..=U+200A, U+2028, U+2029, U+202F, U+205F, U+3000.
///
/// ASCII text is counted up to 64 bytes at a time with bit masks; from the first
/// block containing a non-ASCII byte on, [`scalar::word_count_from`] takes over (a
/// block boundary after only ASCII bytes is always a character boundary). Invalid
/// UTF-8 counts as word characters.
pub fn word_count(s: &[u8]) -> u32 {
    word_count_value(Value::exact(s))
}

/// [`word_count`] on a [`Value`].
#[inline(always)]
pub fn word_count_value(v: Value<'_>) -> u32 {
    let mut count: u32 = 0;
    // Bit 0: was the byte before this block part of a word?
    let mut word_before = 0u64;
    let mut start = 0;
    while start < v.len {
        match words_block::<4>(v, start, word_before) {
            Some((starts, last_is_word)) => {
                count = count.saturating_add(starts);
                word_before = last_is_word;
            }
            None => {
                let rest = v.bytes().get(start..).unwrap_or_default();
                return scalar::word_count_from(rest, count, word_before != 0);
            }
        }
        start += LANES;
    }
    count
}

/// One block of [`word_count_value`]: `None` if it contains a non-ASCII byte, else the
/// number of words starting in it and whether its last byte belongs to a word.
#[inline(always)]
fn words_block<const K: usize>(v: Value<'_>, start: usize, word_before: u64) -> Option<(u32, u64)> {
    let (b, live) = v.block::<K>(start);
    // Every non-ASCII White_Space character starts with 0xC2 (U+0085, U+00A0), 0xE1
    // (U+1680) or 0xE2/0xE3 (U+2000.., U+3000): other non-ASCII bytes (accents, CJK,
    // emoji, continuation bytes, invalid UTF-8) are word bytes, so only a block holding
    // one of those lead bytes needs the character-by-character path.
    if (b.eq(0xC2) | b.eq(0xE1) | b.range(0xE2, 0xE3)).bits() & live != 0 {
        return None;
    }
    let word = !(b.eq(b' ') | b.range(b'\t', b'\r')).bits() & live;
    let starts = word & !((word << 1) | word_before);
    Some((
        starts.count_ones(),
        (word >> (block_len(v.len, start) - 1)) & 1,
    ))
}

/// Byte-at-a-time implementations: the fallback for long e-mail addresses and
/// non-ASCII text, and the reference the block implementations are tested against.
pub mod scalar {
    use super::*;

    /// Canonical dashed UUID: `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex digits of
    /// either case. No braces, no `urn:uuid:` prefix, no 32-digit undashed form.
    pub fn is_uuid(s: &[u8]) -> bool {
        let Ok(s) = <&[u8; 36]>::try_from(s) else {
            return false;
        };
        s.iter().enumerate().all(|(i, &b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                has(b, HEX)
            }
        })
    }

    /// Kebab-case slug: `^[a-z0-9]+(-[a-z0-9]+)*$`, at most [`SLUG_MAX_LEN`] bytes.
    pub fn is_slug(s: &[u8]) -> bool {
        if s.is_empty() || s.len() > SLUG_MAX_LEN {
            return false;
        }
        // `prev_dash` starts true so that a leading '-' is rejected.
        let mut prev_dash = true;
        for &b in s {
            if b == b'-' {
                if prev_dash {
                    return false;
                }
                prev_dash = true;
            } else if has(b, SLUG) {
                prev_dash = false;
            } else {
                return false;
            }
        }
        !prev_dash
    }

    /// `prefix` followed by 1..=`max_len` characters of `[A-Za-z0-9_-]`.
    pub fn is_token_id(s: &[u8], prefix: &[u8], max_len: usize) -> bool {
        let Some(body) = s.strip_prefix(prefix) else {
            return false;
        };
        !body.is_empty() && body.len() <= max_len && body.iter().all(|&b| has(b, TOKEN))
    }

    /// Pragmatic e-mail syntax check (no quoted local parts, no IP literals, ASCII only):
    ///
    /// * exactly one `@`, total length at most [`EMAIL_MAX_LEN`] bytes;
    /// * local part: 1..=64 of ``[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]``, not starting or
    ///   ending with `.`, no `..`;
    /// * domain: 1..=253 bytes, at least two `.`-separated labels, each label 1..=63
    ///   of `[A-Za-z0-9-]` not starting or ending with `-`; the last label (TLD) is
    ///   at least two ASCII letters and letters only.
    ///
    /// Whitespace is rejected everywhere, because no allowed class contains it.
    pub fn is_email(s: &[u8]) -> bool {
        if s.len() > EMAIL_MAX_LEN {
            return false;
        }
        let mut parts = s.splitn(2, |&b| b == b'@');
        let (Some(local), Some(domain)) = (parts.next(), parts.next()) else {
            return false;
        };
        // A second '@' would sit in `domain`, whose character class excludes it.
        is_email_local(local) && is_email_domain(domain)
    }

    pub(crate) fn is_email_local(local: &[u8]) -> bool {
        if local.is_empty() || local.len() > EMAIL_LOCAL_MAX_LEN {
            return false;
        }
        // `prev_dot` starts true so that a leading '.' is rejected.
        let mut prev_dot = true;
        for &b in local {
            if b == b'.' {
                if prev_dot {
                    return false;
                }
                prev_dot = true;
            } else if has(b, LOCAL) {
                prev_dot = false;
            } else {
                return false;
            }
        }
        !prev_dot
    }

    pub(crate) fn is_email_domain(domain: &[u8]) -> bool {
        if domain.is_empty() || domain.len() > EMAIL_DOMAIN_MAX_LEN {
            return false;
        }
        let mut labels = 0usize;
        let mut last: &[u8] = &[];
        for label in domain.split(|&b| b == b'.') {
            if !is_domain_label(label) {
                return false;
            }
            labels += 1;
            last = label;
        }
        labels >= 2 && last.len() >= 2 && last.iter().all(|&b| has(b, ALPHA))
    }

    fn is_domain_label(label: &[u8]) -> bool {
        match (label.first(), label.last()) {
            (Some(&first), Some(&last)) => {
                label.len() <= EMAIL_LABEL_MAX_LEN
                    && first != b'-'
                    && last != b'-'
                    && label.iter().all(|&b| b == b'-' || has(b, ALNUM))
            }
            _ => false,
        }
    }

    /// Number of words separated by Unicode whitespace (the `White_Space` property,
    /// i.e. what `char::is_whitespace` accepts): ASCII TAB, LF, VT, FF, CR, SPACE and
    /// U+0085, U+00A0, U+1680, U+2000..=U+200A, U+2028, U+2029, U+202F, U+205F, U+3000.
    ///
    /// Works on raw bytes without decoding into `char`s: a whitespace character is
    /// recognised by its exact UTF-8 encoding, every other byte (including invalid
    /// UTF-8) counts as part of a word. For invalid input this gives the same count
    /// as `String::from_utf8_lossy(s).split_whitespace().count()`.
    pub fn word_count(s: &[u8]) -> u32 {
        word_count_from(s, 0, false)
    }

    /// Continue a word count over `s`, given the count so far and whether the byte
    /// before `s` was part of a word.
    pub fn word_count_from(s: &[u8], mut count: u32, mut in_word: bool) -> u32 {
        let mut rest = s;
        while let Some((&b, tail)) = rest.split_first() {
            let ws_len = whitespace_len(b, tail);
            if ws_len > 0 {
                in_word = false;
                rest = tail.get(ws_len - 1..).unwrap_or_default();
            } else {
                if !in_word {
                    count = count.saturating_add(1);
                    in_word = true;
                }
                rest = tail;
            }
        }
        count
    }

    /// If a whitespace character starts with lead byte `b` (followed by `tail`),
    /// return its encoded length in bytes, else 0.
    #[inline(always)]
    fn whitespace_len(b: u8, tail: &[u8]) -> usize {
        match b {
            b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ' => 1,
            0x00..=0x7F => 0,
            0xC2 => match tail.first() {
                // U+0085 NEL, U+00A0 NBSP
                Some(0x85 | 0xA0) => 2,
                _ => 0,
            },
            0xE1 => match tail {
                // U+1680 OGHAM SPACE MARK
                [0x9A, 0x80, ..] => 3,
                _ => 0,
            },
            0xE2 => match tail {
                // U+2000..=U+200A, U+2028, U+2029, U+202F
                [0x80, 0x80..=0x8A | 0xA8 | 0xA9 | 0xAF, ..] => 3,
                // U+205F MEDIUM MATHEMATICAL SPACE
                [0x81, 0x9F, ..] => 3,
                _ => 0,
            },
            0xE3 => match tail {
                // U+3000 IDEOGRAPHIC SPACE
                [0x80, 0x80, ..] => 3,
                _ => 0,
            },
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Iteration counts for the randomised tests: lower in (slow) debug builds.
    fn rounds(n: usize) -> usize {
        if cfg!(debug_assertions) { n / 5 } else { n }
    }

    /// Tiny deterministic PRNG (xorshift64*) so the fuzz-style tests need no crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes_from(&mut self, alphabet: &[&[u8]], max_pieces: usize) -> Vec<u8> {
            let n = self.below(max_pieces + 1);
            let mut out = Vec::new();
            for _ in 0..n {
                out.extend_from_slice(alphabet[self.below(alphabet.len())]);
            }
            out
        }
    }

    fn check_table(name: &str, f: impl Fn(&[u8]) -> bool, good: &[&[u8]], bad: &[&[u8]]) {
        for g in good {
            assert!(
                f(g),
                "{name}: expected valid: {:?}",
                String::from_utf8_lossy(g)
            );
        }
        for b in bad {
            assert!(
                !f(b),
                "{name}: expected invalid: {:?}",
                String::from_utf8_lossy(b)
            );
        }
    }

    // ---------------------------------------------------------------- uuid

    #[test]
    fn uuid_table() {
        let good: &[&[u8]] = &[
            b"123e4567-e89b-12d3-a456-426614174000",
            b"00000000-0000-0000-0000-000000000000",
            b"ffffffff-ffff-ffff-ffff-ffffffffffff",
            b"FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
            b"123E4567-e89B-12D3-A456-426614174000",
            b"abcdefAB-CDEF-0123-4567-89abcdef0123",
        ];
        let bad: &[&[u8]] = &[
            b"",
            b"-",
            b"123e4567e89b12d3a456426614174000",       // undashed
            b"{123e4567-e89b-12d3-a456-426614174000}", // braces
            b"urn:uuid:123e4567-e89b-12d3-a456-426614174000",
            b"123e4567-e89b-12d3-a456-42661417400",   // 35
            b"123e4567-e89b-12d3-a456-4266141740000", // 37
            b"123e4567-e89b-12d3-a456_426614174000",
            b"123e4567-e89b-12d3a-456-426614174000", // dash moved
            b"123e456-7e89b-12d3-a456-426614174000",
            b"g23e4567-e89b-12d3-a456-426614174000",
            b"123e4567-e89b-12d3-a456-42661417400g",
            b"123e4567-e89b-12d3-a456-42661417400\0",
            b"\0\0\0\0\0\0\0\0-\0\0\0\0-\0\0\0\0-\0\0\0\0-\0\0\0\0\0\0\0\0\0\0\0\0",
            b" 123e4567-e89b-12d3-a456-426614174000",
            b"123e4567-e89b-12d3-a456-426614174000 ",
            b"123e4567-e89b-12d3-a456-426614174000\n",
            b"------------------------------------",
            "123e4567-e89b-12d3-a456-42661417400\u{0660}".as_bytes(), // Arabic-Indic zero
            "１２３e4567-e89b-12d3-a456-426614174000".as_bytes(),     // fullwidth digits
        ];
        check_table("is_uuid", is_uuid, good, bad);
        check_table("scalar::is_uuid", scalar::is_uuid, good, bad);
    }

    #[test]
    fn uuid_every_position_rejects_non_hex() {
        let base = *b"123e4567-e89b-12d3-a456-426614174000";
        for i in 0..base.len() {
            for b in [b'g', b'G', b'-', b' ', b'\0', 0xFF, b'0'] {
                let mut v = base;
                v[i] = b;
                let want = if matches!(i, 8 | 13 | 18 | 23) {
                    b == b'-'
                } else {
                    b.is_ascii_hexdigit()
                };
                assert_eq!(is_uuid(&v), want, "pos {i} byte {b:#x}");
            }
        }
    }

    // ---------------------------------------------------------------- slug

    #[test]
    fn slug_table() {
        let max = [b'a'; SLUG_MAX_LEN];
        let too_long = [b'a'; SLUG_MAX_LEN + 1];
        let good: &[&[u8]] = &[
            b"a",
            b"0",
            b"hello",
            b"hello-world",
            b"a-b-c-1-2-3",
            b"2024-annual-report",
            b"x1-y2",
            &max,
        ];
        let bad: &[&[u8]] = &[
            b"",
            b"-",
            b"--",
            b"-a",
            b"a-",
            b"a--b",
            b"Hello",
            b"hello_world",
            b"hello world",
            b"hello.world",
            b" hello",
            b"hello\n",
            b"hello\0",
            b"\0",
            "caf\u{e9}".as_bytes(),
            "\u{0430}bc".as_bytes(), // Cyrillic a
            &too_long,
        ];
        check_table("is_slug", is_slug, good, bad);
        check_table("scalar::is_slug", scalar::is_slug, good, bad);
    }

    // ---------------------------------------------------------------- token id

    #[test]
    fn token_id_table() {
        let f = |s: &[u8]| is_token_id(s, b"cm_", 64);
        let g = |s: &[u8]| scalar::is_token_id(s, b"cm_", 64);
        let max = [b"cm_".as_slice(), &[b'x'; 64]].concat();
        let too_long = [b"cm_".as_slice(), &[b'x'; 65]].concat();
        let good: &[&[u8]] = &[
            b"cm_a",
            b"cm_abc123",
            b"cm_ABC-def_123",
            b"cm__",
            b"cm_-",
            b"cm_cm_",
            &max,
        ];
        let bad: &[&[u8]] = &[
            b"",
            b"cm_",
            b"cm",
            b"cm-abc",
            b"CM_abc",
            b"xcm_abc",
            b" cm_abc",
            b"cm_abc ",
            b"cm_ab c",
            b"cm_abc.def",
            b"cm_abc\0",
            b"cm_\0",
            "cm_caf\u{e9}".as_bytes(),
            "cm_\u{0661}".as_bytes(),
            &too_long,
        ];
        check_table("is_token_id", f, good, bad);
        check_table("scalar::is_token_id", g, good, bad);
    }

    #[test]
    fn token_id_edge_parameters() {
        // Empty prefix: just the body rule.
        assert!(is_token_id(b"abc", b"", 3));
        assert!(!is_token_id(b"abcd", b"", 3));
        assert!(!is_token_id(b"", b"", 3));
        // max_len 0: nothing can match.
        assert!(!is_token_id(b"cm_a", b"cm_", 0));
        // Huge max_len is fine.
        assert!(is_token_id(b"cm_a", b"cm_", usize::MAX));
        // Non-ASCII / NUL prefix is matched byte for byte.
        let p = "\u{e9}\0:".as_bytes();
        assert!(is_token_id(&[p, b"x"].concat(), p, 1));
        assert!(!is_token_id(b"x", p, 1));
        // Prefix longer than the value.
        assert!(!is_token_id(b"cm", b"cm_", 64));
    }

    // ---------------------------------------------------------------- email

    #[test]
    fn email_table() {
        let local64 = [b'a'; 64];
        let local65 = [b'a'; 65];
        let label63 = [b'b'; 63];
        let label64 = [b'b'; 64];
        let e_local64 = [&local64[..], b"@example.com"].concat();
        let e_local65 = [&local65[..], b"@example.com"].concat();
        let e_label63 = [b"a@".as_slice(), &label63, b".com"].concat();
        let e_label64 = [b"a@".as_slice(), &label64, b".com"].concat();
        // 254 bytes total: "a@" + 4 * (60 letters + ".") + "abcde.io".
        let mut e_254 = b"a@".to_vec();
        for _ in 0..4 {
            e_254.extend_from_slice(&[b'd'; 60]);
            e_254.push(b'.');
        }
        e_254.extend_from_slice(b"abcde.io");
        assert_eq!(e_254.len(), 254);
        let mut e_255 = e_254.clone();
        e_255.insert(0, b'x');
        assert_eq!(e_255.len(), 255);
        let good: &[&[u8]] = &[
            b"a@b.co",
            b"user@example.com",
            b"USER@EXAMPLE.COM",
            b"first.last@example.com",
            b"first.middle.last@sub.example.co.uk",
            b"user+tag@example.com",
            b"x_y-z@ex-ample.org",
            b"!#$%&'*+/=?^_`{|}~-@example.com",
            b"1234@123.example.com",
            b"a@1.2.xy",
            b"a@a-b-c.example",
            &e_local64,
            &e_label63,
            &e_254,
        ];
        let bad: &[&[u8]] = &[
            b"",
            b"@",
            b"a@",
            b"@example.com",
            b"plainaddress",
            b"a@@example.com",
            b"a@b@example.com",
            b"a@localhost",
            b"a@example",
            b"a@example.c",
            b"a@example.c0m",
            b"a@example.123",
            b"a@example.xn--p1ai", // TLD must be letters only
            b"a@example.com.",
            b"a@.example.com",
            b"a@example..com",
            b"a@-example.com",
            b"a@example-.com",
            b"a@exa_mple.com",
            b".a@example.com",
            b"a.@example.com",
            b"a..b@example.com",
            b"a b@example.com",
            b" a@example.com",
            b"a@example.com ",
            b"a@example.com\n",
            b"a\t@example.com",
            b"a\0@example.com",
            b"a@example.com\0",
            b"\"a\"@example.com",
            b"a(b)@example.com",
            b"a,b@example.com",
            b"a@[127.0.0.1]",
            b"a@example.com/",
            "j\u{f6}rg@example.com".as_bytes(),
            "a@b\u{fc}cher.de".as_bytes(),
            "a\u{a0}@example.com".as_bytes(),
            "a@example.com\u{3000}".as_bytes(),
            &e_local65,
            &e_label64,
            &e_255,
        ];
        check_table("is_email", is_email, good, bad);
        check_table("scalar::is_email", scalar::is_email, good, bad);
    }

    #[test]
    fn email_domain_length_limit() {
        let label = |n: usize| vec![b'a'; n];
        let dot = b".".to_vec();
        let d253 = [
            label(63),
            dot.clone(),
            label(63),
            dot.clone(),
            label(63),
            dot.clone(),
            label(61),
        ]
        .concat();
        let d254 = [
            label(63),
            dot.clone(),
            label(63),
            dot.clone(),
            label(63),
            dot,
            label(62),
        ]
        .concat();
        assert_eq!((d253.len(), d254.len()), (253, 254));
        assert!(scalar::is_email_domain(&d253));
        assert!(!scalar::is_email_domain(&d254));
        // A 253-byte domain can never make a valid address: "a@" + 253 = 255 > 254.
        assert!(!is_email(&[b"a@".as_slice(), &d253].concat()));
        let d252 = &d253[1..];
        assert!(is_email(&[b"a@".as_slice(), d252].concat()));
        assert!(!is_email(&[b"ab@".as_slice(), d252].concat()));
    }

    // ---------------------------------------------------------------- word count

    #[test]
    fn word_count_table() {
        let cases: &[(&[u8], u32)] = &[
            (b"", 0),
            (b" ", 0),
            (b"   \t\n\r\x0b\x0c ", 0),
            (b"one", 1),
            (b" one ", 1),
            (b"one two", 2),
            (b"one  two\tthree\nfour\r\nfive", 5),
            (b"a\x0bb\x0cc", 3),
            (b"a\0b", 1), // NUL is not whitespace
            (b"\0", 1),
            (b"a\x1cb", 1), // U+001C is not White_Space (Python's str.split disagrees)
            ("a\u{a0}b".as_bytes(), 2),
            ("a\u{85}b".as_bytes(), 2),
            ("a\u{1680}b".as_bytes(), 2),
            ("a\u{2000}b\u{2005}c\u{200a}d".as_bytes(), 4),
            ("a\u{200b}b".as_bytes(), 1), // zero-width space is not whitespace
            ("a\u{2028}b\u{2029}c".as_bytes(), 3),
            ("a\u{202f}b\u{205f}c\u{3000}d".as_bytes(), 4),
            ("\u{3000}\u{3000}".as_bytes(), 0),
            ("日本語 テキスト".as_bytes(), 2),
            ("emoji 🎉🎉 ok".as_bytes(), 3),
            ("caf\u{e9} au lait".as_bytes(), 3),
            (b"\xff\xfe", 1),          // invalid UTF-8 is word material
            (b"\xe2\x80", 1),          // truncated U+2000
            (b"a\xe2\x80 b", 2),       // truncated sequence then space
            (b"a\xc2", 1),             // truncated NBSP at end
            (b"\xc2\xa0\xc2", 1),      // NBSP then truncated lead
            (b"\x80\x80 \x80", 2),     // stray continuation bytes
            (b"\xf0\xe2\x80\x80x", 2), // bad lead, then U+2000, then x
        ];
        for (s, want) in cases {
            assert_eq!(word_count(s), *want, "{:?}", String::from_utf8_lossy(s));
            assert_eq!(
                scalar::word_count(s),
                *want,
                "{:?}",
                String::from_utf8_lossy(s)
            );
        }
    }

    #[test]
    fn word_count_matches_std_on_every_char() {
        // Every scalar value, alone and between two words.
        for c in (0u32..=0x10FFFF).filter_map(char::from_u32) {
            let mut buf = [0u8; 4];
            let enc = c.encode_utf8(&mut buf).as_bytes();
            let alone = if c.is_whitespace() { 0 } else { 1 };
            assert_eq!(word_count(enc), alone, "U+{:04X}", c as u32);
            let between = [b"x".as_slice(), enc, b"y"].concat();
            let want = if c.is_whitespace() { 2 } else { 1 };
            assert_eq!(word_count(&between), want, "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn word_count_matches_lossy_std_on_random_bytes() {
        let alphabet: &[&[u8]] = &[
            b"a",
            b"Z",
            b" ",
            b"\t",
            b"\n",
            b"\0",
            b"\xc2",
            b"\xa0",
            b"\x85",
            b"\xe2",
            b"\x80",
            b"\x81",
            b"\x9f",
            b"\xe1",
            b"\x9a",
            b"\xe3",
            b"\xf0",
            b"\xff",
            "\u{a0}".as_bytes(),
            "\u{2003}".as_bytes(),
            "\u{3000}".as_bytes(),
            "\u{e9}".as_bytes(),
            "🎉".as_bytes(),
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..rounds(200_000) {
            let s = rng.bytes_from(alphabet, 12);
            let want = String::from_utf8_lossy(&s).split_whitespace().count() as u32;
            assert_eq!(word_count(&s), want, "{s:x?}");
        }
    }

    #[test]
    fn word_count_long_input() {
        let s = "word ".repeat(1_000_000);
        assert_eq!(word_count(s.as_bytes()), 1_000_000);
        let one = vec![b'x'; 10_000_000];
        assert_eq!(word_count(&one), 1);
    }

    // ---------------------------------------------------------------- robustness

    /// Reference implementations written the obvious (allocating) way, used to
    /// cross-check the byte-level functions on random inputs.
    fn ref_uuid(s: &[u8]) -> bool {
        let Ok(s) = std::str::from_utf8(s) else {
            return false;
        };
        let groups: Vec<&str> = s.split('-').collect();
        groups.len() == 5
            && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
            && groups
                .iter()
                .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
    }
    fn ref_slug(s: &[u8]) -> bool {
        let Ok(s) = std::str::from_utf8(s) else {
            return false;
        };
        s.len() <= SLUG_MAX_LEN
            && s.split('-').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            })
    }
    fn ref_email(s: &[u8]) -> bool {
        let Ok(s) = std::str::from_utf8(s) else {
            return false;
        };
        let parts: Vec<&str> = s.split('@').collect();
        if parts.len() != 2 || s.len() > 254 {
            return false;
        }
        let (local, domain) = (parts[0], parts[1]);
        let local_ok = (1..=64).contains(&local.len())
            && local.split('.').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c))
            });
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = (1..=253).contains(&domain.len())
            && labels.len() >= 2
            && labels.iter().all(|l| {
                (1..=63).contains(&l.len())
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            && labels
                .last()
                .is_some_and(|t| t.len() >= 2 && t.chars().all(|c| c.is_ascii_alphabetic()));
        local_ok && domain_ok
    }

    #[test]
    fn random_inputs_agree_with_reference() {
        let alphabet: &[&[u8]] = &[
            b"a",
            b"f",
            b"F",
            b"g",
            b"z",
            b"0",
            b"9",
            b"-",
            b"--",
            b".",
            b"@",
            b"_",
            b"+",
            b" ",
            b"\0",
            b"\xff",
            b"\xc2\xa0",
            "\u{e9}".as_bytes(),
            b"cm_",
            b"ab.cd",
            b"example.com",
            b"123e4567",
            b"e89b",
            b"426614174000",
            b"-a456-",
            b"123e4567-e89b-12d3-a456-426614174000",
            b"00000000-0000-0000-0000-00000000000",
        ];
        let mut rng = Rng(42);
        let mut seen = [0usize; 3];
        for _ in 0..rounds(300_000) {
            let s = rng.bytes_from(alphabet, 10);
            let u = is_uuid(&s);
            assert_eq!(u, ref_uuid(&s), "uuid {:?}", String::from_utf8_lossy(&s));
            let sl = is_slug(&s);
            assert_eq!(sl, ref_slug(&s), "slug {:?}", String::from_utf8_lossy(&s));
            let e = is_email(&s);
            assert_eq!(e, ref_email(&s), "email {:?}", String::from_utf8_lossy(&s));
            seen[0] += u as usize;
            seen[1] += sl as usize;
            seen[2] += e as usize;
        }
        // The alphabet is chosen so that every check sees some positives too.
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
    }

    #[test]
    fn structured_uuids_agree_with_reference() {
        let mut rng = Rng(7);
        let hex = b"0123456789abcdefABCDEFgx-";
        for _ in 0..rounds(100_000) {
            let mut v = [0u8; 36];
            for (i, b) in v.iter_mut().enumerate() {
                *b = if matches!(i, 8 | 13 | 18 | 23) && rng.below(20) != 0 {
                    b'-'
                } else if rng.below(50) == 0 {
                    hex[rng.below(hex.len())]
                } else {
                    hex[rng.below(22)]
                };
            }
            assert_eq!(is_uuid(&v), ref_uuid(&v));
        }
    }

    #[test]
    fn block_and_scalar_implementations_agree() {
        // Pieces chosen to hit every rule of every check, near the 64-byte block edge.
        let alphabet: &[&[u8]] = &[
            b"a",
            b"Z",
            b"q",
            b"0",
            b"7",
            b"f",
            b"-",
            b"--",
            b".",
            b"..",
            b"@",
            b"_",
            b"+",
            b"!",
            b"~",
            b"\"",
            b"(",
            b",",
            b":",
            b"<",
            b"[",
            b"\\",
            b" ",
            b"\t",
            b"\0",
            b"\x7f",
            b"\xff",
            b"\xc2\xa0",
            "\u{3000}".as_bytes(),
            "\u{e9}".as_bytes(),
            b"cm_",
            b"example",
            b".com",
            b".c0",
            b"@ex-am.ple.io",
            b"abcdefghijklmnop",
            b"0123456789abcdef",
            b"123e4567-e89b-12d3-a456-426614174000",
        ];
        let mut rng = Rng(0xDEAD_BEEF);
        let mut positives = [0usize; 3];
        for round in 0..rounds(400_000) {
            let mut s = rng.bytes_from(alphabet, 14);
            if round % 4 == 0 {
                // Force lengths right around the block size.
                s.resize(56 + rng.below(16), b'a');
                if let Some(b) = s.get_mut(rng.below(56)) {
                    *b = b'@';
                }
            }
            let show = String::from_utf8_lossy(&s);
            // The same value followed by unrelated readable bytes (as inside an Arrow
            // buffer) must give the same answers.
            let mut window = s.clone();
            window.extend(rng.bytes_from(alphabet, 12));
            let v = Value::new(&window, s.len());
            assert_eq!(is_uuid_value(v), is_uuid(&s), "uuid window {show:?}");
            assert_eq!(is_slug_value(v), is_slug(&s), "slug window {show:?}");
            assert_eq!(is_email_value(v), is_email(&s), "email window {show:?}");
            assert_eq!(word_count_value(v), word_count(&s), "words window {show:?}");
            assert_eq!(
                is_token_id_value(v, b"cm_", 64),
                is_token_id(&s, b"cm_", 64),
                "token window {show:?}"
            );
            assert_eq!(is_uuid(&s), scalar::is_uuid(&s), "uuid {show:?}");
            assert_eq!(is_slug(&s), scalar::is_slug(&s), "slug {show:?}");
            assert_eq!(is_email(&s), scalar::is_email(&s), "email {show:?}");
            positives[0] += usize::from(is_email(&s));
            positives[1] += usize::from(is_slug(&s));
            positives[2] += usize::from(is_uuid(&s));
            assert_eq!(word_count(&s), scalar::word_count(&s), "words {show:?}");
            let max = rng.below(80);
            assert_eq!(
                is_token_id(&s, b"cm_", max),
                scalar::is_token_id(&s, b"cm_", max),
                "token {show:?} {max}"
            );
        }
        assert!(positives.iter().all(|&p| p > 100), "{positives:?}");
    }

    #[test]
    fn block_edges() {
        for n in 0..=200usize {
            let slug = vec![b'a'; n];
            assert_eq!(is_slug(&slug), (1..=SLUG_MAX_LEN).contains(&n), "{n}");
            let mut dashed = slug.clone();
            if n >= 3 {
                dashed[n / 2] = b'-';
                assert!(is_slug(&dashed), "{n}");
                dashed[n / 2 - 1] = b'-';
                assert!(!is_slug(&dashed), "{n}");
            }
            let text: Vec<u8> = (0..n)
                .map(|i| if i % 3 == 2 { b' ' } else { b'w' })
                .collect();
            assert_eq!(word_count(&text), scalar::word_count(&text), "{n}");
            let mut text_nbsp = text.clone();
            text_nbsp.extend_from_slice("\u{a0}x y".as_bytes());
            assert_eq!(
                word_count(&text_nbsp),
                scalar::word_count(&text_nbsp),
                "{n}"
            );
            let token = [b"cm_".as_slice(), &vec![b'x'; n]].concat();
            assert_eq!(
                is_token_id(&token, b"cm_", 64),
                (1..=64).contains(&n),
                "{n}"
            );
            assert_eq!(
                is_token_id(&token, b"cm_", 200),
                (1..=200).contains(&n),
                "{n}"
            );
            if (4..250).contains(&n) {
                let email = [&vec![b'l'; n / 2][..], b"@", &vec![b'd'; n - n / 2], b".io"].concat();
                assert_eq!(is_email(&email), scalar::is_email(&email), "{n}");
            }
        }
    }

    #[test]
    fn huge_and_degenerate_inputs_do_not_panic() {
        let big = vec![b'a'; rounds(50_000_000)];
        assert!(!is_uuid(&big));
        assert!(!is_slug(&big));
        assert!(!is_email(&big));
        assert!(!is_token_id(&big, b"cm_", 64));
        assert!(is_token_id(&big, b"", usize::MAX));
        assert_eq!(word_count(&big), 1);
        for b in 0u8..=255 {
            let s = [b];
            let _ = (is_uuid(&s), is_slug(&s), is_email(&s), word_count(&s));
            let _ = is_token_id(&s, &s, 1);
            let s = [b; 300];
            let _ = (is_uuid(&s), is_slug(&s), is_email(&s), word_count(&s));
            let s = [b; 64];
            let _ = (is_uuid(&s), is_slug(&s), is_email(&s), word_count(&s));
        }
    }
}
