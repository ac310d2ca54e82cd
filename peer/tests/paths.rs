//! Offered paths made safe and distinct (peer/src/paths.rs), against the
//! vectors the web client checks too (peer/vectors/paths-v1.json), and the
//! cases of web/test/paths.test.js.

use serde_json::Value;
use tallow_peer::paths::{numbered, sanitize_path, Allocator, MAX_DEPTH};

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/paths-v1.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn place_all(paths: &[&str]) -> Vec<String> {
    let mut a = Allocator::new();
    paths.iter().map(|p| a.place(p).join("/")).collect()
}

#[test]
fn the_shared_vectors() {
    let v = vectors();
    for case in v["sanitize"].as_array().unwrap() {
        let raw = case["raw"].as_str().unwrap();
        assert_eq!(sanitize_path(raw), strings(&case["parts"]), "{raw:?}");
    }
    for case in v["offers"].as_array().unwrap() {
        let paths = strings(&case["paths"]);
        let mut a = Allocator::new();
        let placed: Vec<String> = paths.iter().map(|p| a.place(p).join("/")).collect();
        assert_eq!(placed, strings(&case["placed"]), "{paths:?}");
    }
}

#[test]
fn hostile_paths_become_relative_safe_components() {
    assert_eq!(
        sanitize_path("../../etc/passwd"),
        ["file", "file", "etc", "passwd"]
    );
    assert_eq!(sanitize_path("/etc/shadow"), ["etc", "shadow"]);
    assert_eq!(
        sanitize_path("C:\\Windows\\system32\\x.dll"),
        ["C_", "Windows", "system32", "x.dll"]
    );
    assert_eq!(
        sanitize_path("\\\\server\\share\\f"),
        ["server", "share", "f"]
    );
    assert_eq!(sanitize_path("./a//b/./c"), ["a", "b", "c"]);
    assert_eq!(sanitize_path("dir/CON.txt"), ["dir", "_CON.txt"]);
    assert_eq!(
        sanitize_path("a\u{0}b/\u{202E}gpj.exe"),
        ["a_b", "_gpj.exe"]
    );
    assert_eq!(sanitize_path(""), ["file"]);
    assert_eq!(sanitize_path("///"), ["file"]);
    let deep = (0..50)
        .map(|i| format!("d{i}"))
        .collect::<Vec<_>>()
        .join("/")
        + "/leaf";
    let p = sanitize_path(&deep);
    assert_eq!(p.len(), MAX_DEPTH);
    assert_eq!(p[MAX_DEPTH - 2], "d30");
    assert_eq!(p[MAX_DEPTH - 1], "leaf");
    for c in sanitize_path(&format!("{}/x", "é".repeat(300))) {
        assert!(c.len() <= 255);
    }
}

#[test]
fn duplicates_are_renamed_case_and_normalisation_insensitively() {
    let placed = place_all(&[
        "a.txt",
        "A.TXT",
        "a.txt",
        "dir/x",
        "DIR/x",
        "e\u{301}.txt",
        "\u{e9}.txt",
        "f",
        "f/inner",
        "g/h",
        "g",
        "a (2).txt",
        ".env",
        ".env",
    ]);
    assert_eq!(
        placed,
        [
            "a.txt",
            "A (2).TXT",
            "a (3).txt",
            "dir/x",
            "dir/x (2)",
            "e\u{301}.txt",
            "\u{e9} (2).txt",
            "f",
            "f (2)/inner",
            "g/h",
            "g (2)",
            "a (2) (2).txt",
            ".env",
            ".env (2)",
        ]
    );
}

#[test]
fn a_renamed_folder_is_not_merged_with_one_the_peer_named_like_it() {
    assert_eq!(
        place_all(&["a", "a/x", "a (2)/y", "a/z"]),
        ["a", "a (2)/x", "a (2) (2)/y", "a (2)/z"]
    );
}

#[test]
fn numbering_stays_within_255_bytes() {
    let long = format!("{}.tar.gz", "x".repeat(250));
    let n = numbered(&long, 12);
    assert!(n.len() <= 255, "{n}");
    assert!(n.ends_with(" (12).gz"), "{n}");
    let ext = format!("a.{}", "y".repeat(254));
    assert!(numbered(&ext, 3).len() <= 255);
    assert_eq!(numbered("a.txt", 2), "a (2).txt");
    assert_eq!(numbered(".env", 2), ".env (2)");
    assert_eq!(numbered("noext", 10), "noext (10)");
}

#[test]
fn many_files_of_one_name_are_placed_quickly_and_distinctly() {
    // The memo of the next free number keeps this linear; the answer is the
    // one counting from 2 gives.
    let mut a = Allocator::new();
    let mut seen = std::collections::HashSet::new();
    for i in 0..20_000u64 {
        let p = a.place("same.txt").join("/");
        if i == 0 {
            assert_eq!(p, "same.txt");
        } else {
            assert_eq!(p, format!("same ({}).txt", i + 1));
        }
        assert!(seen.insert(p));
    }
    // A later file named like a numbered one is numbered again.
    assert_eq!(a.place("SAME (2).txt").join("/"), "SAME (2) (2).txt");
}

#[test]
fn a_name_whose_extension_fills_255_bytes_is_still_numbered_distinctly() {
    // "a." and 126 two-byte code points: the stem cannot shrink enough, so
    // the whole name is numbered. The web client's numbered() cuts the tag
    // off here (every n gives the same name) and its PathAllocator never
    // returns; the Rust one keeps the tag.
    for name in [
        format!("a.{}", "\u{e9}".repeat(126)),
        format!("a.{}", "\u{1F600}".repeat(63)),
        format!("aux.{}", "\u{e9}".repeat(125)),
        format!("x.{}", "y".repeat(253)),
    ] {
        assert!(name.len() <= 255);
        let mut seen = std::collections::HashSet::new();
        for n in 2..40 {
            let out = numbered(&name, n);
            assert!(out.len() <= 255, "{out}");
            assert!(out.ends_with(&format!("({n})")), "{out}");
            assert!(seen.insert(out));
        }
        let placed = place_all(&[&name, &name, &name]);
        assert_eq!(placed.len(), 3);
        assert!(placed[1] != placed[0] && placed[2] != placed[1]);
    }
}
