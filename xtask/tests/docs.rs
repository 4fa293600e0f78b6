//! The documentation holds: the checked-in command reference is what the
//! command line generates (so `--help`, the reference and the exit codes
//! cannot drift apart), and every relative link and anchor in README.md and
//! docs/ points at a file and a heading that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use xtask::reference;

const RUN_DOCS: &str = "run `cargo xtask docs` and commit what it writes";

#[test]
fn the_checked_in_reference_is_what_the_code_generates() {
    let docs = xtask_test_support::project_root().join("docs");
    let pages = reference::pages().expect("the reference renders");
    let mut differ = Vec::new();
    for page in &pages {
        let path = docs.join(&page.path);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(page.text.as_str()) {
            differ.push(page.path.display().to_string());
        }
    }
    let generated: BTreeSet<PathBuf> = pages.iter().map(|page| docs.join(&page.path)).collect();
    for dir in [reference::MARKDOWN_DIR, reference::MAN_DIR] {
        for entry in std::fs::read_dir(docs.join(dir)).unwrap_or_else(|err| panic!("docs/{dir}: {err}: {RUN_DOCS}")) {
            let path = entry.unwrap().path();
            if !generated.contains(&path) {
                differ.push(format!("{} (no task has it)", path.strip_prefix(&docs).unwrap().display()));
            }
        }
    }
    let summary = std::fs::read_to_string(docs.join(reference::SUMMARY)).expect("docs/src/SUMMARY.md");
    if reference::summary_with_reference(&summary).expect("SUMMARY.md has the reference markers") != summary {
        differ.push(format!("{} (its reference part)", reference::SUMMARY));
    }
    assert!(
        differ.is_empty(),
        "the command reference in docs/ differs from the code: {RUN_DOCS}:\n{}",
        differ.join("\n")
    );
}

#[test]
fn every_relative_link_and_anchor_in_the_readme_and_the_book_exists() {
    let root = xtask_test_support::project_root();
    let mut files = vec![root.join("README.md")];
    files.extend(markdown_files(&root.join("docs/src")));
    assert!(files.len() > 2, "no chapters under docs/src: {files:?}");
    let mut anchors_of: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) =
                target.split_once('#').map_or((target.as_str(), None), |(path, anchor)| (path, Some(anchor)));
            let to = if path.is_empty() { file.clone() } else { normalize(&file.parent().unwrap().join(path)) };
            let shown = format!("{}: {target}", file.strip_prefix(&root).unwrap().display());
            if !to.exists() {
                broken.push(format!("{shown}: no such file"));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            let anchors = anchors_of.entry(to.clone()).or_insert_with(|| {
                headings(&std::fs::read_to_string(&to).unwrap_or_default()).iter().map(slug).collect()
            });
            if !anchors.contains(anchor) {
                broken.push(format!("{shown}: no heading makes the anchor #{anchor}"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_check_sees_links_headings_and_anchors_as_github_makes_them() {
    let text = "# Title\n\nSee [a](a.md#x) and `[not](code.md)`.\n\n```sh\n[no](fenced.md)\n```\n## The `db` volume: (RDS)\n## Title\n";
    assert_eq!(links(text), ["a.md#x"]);
    let slugs: Vec<String> = headings(text).iter().map(slug).collect();
    assert_eq!(slugs, ["title", "the-db-volume-rds", "title-1"]);
    assert_eq!(slug_text("APP_VERSION"), "app_version");
    assert_eq!(slug_text("Environments: staging and production"), "environments-staging-and-production");
}

fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(markdown_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `a/b/../c` as `a/c`, without asking the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The lines of `text` outside fenced code blocks, with inline code spans removed.
fn prose(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut kept = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                kept.push_str(part);
            }
        }
        lines.push(kept);
    }
    lines
}

/// The targets of the inline links `[text](target)` in `text`.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in prose(text) {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].trim().to_owned());
            rest = &after[end..];
        }
    }
    found
}

/// The headings of `text`, each numbered by how often its slug came before
/// (GitHub and mdBook add `-1`, `-2`, ... to a repeated anchor).
fn headings(text: &str) -> Vec<(String, usize)> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let title = title.trim().to_owned();
        let count = seen.entry(slug_text(&title)).or_default();
        out.push((title, *count));
        *count += 1;
    }
    out
}

fn slug((title, repeat): &(String, usize)) -> String {
    let base = slug_text(title);
    if *repeat == 0 { base } else { format!("{base}-{repeat}") }
}

/// A heading's anchor as GitHub and mdBook make it: the text of links and
/// code, lower case, letters, digits, `-` and `_` kept, spaces to `-`.
fn slug_text(title: &str) -> String {
    let mut text = String::new();
    let mut in_target = false;
    let mut previous = ' ';
    for c in title.chars() {
        match c {
            '(' if previous == ']' => in_target = true,
            ')' if in_target => in_target = false,
            _ if in_target => {}
            _ => text.push(c),
        }
        previous = c;
    }
    text.chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_lowercase().next().unwrap_or(c)),
            _ => None,
        })
        .collect()
}
