//! The quick half of `version`'s dirty check: proving a checkout clean from
//! the index's stat data, the way `git diff-files` and libgit2's own status
//! decide before they hash anything.
//!
//! libgit2's status lists every directory of the work tree, reads each
//! .gitignore and .gitattributes, re-reads the index and diffs HEAD's trees:
//! that was most of `version`'s time (docs/src/performance.md). Here a clean
//! checkout costs one read of the index file and one lstat per tracked file
//! and directory. The answer is "proven clean" or "not proven", never
//! "dirty": whatever this cannot prove goes to the full status, so the
//! verdict is always libgit2's.

use std::fs;
use std::io::Read;
use std::path::Path;

use git2::{Commit, DiffOptions, Repository};

/// Bytes of a SHA-1 object id, as the index stores them.
const OID: usize = 20;

/// True when the index matches HEAD's tree and every tracked file's stat data
/// matches the index, by the rule libgit2's status applies before it would
/// hash a file (`maybe_modified` in its diff_generate.c): same mode, size,
/// mtime, inode and owner, and not racily clean; ctime is compared too.
/// Conflicts, index flags (assume-unchanged, skip-worktree, intent-to-add),
/// submodules, split or sparse indexes and any stat difference (a touched
/// file, a mode change, a deleted file) are "not proven".
pub fn proven_clean(repo: &Repository, head: &Commit) -> bool {
    let Some(workdir) = repo.workdir() else { return false };
    // Another index file (GIT_INDEX_FILE) or object format: the full status.
    if std::env::var_os("GIT_INDEX_FILE").is_some() || head.tree_id().as_bytes().len() != OID {
        return false;
    }
    let Ok(mut file) = fs::File::open(repo.path().join("index")) else { return false };
    // The stamp of the very file read: entries not older than it are racy.
    let Some(index_mtime) = file.metadata().ok().and_then(|meta| stat_time(&meta, false)) else { return false };
    let mut data = Vec::new();
    if file.read_to_end(&mut data).is_err() {
        return false;
    }
    let Some(index) = parse(&data) else { return false };
    if !work_tree_matches(workdir, &index.entries, index_mtime) {
        return false;
    }
    // A valid cache tree for the root is the tree the index would write: the
    // same id as HEAD's tree means nothing is staged, without reading a tree.
    if index.root_tree.as_ref().map(|id| &id[..]) == Some(head.tree_id().as_bytes()) {
        return true;
    }
    // Else libgit2 compares, with the flags of the status's own HEAD-to-index
    // half; an error here is the full status's to report.
    let (Ok(tree), Ok(libgit2_index)) = (head.tree(), repo.index()) else { return false };
    let mut options = DiffOptions::new();
    options.include_typechange(true).ignore_submodules(true);
    repo.diff_tree_to_index(Some(&tree), Some(&libgit2_index), Some(&mut options))
        .is_ok_and(|staged| staged.deltas().len() == 0)
}

/// One index entry, its numbers as the index stores them (32 bits).
#[derive(Debug, PartialEq)]
struct Entry<'a> {
    ctime: (u32, u32),
    mtime: (u32, u32),
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u32,
    flags: u16,
    flags_extended: u16,
    path: &'a [u8],
}

#[derive(Debug)]
struct Index<'a> {
    entries: Vec<Entry<'a>>,
    /// The root's tree id from the cache tree (TREE extension), when valid.
    root_tree: Option<[u8; OID]>,
}

