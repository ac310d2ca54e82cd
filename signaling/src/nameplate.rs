//! Nameplate allocation: the shortest numeric code that is still hard to
//! stumble on. Codes are drawn at random from the smallest digit range that is
//! less than half used, so they stay short while few sessions are waiting and
//! grow by a digit as the range fills up.

/// Longest nameplate, in digits. 10^9 live nameplates is far beyond a node.
pub const MAX_DIGITS: u32 = 9;

/// Parse a nameplate as a client typed it: 1 to 9 ASCII digits, no sign, no
/// leading zero.
pub fn parse(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > MAX_DIGITS as usize || s.starts_with('0') {
        return None;
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Number of decimal digits of a nameplate.
pub fn digits(n: u32) -> u32 {
    n.checked_ilog10().map_or(1, |d| d + 1)
}

/// The range of `digits`-digit nameplates.
pub fn range(digits: u32) -> (u32, u32) {
    let lo = if digits == 1 {
        1
    } else {
        10u32.pow(digits - 1)
    };
    (lo, 10u32.pow(digits) - 1)
}

/// Pick a free nameplate. `used_in(lo, hi)` counts nameplates in use in a
/// range, `taken(n)` tells whether one is in use, `random(lo, hi)` draws
/// uniformly from the inclusive range.
pub fn allocate(
    used_in: impl Fn(u32, u32) -> usize,
    taken: impl Fn(u32) -> bool,
    mut random: impl FnMut(u32, u32) -> u32,
) -> Option<u32> {
    for digits in 1..=MAX_DIGITS {
        let (lo, hi) = range(digits);
        let size = (hi - lo + 1) as usize;
        if used_in(lo, hi) * 2 >= size {
            continue;
        }
        // Less than half is used, so each draw succeeds with p > 1/2; 64
        // misses in a row is a 2^-64 event, after which we widen anyway.
        for _ in 0..64 {
            let n = random(lo, hi);
            if !taken(n) {
                return Some(n);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn parses_only_plain_numbers() {
        assert_eq!(parse("7"), Some(7));
        assert_eq!(parse("123456789"), Some(123_456_789));
        for bad in ["", "0", "07", "-1", "+1", "1e3", "1234567890", " 1", "٣"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn grows_by_a_digit_when_a_range_is_half_full() {
        let mut used = BTreeSet::new();
        let mut state = 12345u64;
        let mut rng = |lo: u32, hi: u32| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + ((state >> 33) as u32) % (hi - lo + 1)
        };
        for _ in 0..60 {
            let n = allocate(
                |lo, hi| used.range(lo..=hi).count(),
                |n| used.contains(&n),
                &mut rng,
            )
            .unwrap();
            assert!(used.insert(n), "{n} handed out twice");
        }
        // A range widens once half of it is used: 5 of the 9 one-digit codes,
        // 45 of the 90 two-digit codes, then three digits.
        assert_eq!(used.range(1..=9).count(), 5);
        assert_eq!(used.range(10..=99).count(), 45);
        assert_eq!(used.range(100..=999).count(), 10);
    }
}
