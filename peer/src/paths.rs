//! Relative paths from the peer (the `path` of each file in an offer) made
//! safe to create under the folder the receiver chose, and made distinct
//! (docs/PROTOCOL.md, "Paths"). The same rules as the web client
//! (`web/src/paths.js`), checked against the shared vectors
//! `peer/vectors/paths-v1.json`. Pure; no input makes it panic.

use std::collections::{HashMap, HashSet};

use unicode_normalization::UnicodeNormalization;

use crate::names::{sanitize_name, MAX_SANITIZED_BYTES};

/// Most components a sanitised path keeps (the file name included).
pub const MAX_DEPTH: usize = 32;

/// A peer's path as safe components: split on `/` and `\`, empty and `.`
/// components dropped (so absolute, UNC and `./` forms become relative),
/// every other component through [`sanitize_name`] (so `..` is `file` and
/// `C:` is `C_`), at most [`MAX_DEPTH`] components (the directories beyond
/// the 31st are dropped, the file name kept). Never empty.
pub fn sanitize_path(raw: &str) -> Vec<String> {
    let mut parts: Vec<String> = raw
        .split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != ".")
        .map(sanitize_name)
        .collect();
    if parts.is_empty() {
        return vec!["file".to_owned()];
    }
    if parts.len() > MAX_DEPTH {
        let last = parts.pop().unwrap_or_default();
        parts.truncate(MAX_DEPTH - 1);
        parts.push(last);
    }
    parts
}

/// How two names compare on the file systems people use: Unicode NFC, then
/// lower case (NTFS, APFS and HFS+ ignore both differences). Equal to the
/// web client's `s.normalize('NFC').toLowerCase()`.
pub fn fold_name(s: &str) -> String {
    s.nfc().collect::<String>().to_lowercase()
}

/// `name` with ` (n)` before its extension, within 255 UTF-8 bytes: the
/// stem is cut (between code points, keeping at least one); an extension
/// alone over the limit numbers the whole name, cut to 200 code points and
/// to fit with its tag. Different `n` always give different names.
pub fn numbered(name: &str, n: u64) -> String {
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    };
    let tag = format!(" ({n})");
    let mut cut: Vec<char> = stem.chars().collect();
    let mut stem_bytes = stem.len();
    while cut.len() > 1 && stem_bytes + tag.len() + ext.len() > MAX_SANITIZED_BYTES {
        if let Some(c) = cut.pop() {
            stem_bytes -= c.len_utf8();
        }
    }
    let out: String = cut.into_iter().collect::<String>() + &tag + ext;
    if out.len() <= MAX_SANITIZED_BYTES {
        return out;
    }
    // An extension alone over the limit: number the whole name, cut to 200
    // code points and to 255 bytes with its tag. The web client cuts after
    // adding the tag, which can cut the tag off (a name of 200 two-byte
    // code points): every number then gives the same name, and its
    // PathAllocator loops for ever on the second file of that name. Here
    // the tag always stays, so the names differ and placing ends.
    let close = format!("({n})");
    let mut limit = MAX_SANITIZED_BYTES;
    loop {
        let mut head = String::new();
        for c in name.chars().take(200) {
            if head.len() + c.len_utf8() + tag.len() > limit {
                break;
            }
            head.push(c);
        }
        let out = sanitize_name(&(head.clone() + &tag));
        if out.ends_with(&close) || head.is_empty() {
            return out;
        }
        limit -= 1;
    }
}

/// Hands out distinct paths, in offer order (the web client's
/// `PathAllocator`): a file never lands on a path taken by an earlier file
/// or directory (case- and normalisation-insensitively, [`fold_name`]), and
/// no directory on an earlier file; the later one is renamed `name (2).ext`,
/// `name (3).ext`, ... (a directory component the same way, for that file
/// and the later ones that share it).
#[derive(Debug, Default)]
pub struct Allocator {
    /// Folded full paths of the files placed.
    files: HashSet<String>,
    /// Folded (chosen parent + offered name) -> chosen name.
    dirs: HashMap<String, String>,
    /// Folded full paths of the directories made.
    chosen: HashSet<String>,
    /// (exact parent, offered name) -> the number that was free last time.
    /// The sets only grow, so every smaller number is still taken: starting
    /// there gives the same answer as counting from 2, without the
    /// quadratic cost of an offer of many files with one name.
    next: HashMap<(String, String), u64>,
}

impl Allocator {
    pub fn new() -> Self {
        Self::default()
    }

    fn key(out: &[String], name: &str) -> String {
        let mut joined = out.join("/");
        if !out.is_empty() {
            joined.push('/');
        }
        joined.push_str(name);
        fold_name(&joined)
    }

    fn free(&self, out: &[String], name: &str) -> bool {
        let k = Self::key(out, name);
        !self.files.contains(&k) && !self.chosen.contains(&k)
    }

    /// The first of `base`, `numbered(base, 2)`, `numbered(base, 3)`, ...
    /// that is free under `out`.
    fn first_free(&mut self, out: &[String], base: &str) -> String {
        let memo = (out.join("/"), base.to_owned());
        let mut n = self.next.get(&memo).copied().unwrap_or(1);
        let mut name = if n == 1 {
            base.to_owned()
        } else {
            numbered(base, n)
        };
        while !self.free(out, &name) {
            n += 1;
            name = numbered(base, n);
        }
        self.next.insert(memo, n);
        name
    }

    /// Safe, distinct components for the next file of the offer.
    pub fn place(&mut self, raw: &str) -> Vec<String> {
        let mut parts = sanitize_path(raw);
        let last = parts.pop().unwrap_or_else(|| "file".to_owned());
        let mut out: Vec<String> = Vec::with_capacity(parts.len() + 1);
        for dir in parts {
            let offered = Self::key(&out, &dir);
            let name = match self.dirs.get(&offered) {
                Some(name) => name.clone(),
                None => {
                    let name = self.first_free(&out, &dir);
                    self.dirs.insert(offered, name.clone());
                    self.chosen.insert(Self::key(&out, &name));
                    name
                }
            };
            out.push(name);
        }
        let name = self.first_free(&out, &last);
        out.push(name);
        self.files.insert(fold_name(&out.join("/")));
        out
    }
}