/// An index file in format 2 or 3 (git's default; format 4 compresses paths
/// and is left to libgit2). The trailing checksum is not verified, as git
/// does not by default either. None when anything is not understood.
fn parse(data: &[u8]) -> Option<Index<'_>> {
    if data.len() < 12 + OID || &data[..4] != b"DIRC" {
        return None;
    }
    let version = be32(data, 4)?;
    if version != 2 && version != 3 {
        return None;
    }
    let count = be32(data, 8)? as usize;
    let end = data.len() - OID;
    let mut at = 12;
    let mut entries = Vec::with_capacity(count.min(end / 62));
    for _ in 0..count {
        // This runs unoptimised in a debug build, once per tracked file: plain
        // indexing into the fixed part of the entry, no per-byte search.
        let fixed = data.get(at..at + 62)?;
        let field = |i: usize| u32::from_be_bytes([fixed[4 * i], fixed[4 * i + 1], fixed[4 * i + 2], fixed[4 * i + 3]]);
        let flags = u16::from_be_bytes([fixed[60], fixed[61]]);
        let extended = flags & 0x4000 != 0;
        if extended && version < 3 {
            return None;
        }
        let path_at = at + if extended { 64 } else { 62 };
        // The flags hold the path's length up to 0xFFE; 0xFFF means longer.
        let path_len = match usize::from(flags & 0x0FFF) {
            0x0FFF => data.get(path_at..end)?.iter().position(|&byte| byte == 0)?,
            len => len,
        };
        if *data.get(path_at + path_len)? != 0 || path_at + path_len >= end {
            return None;
        }
        entries.push(Entry {
            ctime: (field(0), field(1)),
            mtime: (field(2), field(3)),
            ino: field(5),
            mode: field(6),
            uid: field(7),
            gid: field(8),
            size: field(9),
            flags,
            flags_extended: if extended { be16(data, at + 62)? } else { 0 },
            path: &data[path_at..path_at + path_len],
        });
        // Each entry is padded with 1 to 8 NULs to a multiple of 8 bytes.
        at += (path_at - at + path_len + 8) & !7;
    }
    let mut root_tree = None;
    while at < end {
        let signature = data.get(at..at + 4)?;
        let size = be32(data, at + 4)? as usize;
        let body = data.get(at + 8..(at + 8).checked_add(size)?.min(end))?;
        // A lower-case signature must be understood to read the entries
        // (`link`: split index, `sdir`: sparse index).
        if signature[0].is_ascii_lowercase() {
            return None;
        }
        if signature == b"TREE" {
            root_tree = cache_tree_root(body, entries.len());
        }
        at += 8 + size;
    }
    (at == end).then_some(Index { entries, root_tree })
}

