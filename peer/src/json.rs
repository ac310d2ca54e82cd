//! JSON read the way the web client's `JSON.parse` reads it, so that the
//! transfer messages (`crate::control`) are accepted and refused exactly as
//! in JavaScript (docs/PROTOCOL.md, "Sealed messages"):
//!
//! - every number is an IEEE double, rounded as JavaScript rounds it (a
//!   number too large for a double is infinite, not an error; `-0` is a
//!   number like any other);
//! - a string may hold an unpaired surrogate escape (`"\ud800"`): it is
//!   kept as U+FFFD here, and the string is marked not well-formed;
//! - nesting has no limit: the parser keeps its own stack, and the values
//!   live in one flat list, so neither parsing nor dropping recurses;
//! - a repeated key: the last value counts.
//!
//! serde_json refuses the first two and stops at 128 levels, which would make
//! the Rust peer refuse messages the web client takes.

/// One value; containers refer to their members by index in [`Doc::nodes`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Num(f64),
    Str { s: String, well_formed: bool },
    Arr(Vec<usize>),
    Obj(Vec<(String, usize)>),
}

/// A parsed JSON text.
#[derive(Debug, Clone)]
pub(crate) struct Doc {
    pub nodes: Vec<Node>,
    pub root: usize,
}

enum Open {
    Arr(Vec<usize>),
    Obj(Vec<(String, usize)>, String),
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    nodes: Vec<Node>,
}

impl Doc {
    /// Parses `text` as `JSON.parse` would; `None` where it would throw.
    pub fn parse(text: &str) -> Option<Doc> {
        let mut p = Parser {
            s: text,
            b: text.as_bytes(),
            i: 0,
            nodes: Vec::new(),
        };
        let root = p.document()?;
        Some(Doc {
            nodes: p.nodes,
            root,
        })
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// The member `key` of the object at `i` (the last, if repeated); None
    /// if it has none or `i` is not an object (as for `value.key` on an
    /// array or a primitive in JavaScript, for the keys this crate reads).
    pub fn get(&self, i: usize, key: &str) -> Option<usize> {
        match &self.nodes[i] {
            Node::Obj(members) => members.iter().rev().find(|(k, _)| k == key).map(|m| m.1),
            _ => None,
        }
    }
}

impl Parser<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    fn push(&mut self, n: Node) -> usize {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    /// A key and its colon, after `{` or `,`.
    fn key(&mut self) -> Option<String> {
        self.ws();
        let (k, _) = self.string()?;
        self.ws();
        self.eat(b':')?;
        Some(k)
    }

    fn document(&mut self) -> Option<usize> {
        let mut stack: Vec<Open> = Vec::new();
        'value: loop {
            self.ws();
            let mut v = match self.peek()? {
                b'{' => {
                    self.i += 1;
                    self.ws();
                    if self.eat(b'}').is_some() {
                        self.push(Node::Obj(Vec::new()))
                    } else {
                        let k = self.key()?;
                        stack.push(Open::Obj(Vec::new(), k));
                        continue 'value;
                    }
                }
                b'[' => {
                    self.i += 1;
                    self.ws();
                    if self.eat(b']').is_some() {
                        self.push(Node::Arr(Vec::new()))
                    } else {
                        stack.push(Open::Arr(Vec::new()));
                        continue 'value;
                    }
                }
                b'"' => {
                    let (s, well_formed) = self.string()?;
                    self.push(Node::Str { s, well_formed })
                }
                b't' => self.literal("true", Node::Bool(true))?,
                b'f' => self.literal("false", Node::Bool(false))?,
                b'n' => self.literal("null", Node::Null)?,
                b'-' | b'0'..=b'9' => {
                    let n = self.number()?;
                    self.push(Node::Num(n))
                }
                _ => return None,
            };
            // A value is complete: hand it to its container, closing every
            // container that ends here.
            loop {
                self.ws();
                match stack.last_mut() {
                    None => {
                        return (self.i == self.b.len()).then_some(v);
                    }
                    Some(Open::Arr(items)) => {
                        items.push(v);
                        match self.peek()? {
                            b',' => {
                                self.i += 1;
                                continue 'value;
                            }
                            b']' => {
                                self.i += 1;
                                let Some(Open::Arr(items)) = stack.pop() else {
                                    return None;
                                };
                                v = self.push(Node::Arr(items));
                            }
                            _ => return None,
                        }
                    }
                    Some(Open::Obj(members, key)) => {
                        members.push((std::mem::take(key), v));
                        match self.peek()? {
                            b',' => {
                                self.i += 1;
                                let k = self.key()?;
                                if let Some(Open::Obj(_, key)) = stack.last_mut() {
                                    *key = k;
                                }
                                continue 'value;
                            }
                            b'}' => {
                                self.i += 1;
                                let Some(Open::Obj(members, _)) = stack.pop() else {
                                    return None;
                                };
                                v = self.push(Node::Obj(members));
                            }
                            _ => return None,
                        }
                    }
                }
            }
        }
    }

