//! Verification words: one pronounceable syllable-word per byte. The list is
//! generated, not stored, so the Rust and JavaScript sides cannot drift:
//! word(i) = ONSET[i >> 4] + VOWEL[(i >> 2) & 3] + CODA[i & 3].

const ONSET: [&str; 16] = [
    "b", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
];
const VOWEL: [&str; 4] = ["a", "e", "i", "o"];
const CODA: [&str; 4] = ["l", "n", "r", "s"];

pub fn word(byte: u8) -> String {
    let i = byte as usize;
    format!("{}{}{}", ONSET[i >> 4], VOWEL[(i >> 2) & 3], CODA[i & 3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_256_words_are_distinct() {
        let words: std::collections::HashSet<String> = (0..=255u8).map(word).collect();
        assert_eq!(words.len(), 256);
        assert_eq!(word(0), "bal");
        assert_eq!(word(255), "zos");
    }
}
