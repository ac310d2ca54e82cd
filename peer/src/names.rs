//! File names from the peer made safe to save under (docs/PROTOCOL.md,
//! "File names"). `sanitize_name` is shared with the web client
//! (`web/src/names.js`); v2 transfers apply it to every component of an
//! offered path (`crate::paths`).

/// Longest sanitised file name, in UTF-8 bytes.
pub const MAX_SANITIZED_BYTES: usize = 255;

fn replaced(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1F}'
        | '\u{7F}'..='\u{9F}'
        | '\u{61C}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2069}'
        | '\u{FEFF}'
        | '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*')
}

const RESERVED: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

fn reserved_stem(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or("");
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem))
}

/// True when `c` is one of the code points `sanitize_name` replaces.
pub fn is_replaced_char(c: char) -> bool {
    replaced(c)
}

/// True when the part of `name` before its first `.` is a Windows device
/// name (CON, PRN, AUX, NUL, COM1-9, LPT1-9; ASCII case-insensitive).
pub fn has_reserved_stem(name: &str) -> bool {
    reserved_stem(name)
}

/// A file name safe to save under on any common system (docs/PROTOCOL.md,
/// "File names"): never empty, at most 255 UTF-8 bytes, no path separator,
/// control, bidi or invisible character, not `.`/`..`, no Windows device
/// stem. Sanitising a sanitised name changes nothing.
pub fn sanitize_name(raw: &str) -> String {
    // 1. Replace.
    let s: String = raw
        .chars()
        .map(|c| if replaced(c) { '_' } else { c })
        .collect();
    // 2. Spaces at both ends, then trailing dots, then trailing spaces.
    let s = s
        .trim_matches(' ')
        .trim_end_matches('.')
        .trim_end_matches(' ');
    // 3. Nothing left, or a relative directory.
    let mut s = if s.is_empty() || s == "." || s == ".." {
        "file".to_owned()
    } else {
        s.to_owned()
    };
    // 4. Device names.
    if reserved_stem(&s) {
        s.insert(0, '_');
    }
    // 5. At most 255 bytes, cut at a char boundary; no trailing space or dot.
    let mut cut = s.len().min(MAX_SANITIZED_BYTES);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let s = s[..cut].trim_end_matches([' ', '.']);
    let mut s = if s.is_empty() {
        "file".to_owned()
    } else {
        s.to_owned()
    };
    // 6. The cut can expose a device name ("aux" + 300 spaces + "x" is
    //    "aux" after step 5): check again. It is then at most 4 bytes.
    if reserved_stem(&s) {
        s.insert(0, '_');
    }
    s
}
