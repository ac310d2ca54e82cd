//! The receiver's questions: take the offer (y/N), and what to do with a
//! file that exists already. On a terminal they are asked; with `--yes`
//! the offer is taken and an existing file is never overwritten: the
//! incoming one gets the first free name `name (2).ext`, `name (3).ext`, ...

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

/// An existing file in the way of an incoming one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    Overwrite,
    /// Save under the free name proposed.
    Rename,
    /// Receive it (the offer is taken whole) but do not keep it.
    Skip,
    /// Decline the whole offer.
    Abort,
}

pub trait Decide {
    /// Whether to take the offer (already shown to the user).
    fn accept(&mut self) -> bool;
    /// `existing` is in the way; `free` is the name it would get instead.
    fn conflict(&mut self, existing: &Path, free: &Path) -> Conflict;
}

/// `--yes`: take the offer, rename on every conflict.
pub struct Unattended;

impl Decide for Unattended {
    fn accept(&mut self) -> bool {
        true
    }
    fn conflict(&mut self, _: &Path, _: &Path) -> Conflict {
        Conflict::Rename
    }
}

/// Asks on the terminal: questions on stderr, answers from stdin.
pub struct Terminal;

impl Terminal {
    /// Only when stdin is a terminal: a script without `--yes` must not
    /// hang on a question nobody reads.
    pub fn new() -> Option<Self> {
        std::io::stdin().is_terminal().then_some(Terminal)
    }

    fn ask(question: &str) -> String {
        // A question waits for a person: off the async workers' backs.
        tokio::task::block_in_place(|| {
            eprint!("{question}");
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            match std::io::stdin().lock().read_line(&mut line) {
                Ok(0) | Err(_) => String::new(), // end of input: the default
                Ok(_) => line.trim().to_lowercase(),
            }
        })
    }
}

impl Decide for Terminal {
    fn accept(&mut self) -> bool {
        matches!(
            Self::ask("Accept and save these files? [y/N] ").as_str(),
            "y" | "yes"
        )
    }

    fn conflict(&mut self, existing: &Path, free: &Path) -> Conflict {
        let free_name = free
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for _ in 0..5 {
            let q = format!(
                "{} exists. [o]verwrite, [r]ename to \"{}\", [s]kip, [a]bort? [r] ",
                crate::output::neutral(&existing.display().to_string(), 200),
                crate::output::neutral(&free_name, 200)
            );
            match Self::ask(&q).as_str() {
                "o" | "overwrite" => return Conflict::Overwrite,
                "" | "r" | "rename" => return Conflict::Rename,
                "s" | "skip" => return Conflict::Skip,
                "a" | "abort" => return Conflict::Abort,
                _ => eprintln!("Answer o, r, s or a."),
            }
        }
        Conflict::Abort
    }
}
