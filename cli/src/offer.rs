//! `tallow send PATH...`: the files to offer, found before anything is
//! offered. Offered paths are formed as the web client forms them for a
//! dropped folder (`web/src/view.js`, `fromDrop`): a file given alone is
//! offered under its name, a folder's files under `folder/sub/name` with
//! `/` between components. Only files are offered (an empty folder is not,
//! as in the web client).

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use tallow_peer::control::OfferedFile;

/// Most files in one offer (docs/PROTOCOL.md, "Messages": `count`).
pub const MAX_FILES: usize = 100_000;

/// A file to send: where it is on disk and how it is offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub disk: PathBuf,
    pub offered: String,
    pub size: u64,
}

impl Source {
    pub fn offered_file(&self) -> OfferedFile {
        OfferedFile {
            path: self.offered.clone(),
            size: self.size,
        }
    }
}

/// Why the paths given cannot be offered; every problem found is listed.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    #[error("nothing to send: {0}")]
    Nothing(String),
    #[error("cannot send these paths:\n{}", .0.join("\n"))]
    Refused(Vec<String>),
    #[error("too many files ({0}); at most {MAX_FILES} in one transfer")]
    TooMany(usize),
}

/// Walks `paths` into the files to offer, in a stable order (each folder's
/// entries sorted by name). Refused, all reported at once: a path that does
/// not exist, a file that cannot be opened for reading, anything that is
/// not a regular file or folder (devices, sockets, FIFOs), and, inside a
/// folder, a symbolic link that leads out of that folder or to a folder
/// (which could loop). A link named on the command line is followed: the
/// user asked for it.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<Source>, OfferError> {
    if paths.is_empty() {
        return Err(OfferError::Nothing("no path given".into()));
    }
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for p in paths {
        let meta = match fs::metadata(p) {
            Ok(m) => m,
            Err(e) => {
                bad.push(format!("{}: {e}", p.display()));
                continue;
            }
        };
        if meta.is_dir() {
            let root = match fs::canonicalize(p) {
                Ok(r) => r,
                Err(e) => {
                    bad.push(format!("{}: {e}", p.display()));
                    continue;
                }
            };
            // "." and ".." have no name of their own: the folder's real one.
            let name = root
                .file_name()
                .map(|n| format!("{}/", n.to_string_lossy()))
                .unwrap_or_default();
            walk(&root, p, &name, &mut out, &mut bad, MAX_FILES + 1);
        } else {
            let name = offered_name(p);
            add_file(p, &meta, name, &mut out, &mut bad);
        }
        if out.len() > MAX_FILES {
            return Err(OfferError::TooMany(out.len()));
        }
    }
    if !bad.is_empty() {
        return Err(OfferError::Refused(bad));
    }
    if out.is_empty() {
        return Err(OfferError::Nothing(
            "the folders given hold no files".into(),
        ));
    }
    Ok(out)
}

fn offered_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_owned())
        .or_else(|| fs::canonicalize(p).ok()?.file_name().map(|n| n.to_owned()))
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into())
}

fn add_file(
    disk: &Path,
    meta: &fs::Metadata,
    offered: String,
    out: &mut Vec<Source>,
    bad: &mut Vec<String>,
) {
    if !meta.is_file() {
        bad.push(format!("{}: not a regular file or folder", disk.display()));
        return;
    }
    // Opened now so an unreadable file is refused before the offer.
    let mut f = match File::open(disk) {
        Ok(f) => f,
        Err(e) => {
            bad.push(format!("{}: {e}", disk.display()));
            return;
        }
    };
    // /proc and /sys files say 0 bytes and read more: offered as empty
    // they would arrive empty and "verified".
    if meta.len() == 0 {
        use std::io::Read;
        let mut probe = [0u8; 1];
        if matches!(f.read(&mut probe), Ok(n) if n > 0) {
            bad.push(format!(
                "{}: reads more than its size (0 bytes), as /proc and /sys files do; copy it to a regular file first",
                disk.display()
            ));
            return;
        }
    }
    out.push(Source {
        disk: disk.to_owned(),
        offered,
        size: meta.len(),
    });
}

