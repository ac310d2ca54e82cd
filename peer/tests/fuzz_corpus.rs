//! The fuzz targets' entry points (fuzz/) over their committed seed
//! corpora, so the ordinary test run exercises them and their checks; the
//! fuzzer itself runs from scripts/test.sh.

use std::path::Path;

/// Runs every `step`-th seed (in name order) through `run`.
fn replay(target: &str, step: usize, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no seeds in {}", dir.display());
    for path in paths.iter().step_by(step) {
        run(&std::fs::read(path).unwrap());
    }
}

#[test]
fn session_messages_corpus_replays() {
    // Each seed runs several handshakes, slow in an unoptimised test build:
    // one seed in eight here; the fuzz step of scripts/test.sh runs them all.
    replay(
        "session_messages",
        8,
        tallow_peer::fuzzing::session_messages,
    );
}

#[test]
fn transfer_messages_corpus_replays() {
    replay(
        "transfer_messages",
        1,
        tallow_peer::fuzzing::transfer_messages,
    );
}