/// The root of a cache tree comes first: an empty path, NUL, "<entries>
/// <subtrees>\n", then its tree id unless the entry count is -1 (changed
/// since the tree was last written). Valid only if it covers every entry.
fn cache_tree_root(body: &[u8], entries: usize) -> Option<[u8; OID]> {
    let rest = body.strip_prefix(b"\0")?;
    let line_end = rest.iter().position(|&byte| byte == b'\n')?;
    let counts = std::str::from_utf8(&rest[..line_end]).ok()?;
    let covered: i64 = counts.split(' ').next()?.parse().ok()?;
    if covered < 0 || covered as usize != entries {
        return None;
    }
    rest.get(line_end + 1..line_end + 1 + OID)?.try_into().ok()
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

/// Every entry is an ordinary stage-0 file whose stat data is the one
/// recorded, and no entry is racy.
fn work_tree_matches(workdir: &Path, entries: &[Entry], index_mtime: (i32, u32)) -> bool {
    // The last directory found real, with all its ancestors: entries come
    // sorted by path, so each directory is checked about once.
    let mut real_dir: &[u8] = b"";
    // One buffer for every path looked up, not a new one per file.
    let base = workdir.to_path_buf();
    let mut full = base.clone();
    let mut lstat = |relative: &str| {
        full.clone_from(&base);
        full.push(relative);
        fs::symlink_metadata(&full)
    };
    for entry in entries {
        // Stage bits (conflicts), assume-unchanged, extended flags; gitlinks.
        let special = entry.flags & 0xF000 != 0 || entry.flags_extended != 0 || entry.mode == 0o160000;
        // libgit2's racy rule (git_index_entry_newer_than_index, with the
        // nanoseconds it is built with on all but Android).
        if special || (entry.mtime.0 as i32, entry.mtime.1) >= index_mtime {
            return false;
        }
        let Ok(relative) = std::str::from_utf8(entry.path) else { return false };
        if !plain_path(relative) {
            return false;
        }
        // Every leading component must be a real directory: one replaced by a
        // symlink to a copy of itself is a change the status sees.
        let parent = relative.rfind('/').map_or("", |end| &relative[..end]);
        let mut dir = parent;
        while !dir.is_empty() && !is_dir_or_ancestor(dir.as_bytes(), real_dir) {
            match lstat(dir) {
                Ok(meta) if meta.file_type().is_dir() => {}
                _ => return false,
            }
            dir = dir.rfind('/').map_or("", |end| &dir[..end]);
        }
        real_dir = parent.as_bytes();
        match lstat(relative) {
            Ok(meta) if stat_matches(entry, &meta) => {}
            _ => return false,
        }
    }
    true
}

/// A relative path whose components are neither empty, `.`, `..` nor `.git`:
/// libgit2 refuses to read an index with such paths, and none may lead this
/// check outside the work tree.
fn plain_path(path: &str) -> bool {
    // This runs unoptimised, once per tracked file: a `while` over the bytes
    // (an iterator's `next`, or `split`, is a call per step at opt-level 0),
    // and only a component that is empty or starts with '.' is compared.
    // The `for` loop over a range it replaces cost 2,000 instructions a path.
    let bytes = path.as_bytes();
    let mut start = 0;
    let mut at = 0;
    while at <= bytes.len() {
        if at == bytes.len() || bytes[at] == b'/' {
            let component = &bytes[start..at];
            if component.is_empty()
                || (component[0] == b'.'
                    && (component == b"." || component == b".." || component.eq_ignore_ascii_case(b".git")))
            {
                return false;
            }
            start = at + 1;
        }
        at += 1;
    }
    true
}

/// `dir` is `other` or one of its ancestors (paths with `/` separators).
fn is_dir_or_ancestor(dir: &[u8], other: &[u8]) -> bool {
    other.starts_with(dir) && (other.len() == dir.len() || other[dir.len()] == b'/')
}

/// (seconds, nanoseconds) of a file's mtime or ctime, the seconds cut to 32
/// bits as the index stores them and libgit2 compares them.
#[cfg(unix)]
fn stat_time(meta: &fs::Metadata, ctime: bool) -> Option<(i32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let (seconds, nanoseconds) =
        if ctime { (meta.ctime(), meta.ctime_nsec()) } else { (meta.mtime(), meta.mtime_nsec()) };
    Some((seconds as i32, u32::try_from(nanoseconds).ok()?))
}

#[cfg(not(unix))]
fn stat_time(_meta: &fs::Metadata, _ctime: bool) -> Option<(i32, u32)> {
    // No inode or owner to compare: the full status decides.
    None
}

/// The file's stat data is what the index recorded, field by field as the
/// index stores them: 32 bits, and git's modes 100644, 100755 or 120000.
#[cfg(unix)]
fn stat_matches(entry: &Entry, meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mode = match meta.file_type() {
        kind if kind.is_symlink() => 0o120000,
        kind if kind.is_file() && meta.mode() & 0o100 != 0 => 0o100755,
        kind if kind.is_file() => 0o100644,
        _ => return false,
    };
    let recorded = |(seconds, nanoseconds): (u32, u32)| Some((seconds as i32, nanoseconds));
    entry.mode == mode
        && entry.size == meta.size() as u32
        && stat_time(meta, false) == recorded(entry.mtime)
        && stat_time(meta, true) == recorded(entry.ctime)
        && entry.ino == meta.ino() as u32
        && entry.uid == meta.uid()
        && entry.gid == meta.gid()
}

#[cfg(not(unix))]
fn stat_matches(_entry: &Entry, _meta: &fs::Metadata) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index as git writes it: header, entries, extensions, checksum.
    fn index_file(version: u32, entries: &[(&str, u16, u16)], extensions: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
        let mut data = b"DIRC".to_vec();
        data.extend(version.to_be_bytes());
        data.extend((entries.len() as u32).to_be_bytes());
        for &(path, flags, flags_extended) in entries {
            let start = data.len();
            for field in 0..10u32 {
                data.extend((field + 1).to_be_bytes());
            }
            data.extend([7u8; OID]);
            data.extend((flags | path.len().min(0xFFF) as u16).to_be_bytes());
            if flags & 0x4000 != 0 {
                data.extend(flags_extended.to_be_bytes());
            }
            data.extend(path.as_bytes());
            let length = data.len() - start;
            data.resize(start + ((length + 8) & !7), 0);
        }
        for (signature, body) in extensions {
            data.extend(*signature);
            data.extend((body.len() as u32).to_be_bytes());
            data.extend(body);
        }
        data.extend([0u8; OID]);
        data
    }

    fn tree_extension(covered: &str, id: Option<[u8; OID]>) -> Vec<u8> {
        let mut body = format!("\0{covered} 0\n").into_bytes();
        body.extend(id.unwrap_or_default().iter().take(if id.is_some() { OID } else { 0 }));
        body
    }

    #[test]
    fn reads_entries_and_the_cache_tree_root() {
        let data = index_file(2, &[("a/b.txt", 0, 0), ("c", 0, 0)], &[(b"TREE", tree_extension("2", Some([9; OID])))]);
        let index = parse(&data).unwrap();
        let paths: Vec<&[u8]> = index.entries.iter().map(|entry| entry.path).collect();
        assert_eq!(paths, [&b"a/b.txt"[..], b"c"]);
        let first = &index.entries[0];
        assert_eq!((first.ctime, first.mtime, first.ino, first.mode), ((1, 2), (3, 4), 6, 7));
        assert_eq!((first.uid, first.gid, first.size), (8, 9, 10));
        assert_eq!(index.root_tree, Some([9; OID]));
    }

    #[test]
    fn long_paths_are_found_by_their_end() {
        let long = "d/".repeat(2100) + "f";
        let data = index_file(2, &[(&long, 0, 0), ("z", 0, 0)], &[]);
        let index = parse(&data).unwrap();
        assert_eq!(index.entries[0].path, long.as_bytes());
        assert_eq!(index.entries[1].path, b"z");
    }

    #[test]
    fn extended_flags_are_read_in_format_3_only() {
        let data = index_file(3, &[("x", 0x4000, 0x2000)], &[]);
        assert_eq!(parse(&data).unwrap().entries[0].flags_extended, 0x2000);
        assert!(parse(&index_file(2, &[("x", 0x4000, 0x2000)], &[])).is_none());
    }

    #[test]
    fn invalid_or_partial_cache_tree_proves_nothing() {
        let invalid = index_file(2, &[("c", 0, 0)], &[(b"TREE", tree_extension("-1", None))]);
        assert_eq!(parse(&invalid).unwrap().root_tree, None);
        let partial = index_file(2, &[("c", 0, 0), ("d", 0, 0)], &[(b"TREE", tree_extension("1", Some([9; OID])))]);
        assert_eq!(parse(&partial).unwrap().root_tree, None);
    }

    #[test]
    fn what_is_not_understood_is_not_read() {
        // Split index, another format, a truncated file, a wrong signature.
        assert!(parse(&index_file(2, &[("c", 0, 0)], &[(b"link", vec![0; 24])])).is_none());
        assert!(parse(&index_file(4, &[("c", 0, 0)], &[])).is_none());
        let data = index_file(2, &[("c", 0, 0)], &[]);
        assert!(parse(&data[..data.len() - 30]).is_none());
        assert!(parse(b"XXXX\0\0\0\x02\0\0\0\0aaaaaaaaaaaaaaaaaaaa").is_none());
        // Optional extensions (upper case) are skipped.
        assert!(parse(&index_file(2, &[("c", 0, 0)], &[(b"UNTR", vec![1, 2, 3])])).is_some());
    }

    #[test]
    fn only_plain_relative_paths() {
        assert!(plain_path("a/b.txt") && plain_path(".gitignore") && plain_path("x/..y") && plain_path("a/.gitx"));
        for path in ["", "/a", "a//b", "a/", "./a", "a/../b", "..", ".git/config", "a/.GIT/x", "a/.git"] {
            assert!(!plain_path(path), "{path}");
        }
    }

    #[test]
    fn ancestors_by_whole_components() {
        assert!(is_dir_or_ancestor(b"a", b"a/b"));
        assert!(is_dir_or_ancestor(b"a/b", b"a/b"));
        assert!(!is_dir_or_ancestor(b"a", b"ab/c"));
        assert!(!is_dir_or_ancestor(b"a/b", b"a"));
        assert!(!is_dir_or_ancestor(b"a", b""));
    }
}