/// One folder: `root` its canonical path (for the symlink check), `dir`
/// the folder as reached, `prefix` the offered path of its entries.
fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<Source>,
    bad: &mut Vec<String>,
    limit: usize,
) {
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            bad.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    let mut entries: Vec<_> = match entries.collect::<Result<Vec<_>, _>>() {
        Ok(v) => v,
        Err(e) => {
            bad.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if out.len() >= limit {
            return;
        }
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let offered = format!("{prefix}{name}");
        let lmeta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(err) => {
                bad.push(format!("{}: {err}", path.display()));
                continue;
            }
        };
        if lmeta.file_type().is_symlink() {
            let target = fs::canonicalize(&path);
            match (target, fs::metadata(&path)) {
                (Ok(t), Ok(m)) if m.is_file() && t.starts_with(root) => {
                    add_file(&path, &m, offered, out, bad);
                }
                (Ok(_), Ok(m)) if m.is_dir() => bad.push(format!(
                    "{}: a symbolic link to a folder (not followed; name the folder itself)",
                    path.display()
                )),
                (Ok(t), Ok(_)) => bad.push(format!(
                    "{}: a symbolic link out of the folder being sent (to {}); name its target itself",
                    path.display(),
                    t.display()
                )),
                _ => bad.push(format!("{}: a broken symbolic link", path.display())),
            }
        } else if lmeta.is_dir() {
            walk(root, &path, &format!("{offered}/"), out, bad, limit);
        } else {
            add_file(&path, &lmeta, offered, out, bad);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tallow-offer-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn folders_are_offered_as_the_web_client_offers_a_dropped_folder() {
        let d = tmp("walk");
        fs::create_dir_all(d.join("top/a/b")).unwrap();
        fs::create_dir_all(d.join("top/empty")).unwrap();
        fs::write(d.join("top/a/b/deep.txt"), b"deep").unwrap();
        fs::write(d.join("top/a/zero"), b"").unwrap();
        fs::write(d.join("top/first.txt"), b"1").unwrap();
        fs::write(d.join("alone.bin"), b"xyz").unwrap();
        let got = collect(&[d.join("top"), d.join("alone.bin")]).unwrap();
        let paths: Vec<_> = got.iter().map(|s| (s.offered.as_str(), s.size)).collect();
        assert_eq!(
            paths,
            [
                ("top/a/b/deep.txt", 4),
                ("top/a/zero", 0),
                ("top/first.txt", 1),
                ("alone.bin", 3)
            ]
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn links_out_of_the_folder_and_missing_paths_are_refused_before_the_offer() {
        let d = tmp("links");
        fs::create_dir_all(d.join("top/sub")).unwrap();
        fs::write(d.join("outside.txt"), b"secret").unwrap();
        fs::write(d.join("top/in.txt"), b"in").unwrap();
        std::os::unix::fs::symlink(d.join("outside.txt"), d.join("top/out-link")).unwrap();
        std::os::unix::fs::symlink(d.join("top/in.txt"), d.join("top/in-link")).unwrap();
        std::os::unix::fs::symlink(d.join("top/sub"), d.join("top/dir-link")).unwrap();
        let err = collect(&[d.join("top"), d.join("missing")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("out-link"), "{text}");
        assert!(text.contains("dir-link"), "{text}");
        assert!(text.contains("missing"), "{text}");
        assert!(!text.contains("in-link"), "{text}");
        fs::remove_file(d.join("top/out-link")).unwrap();
        fs::remove_file(d.join("top/dir-link")).unwrap();
        let got = collect(&[d.join("top")]).unwrap();
        let paths: Vec<_> = got.iter().map(|s| s.offered.as_str()).collect();
        assert_eq!(paths, ["top/in-link", "top/in.txt"]);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn special_files_are_refused() {
        let err = collect(&[PathBuf::from("/dev/null")]).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn empty_input_is_refused() {
        let d = tmp("empty");
        fs::create_dir_all(d.join("nothing/inside")).unwrap();
        assert!(matches!(collect(&[]), Err(OfferError::Nothing(_))));
        assert!(matches!(
            collect(&[d.join("nothing")]),
            Err(OfferError::Nothing(_))
        ));
        let _ = fs::remove_dir_all(&d);
    }
}