    fn literal(&mut self, word: &str, node: Node) -> Option<usize> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Some(self.push(node))
        } else {
            None
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, as the
    /// nearest double (infinite when too large, as in JavaScript).
    fn number(&mut self) -> Option<f64> {
        let start = self.i;
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        // ASCII by construction; Rust rounds to nearest and overflows to
        // infinity, as JavaScript does.
        std::str::from_utf8(&self.b[start..self.i])
            .ok()?
            .parse::<f64>()
            .ok()
    }

    fn hex4(&mut self) -> Option<u16> {
        let h = self.b.get(self.i..self.i + 4)?;
        let h = std::str::from_utf8(h).ok()?;
        if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u16::from_str_radix(h, 16).ok()
    }

    /// A string at `"`: its text (unpaired surrogates as U+FFFD) and
    /// whether it was well-formed.
    fn string(&mut self) -> Option<(String, bool)> {
        self.eat(b'"')?;
        let mut units: Vec<u16> = Vec::new();
        let mut buf = [0u16; 2];
        loop {
            let c = self.s.get(self.i..)?.chars().next()?;
            self.i += c.len_utf8();
            match c {
                '"' => break,
                '\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    let unit = match e {
                        b'"' => 0x22,
                        b'\\' => 0x5C,
                        b'/' => 0x2F,
                        b'b' => 0x08,
                        b'f' => 0x0C,
                        b'n' => 0x0A,
                        b'r' => 0x0D,
                        b't' => 0x09,
                        b'u' => self.hex4()?,
                        _ => return None,
                    };
                    units.push(unit);
                }
                '\u{0}'..='\u{1F}' => return None,
                c => units.extend_from_slice(c.encode_utf16(&mut buf)),
            }
        }
        match String::from_utf16(&units) {
            Ok(s) => Some((s, true)),
            Err(_) => Some((String::from_utf16_lossy(&units), false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(t: &str) -> bool {
        Doc::parse(t).is_some()
    }

    #[test]
    fn reads_like_json_parse() {
        for t in [
            "{}",
            "[]",
            " {\"a\" : [1, -0, 1e400, 5.0, \"x\\ud800\", true, false, null, {}]}\n",
            "1",
            "\"\\ud83d\\ude00\"",
            "[[[[[]]]]]",
        ] {
            assert!(ok(t), "{t}");
        }
        for t in [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "\"\\x\"",
            "\"a\tb\"",
            "[1] x",
            "\u{feff}{}",
            "{a:1}",
            "NaN",
            "\"\\u12\"",
        ] {
            assert!(!ok(t), "{t}");
        }
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(ok(&deep));
        assert!(!ok(&"[".repeat(100_000)));
        let d = Doc::parse(r#"{"a":1,"a":"\ud800x","n":1e400}"#).unwrap();
        let a = d.get(d.root, "a").unwrap();
        assert_eq!(
            d.node(a),
            &Node::Str {
                s: "\u{fffd}x".into(),
                well_formed: false
            }
        );
        let n = d.get(d.root, "n").unwrap();
        assert_eq!(d.node(n), &Node::Num(f64::INFINITY));
    }
}
