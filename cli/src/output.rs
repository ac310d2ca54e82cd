//! What `tallow` tells its user: human lines (stdout for the code and each
//! file's SHA-256, stderr for the rest, progress bars only when stderr is a
//! terminal), `--quiet` (only the code and errors), or `--json` (one JSON
//! object per line on stdout, described in README "Command-line peer").
//! Peer-supplied text is shown only neutralised ([`neutral`]).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

/// How often `--json` reports progress at most.
const JSON_PROGRESS_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Human,
    Quiet,
    Json,
}

/// Peer- or server-supplied text made safe to print, as the web client's
/// `neutral` (`web/src/names.js`): controls, bidirectional and invisible
/// marks, line and paragraph separators replaced with `_`, at most `max`
/// code points. A terminal must not be steered by a name the peer chose.
pub fn neutral(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| {
            if matches!(c,
                '\u{0}'..='\u{1F}'
                | '\u{7F}'..='\u{9F}'
                | '\u{61C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{2028}' | '\u{2029}'
                | '\u{FEFF}')
            {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Byte counts as people read them (binary units, as the progress bars).
pub fn bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    /// The bar of the file in progress.
    file: Option<(u32, ProgressBar)>,
}

/// One transfer's reporting. Files are numbered as in the offer.
pub struct Output {
    mode: Mode,
    /// Each file's path as shown, and its size.
    files: Vec<(String, u64)>,
    total: u64,
    bars: Option<Bars>,
    last_json: Option<Instant>,
    started: Option<Instant>,
    verb: &'static str,
}

impl Output {
    pub fn new(mode: Mode) -> Self {
        Output {
            mode,
            files: Vec::new(),
            total: 0,
            bars: None,
            last_json: None,
            started: None,
            verb: "",
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn json(&self, v: Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }

    /// A line for a person on stderr (not with `--quiet` or `--json`),
    /// above the progress bars if they are drawn.
    pub fn say(&self, line: &str) {
        if self.mode != Mode::Human {
            return;
        }
        match &self.bars {
            Some(b) => {
                let _ = b.multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    /// The share code (and its link): always printed, the user needs it.
    pub fn code(&self, code: &str, link: &str) {
        match self.mode {
            Mode::Json => self.json(json!({"event": "code", "code": code, "link": link})),
            _ => {
                println!("code: {code}");
                let _ = std::io::stdout().flush();
                self.say(&format!("On the other side: tallow receive {code}"));
                self.say(&format!("or open {link}"));
            }
        }
    }

    pub fn words(&self, words: &[String]) {
        match self.mode {
            Mode::Json => self.json(json!({"event": "words", "words": words})),
            _ => self.say(&format!(
                "verification words: {} (check that your peer sees the same)",
                words.join(" ")
            )),
        }
    }

    /// The selected candidate pair (the NAT tests read the human line).
    pub fn path(&self, path: &str) {
        match self.mode {
            Mode::Json => self.json(json!({"event": "path", "path": path})),
            _ => self.say(&format!("path: {path}")),
        }
    }

    /// The offer, sent or received: `files` as shown (already neutralised).
    pub fn offer(&mut self, files: Vec<(String, u64)>, sending: bool) {
        self.total = files.iter().map(|f| f.1).sum();
        self.files = files;
        self.verb = if sending { "sent" } else { "received" };
        match self.mode {
            Mode::Json => {
                let list: Vec<Value> = self
                    .files
                    .iter()
                    .map(|(p, s)| json!({"path": p, "size": s}))
                    .collect();
                self.json(
                    json!({"event": "offer", "direction": if sending {"send"} else {"receive"},
                    "count": self.files.len(), "total": self.total, "files": list}),
                );
            }
            Mode::Quiet => {}
            Mode::Human => {
                let n = self.files.len();
                let head = if sending {
                    format!(
                        "Offering {n} file{} ({}); waiting for your peer to accept",
                        if n == 1 { "" } else { "s" },
                        bytes(self.total)
                    )
                } else {
                    format!(
                        "Your peer offers {n} file{} ({}):",
                        if n == 1 { "" } else { "s" },
                        bytes(self.total)
                    )
                };
                eprintln!("{head}");
                if !sending {
                    const SHOWN: usize = 20;
                    for (p, s) in self.files.iter().take(SHOWN) {
                        eprintln!("  {p} ({})", bytes(*s));
                    }
                    if n > SHOWN {
                        eprintln!("  ... and {} more", n - SHOWN);
                    }
                }
            }
        }
    }

    /// The transfer starts (accepted): progress from here.
    pub fn started(&mut self) {
        self.started = Some(Instant::now());
        match self.mode {
            Mode::Json => self.json(json!({"event": "accepted"})),
            Mode::Quiet => {}
            Mode::Human => {
                if !std::io::stderr().is_terminal() {
                    eprintln!(
                        "Accepted; {} ...",
                        if self.verb == "sent" {
                            "sending"
                        } else {
                            "receiving"
                        }
                    );
                    return;
                }
                let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
                let total = multi.add(ProgressBar::new(self.total).with_style(style("total")));
                self.bars = Some(Bars {
                    multi,
                    total,
                    file: None,
                });
            }
        }
    }

    /// `file` has `file_done` of its bytes; `done` of all.
    pub fn progress(&mut self, file: u32, file_done: u64, done: u64) {
        match self.mode {
            Mode::Json => {
                let now = Instant::now();
                if self
                    .last_json
                    .is_some_and(|t| now.duration_since(t) < JSON_PROGRESS_EVERY)
                {
                    return;
                }
                self.last_json = Some(now);
                let secs = self
                    .started
                    .map_or(0.0, |s| now.duration_since(s).as_secs_f64());
                let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
                self.json(
                    json!({"event": "progress", "file": file, "file_done": file_done,
                    "file_size": self.files.get(file as usize).map_or(0, |f| f.1),
                    "done": done, "total": self.total, "bytes_per_sec": rate.round() as u64}),
                );
            }
            Mode::Quiet => {}
            Mode::Human => {
                let Some(b) = self.bars.as_mut() else {
                    return;
                };
                b.total.set_position(done);
                if b.file.as_ref().is_none_or(|(f, _)| *f != file) {
                    if let Some((_, old)) = b.file.take() {
                        old.finish_and_clear();
                    }
                    let (name, size) = self.files.get(file as usize).cloned().unwrap_or_default();
                    let bar = b.multi.insert_before(
                        &b.total,
                        ProgressBar::new(size).with_style(style(&neutral(&name, 40))),
                    );
                    b.file = Some((file, bar));
                }
                if let Some((_, bar)) = &b.file {
                    bar.set_position(file_done);
                }
            }
        }
    }

    /// A file verified end to end (and, receiving, placed at `path`).
    pub fn file_done(&mut self, file: u32, path: &str, sha256: &str) {
        match self.mode {
            Mode::Json => {
                let size = self.files.get(file as usize).map_or(0, |f| f.1);
                self.json(json!({"event": "file", "file": file, "path": path, "size": size, "sha256": sha256}));
            }
            Mode::Quiet => {}
            Mode::Human => {
                if let Some(b) = self.bars.as_mut() {
                    if b.file.as_ref().is_some_and(|(f, _)| *f == file) {
                        if let Some((_, bar)) = b.file.take() {
                            bar.finish_and_clear();
                        }
                    }
                }
                let line = format!("{} {path} sha256 {sha256}", self.verb);
                match &self.bars {
                    // Above the bars, and on stdout all the same for scripts.
                    Some(b) => b.multi.suspend(|| println!("{line}")),
                    None => println!("{line}"),
                }
            }
        }
    }

    /// Something happened that is worth a line (a reconnect, a rename).
    pub fn note(&self, what: &str, line: &str) {
        match self.mode {
            Mode::Json => self.json(json!({"event": what, "message": line})),
            _ => self.say(line),
        }
    }

    fn clear_bars(&mut self) {
        if let Some(b) = self.bars.take() {
            if let Some((_, bar)) = b.file {
                bar.finish_and_clear();
            }
            b.total.finish_and_clear();
            let _ = b.multi.clear();
        }
    }

    pub fn done(&mut self, files: usize, bytes_moved: u64) {
        self.clear_bars();
        match self.mode {
            Mode::Json => {
                self.json(json!({"event": "done", "files": files, "bytes": bytes_moved, "exit": 0}))
            }
            Mode::Quiet => {}
            Mode::Human => {
                let secs = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
                let rate = if secs > 0.0 {
                    format!(", {}/s", bytes((bytes_moved as f64 / secs) as u64))
                } else {
                    String::new()
                };
                eprintln!(
                    "Done: {files} file{} ({}) {}, verified{rate}",
                    if files == 1 { "" } else { "s" },
                    bytes(bytes_moved),
                    self.verb
                );
            }
        }
    }

    /// The error that ends the run, with its exit code.
    /// The message may carry a peer's or the server's words (a cancel
    /// reason, a refusal): shown only neutralised, in JSON too.
    pub fn error(&mut self, message: &str, exit: u8) {
        self.clear_bars();
        let message = &message
            .split('\n')
            .map(|line| neutral(line, 2000))
            .collect::<Vec<_>>()
            .join("\n");
        match self.mode {
            Mode::Json => self.json(json!({"event": "error", "message": message, "exit": exit})),
            _ => eprintln!("tallow: {message}"),
        }
    }
}

fn style(name: &str) -> ProgressStyle {
    let template = format!(
        "{{prefix}}{} [{{bar:30}}] {{binary_bytes}}/{{binary_total_bytes}} {{binary_bytes_per_sec}} {{eta}} left",
        name.replace(['{', '}'], "_")
    );
    ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutral_takes_out_what_steers_a_terminal() {
        assert_eq!(neutral("a\u{1b}[2Jb", 256), "a_[2Jb");
        assert_eq!(neutral("evil\u{202e}txt.exe", 256), "evil_txt.exe");
        assert_eq!(neutral("line\u{2028}break\n", 256), "line_break_");
        assert_eq!(neutral("ünïcödé ok", 256), "ünïcödé ok");
        assert_eq!(neutral("abcdef", 3), "abc");
    }
}
