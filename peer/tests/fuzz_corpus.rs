//! The fuzz targets' entry points (peer/fuzz) over their committed seed
//! corpora, so the ordinary test run exercises them and their checks; the
//! fuzzer itself runs from scripts/test.sh.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", dir.display());
}

#[test]
fn session_messages_corpus_replays() {
    replay("session_messages", tallow_peer::fuzzing::session_messages);
}

#[test]
fn transfer_frames_corpus_replays() {
    replay("transfer_frames", tallow_peer::fuzzing::transfer_frames);
}
