//! Static files: the bundled ones (embedded at compile time) that
//! `collectstatic` writes into the static root, and serving files under
//! `/static/`: from that root, and the bundled ones also when the root lacks
//! them. So every replica serves them on every node without a volume filled
//! by a job on one node (the PostgreSQL stack has neither), and a collected
//! root (the single-node stack, `release`) still wins for its own files.

use std::fs;
use std::path::{Path, PathBuf};

/// The files shipped with the binary, as (name, contents).
pub const BUNDLED: &[(&str, &str)] =
    &[("index.html", include_str!("../../static/index.html")), ("style.css", include_str!("../../static/style.css"))];

/// What `collect` did with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Copied,
    Unchanged,
}

/// Writes the bundled files into `root` (created if missing). Files whose
/// contents are already right are left alone, so running it again is a
/// no-op. Each file is written to a temporary name and renamed into place,
/// so a server reading it never sees half a file.
pub fn collect(root: &Path) -> Result<Vec<(&'static str, Outcome)>, String> {
    fs::create_dir_all(root).map_err(|e| format!("cannot create static root {}: {e}", root.display()))?;
    let mut done = Vec::with_capacity(BUNDLED.len());
    for (name, contents) in BUNDLED {
        let target = root.join(name);
        if fs::read(&target).is_ok_and(|existing| existing == contents.as_bytes()) {
            done.push((*name, Outcome::Unchanged));
            continue;
        }
        let tmp = root.join(format!(".{name}.tmp"));
        fs::write(&tmp, contents)
            .and_then(|()| fs::rename(&tmp, &target))
            .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
        done.push((*name, Outcome::Copied));
    }
    Ok(done)
}

/// Maps a URL path below `/static/` to a file below `root`, refusing
/// anything that could leave it (`..`, absolute paths, hidden files,
/// unusual characters).
pub fn safe_path(root: &Path, url_path: &str) -> Option<PathBuf> {
    let mut path = root.to_path_buf();
    let mut any = false;
    for segment in url_path.split('/') {
        let ok = !segment.is_empty()
            && !segment.starts_with('.')
            && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return None;
        }
        path.push(segment);
        any = true;
    }
    any.then_some(path)
}

/// Content type by file extension; unknown types are served as bytes.
pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// Reads a file for `/static/<url_path>`: its content type and bytes, or
/// `None` when there is no such (regular) file below the root and none
/// bundled by that name.
pub fn read(root: &Path, url_path: &str) -> Option<(&'static str, Vec<u8>)> {
    let path = safe_path(root, url_path)?;
    if path.is_file() {
        let data = fs::read(&path).ok()?;
        return Some((content_type(&path), data));
    }
    let (name, contents) = BUNDLED.iter().find(|(name, _)| *name == url_path)?;
    Some((content_type(Path::new(name)), contents.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_path_rejects_escapes() {
        let root = Path::new("/public");
        assert_eq!(safe_path(root, "style.css"), Some(PathBuf::from("/public/style.css")));
        assert_eq!(safe_path(root, "img/a.png"), Some(PathBuf::from("/public/img/a.png")));
        for bad in ["", "../etc/passwd", "a/../../b", ".hidden", "a//b", "/abs", "a%2e", "a\\b"] {
            assert_eq!(safe_path(root, bad), None, "{bad}");
        }
    }

    #[test]
    fn bundled_files_are_served_without_a_collected_root_and_a_collected_file_wins() {
        let missing = Path::new("/nonexistent-static-root");
        let (kind, data) = read(missing, "style.css").unwrap();
        assert_eq!((kind, data.as_slice()), ("text/css; charset=utf-8", BUNDLED[1].1.as_bytes()));
        assert_eq!(read(missing, "nope.css"), None);
        assert_eq!(read(missing, "../style.css"), None);
        let root = std::env::temp_dir().join(format!("static-files-test-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("style.css"), "body{}").unwrap();
        assert_eq!(read(&root, "style.css").unwrap().1, b"body{}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type(Path::new("a.css")), "text/css; charset=utf-8");
        assert_eq!(content_type(Path::new("index.html")), "text/html; charset=utf-8");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }

    #[test]
    fn bundled_files_are_the_ones_in_static_dir() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
        let mut on_disk: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        on_disk.sort();
        let bundled: Vec<&str> = BUNDLED.iter().map(|(n, _)| *n).collect();
        assert_eq!(on_disk, bundled);
    }
}
