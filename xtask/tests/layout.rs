//! The house rules of the project's crates, read off their sources: in both
//! xtask crates no task module imports another task module (the tasks are
//! those the dispatch runs, `NAME::run`, so a task added to a dispatch is
//! checked with the rest); in every crate, the service's included, no
//! modules import each other in a circle, at any depth: siblings in a
//! folder (`pg/backups.rs` and `pg/migrate.rs`) as much as the top-level ones.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of the crate at `src` (a file `x.rs` or a folder
/// `x/`), with the top-level modules its code outside tests names as
/// `crate::...`.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let named = graph.entry(module.clone()).or_default();
        for used in crate_paths(&code_outside_tests(&text)) {
            if used != module {
                named.insert(used);
            }
        }
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// The lines before the file's test module (`#[cfg(test)]` over a
/// top-level `mod`: in these crates it closes the file), without line
/// comments.
fn code_outside_tests(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let test_module = lines
        .windows(2)
        .position(|pair| pair[0] == "#[cfg(test)]" && (pair[1].starts_with("mod ") || pair[1].starts_with("pub mod ")));
    let code = &lines[..test_module.unwrap_or(lines.len())];
    code.iter().map(|line| line.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// The first segment after each `crate::`, and each top-level name of a
/// `crate::{a, b::c}` group.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(first_identifier(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            names.insert(first_identifier(&item));
        } else {
            names.insert(first_identifier(rest));
        }
    }
    names.remove("");
    names.remove("self");
    names
}

fn first_identifier(text: &str) -> String {
    text.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// The modules whose `run` the crate's dispatch function `function` calls.
fn dispatched(file: &Path, function: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let start = text.find(&format!("fn {function}(")).unwrap_or_else(|| panic!("{} has no {function}", file.display()));
    let body = &text[start..];
    let body = &body[..body.find("\n}\n").expect("the function ends")];
    body.match_indices("::run(")
        .map(|(at, _)| {
            let before = &body[..at];
            before.chars().rev().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>()
        })
        .map(|reversed| reversed.chars().rev().collect())
        .collect()
}

/// A circle in `graph`, as the modules along it, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        module: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|seen| seen == module) {
            let mut found = path[at..].to_vec();
            found.push(module.to_owned());
            return Some(found);
        }
        if !done.insert(module.to_owned()) {
            return None;
        }
        path.push(module.to_owned());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(found) = visit(graph, next, path, done) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|module| visit(graph, module, &mut Vec::new(), &mut done))
}

/// A module's path in its crate: `pg/backups.rs` is `["pg", "backups"]`,
/// `pg/mod.rs` is `["pg"]`, `lib.rs` and `main.rs` the root, `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let mut path: Vec<String> = file
        .strip_prefix(src)
        .unwrap()
        .with_extension("")
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(path.last().map(String::as_str), Some("mod")) || path == ["lib"] || path == ["main"] {
        path.pop();
    }
    path
}

/// The paths `code` names through `crate::` and `super::` (however many),
/// made absolute from `module`, with each `{...}` group of a `use` spread out:
/// in `a::b`, `use super::{c, d::E}` names `a::c` and `a::d::E`.
fn named_paths(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while at < code.len() {
        let rest = &code[at..];
        let starts_word =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b':');
        let base = if !starts_word {
            None
        } else if rest.starts_with("crate::") {
            at += "crate::".len();
            Some(Vec::new())
        } else if rest.starts_with("super::") {
            let mut base = module.to_vec();
            while code[at..].starts_with("super::") {
                base.pop();
                at += "super::".len();
            }
            Some(base)
        } else {
            None
        };
        match base {
            Some(base) => at += tree(&code[at..], base, &mut paths),
            None => at += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    paths
}

/// Reads one path tree (`a::b`, `a::{b, c::{d}}`) at the start of `text`
/// under `prefix` into `out`; returns how many bytes it read.
fn tree(text: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix;
    let mut read = 0;
    loop {
        let rest = &text[read..];
        let skipped = rest.len() - rest.trim_start().len();
        read += skipped;
        let rest = &text[read..];
        if let Some(group) = rest.strip_prefix('{') {
            read += 1;
            let mut inner = group;
            loop {
                let used = tree(inner, path.clone(), out);
                read += used;
                inner = &inner[used..];
                let trimmed = inner.trim_start();
                read += inner.len() - trimmed.len();
                inner = trimmed;
                match inner.chars().next() {
                    Some(',') => {
                        read += 1;
                        inner = &inner[1..];
                    }
                    Some('}') => return read + 1,
                    _ => return read,
                }
            }
        }
        let word = first_identifier(rest);
        if word.is_empty() {
            break;
        }
        read += word.len();
        path.push(word);
        if text[read..].starts_with("::") {
            read += 2;
        } else {
            break;
        }
    }
    out.push(path);
    read
}

/// A circle among modules of the crate at `src` that import each other, at
/// any depth. An import from `a::b` to `c::d` counts between the two
/// siblings under their common parent (`a` → `c`); a module naming its
/// own parent or child (a folder's `mod.rs` and its files) is no circle.
fn circle_at_any_depth(src: &Path) -> Option<Vec<String>> {
    let files = rust_files(src);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|file| module_path(src, file)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module_path(src, file);
        let code = code_outside_tests(&std::fs::read_to_string(file).unwrap());
        for named in named_paths(&from, &code) {
            // The module a path lands in: its longest prefix that is one.
            let Some(to) = (0..=named.len()).rev().map(|len| named[..len].to_vec()).find(|p| modules.contains(p))
            else {
                continue;
            };
            if to.starts_with(&from) || from.starts_with(&to) {
                continue;
            }
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            let room = |path: &[String]| path[..=common].join("::");
            graph.entry(room(&from)).or_default().insert(room(&to));
        }
    }
    circle(&graph)
}

fn check(crate_dir: &str, dispatch_file: &str, functions: &[&str]) {
    let root = xtask_test_support::project_root().join(crate_dir);
    let graph = imports(&root.join("src"));
    let mut tasks = BTreeSet::new();
    for function in functions {
        let found = dispatched(&root.join(dispatch_file), function);
        assert!(!found.is_empty(), "found no tasks in {crate_dir}/{dispatch_file}'s {function}");
        tasks.extend(found);
    }
    assert!(tasks.len() > 1, "found no tasks in {crate_dir}/{dispatch_file}'s {functions:?}: {tasks:?}");
    for task in &tasks {
        assert!(graph.contains_key(task), "{task} is dispatched but is no module of {crate_dir}/src");
        let other_tasks: Vec<&String> = graph[task].iter().filter(|used| tasks.contains(*used)).collect();
        assert!(other_tasks.is_empty(), "task module {crate_dir}/src/{task} imports task module(s) {other_tasks:?}");
    }
    if let Some(found) = circle(&graph) {
        panic!("modules of {crate_dir}/src import each other in a circle: {}", found.join(" -> "));
    }
    no_circle_at_any_depth(crate_dir);
}

fn no_circle_at_any_depth(crate_dir: &str) {
    let src = xtask_test_support::project_root().join(crate_dir).join("src");
    if let Some(found) = circle_at_any_depth(&src) {
        panic!("modules of {crate_dir}/src import each other in a circle: {}", found.join(" -> "));
    }
}

#[test]
fn the_light_tasks_import_no_task_and_no_module_circle() {
    // The tasks that only print have their own dispatch (they run before
    // any settings are read).
    check("xtask", "src/runner.rs", &["dispatch_light", "dispatch_print"]);
}

#[test]
fn the_cloud_tasks_import_no_task_and_no_module_circle() {
    check("xtask-cloud", "src/lib.rs", &["dispatch"]);
}

#[test]
fn the_service_has_no_module_circle() {
    no_circle_at_any_depth("todobackend");
}

/// The service's rooms: the data (`store`) knows nothing of HTTP or the
/// commands, SQLite's side nothing of PostgreSQL's (the move to PostgreSQL
/// reads SQLite, not the other way), and the HTTP side nothing of the
/// commands that start it.
#[test]
fn the_services_rooms_import_only_downwards() {
    let src = xtask_test_support::project_root().join("todobackend/src");
    let rules: [(&[&str], &[&str]); 4] = [
        (&["store"], &["http", "cli", "acceptance"]),
        (&["store", "sqlite"], &["store::postgres"]),
        (&["http"], &["cli", "acceptance"]),
        (&["store", "todos"], &["store::sqlite", "store::postgres"]),
    ];
    let mut broken = Vec::new();
    for file in rust_files(&src) {
        let module = module_path(&src, &file);
        let code = code_outside_tests(&std::fs::read_to_string(&file).unwrap());
        for (room, forbidden) in &rules {
            if !module.starts_with(&room.iter().map(|part| part.to_string()).collect::<Vec<_>>()) {
                continue;
            }
            for named in named_paths(&module, &code) {
                let named = named.join("::");
                if let Some(bad) = forbidden.iter().find(|bad| named == **bad || named.starts_with(&format!("{bad}::")))
                {
                    broken.push(format!(
                        "{} names {named} ({} must not import {bad})",
                        module.join("::"),
                        room.join("::")
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "the service's rooms import upwards:\n{}", broken.join("\n"));
}

#[test]
fn the_deep_check_reads_nested_groups_and_supers_and_finds_a_circle_between_siblings() {
    let module = ["pg".to_owned(), "backups".to_owned()];
    let named = named_paths(&module, "use super::{migrate::{lock, applied}, client};\nlet x = crate::a::b();");
    let named: Vec<String> = named.iter().map(|path| path.join("::")).collect();
    assert_eq!(named, ["pg::migrate::lock", "pg::migrate::applied", "pg::client", "a::b"]);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("pg")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod pg;\n").unwrap();
    std::fs::write(src.join("pg/mod.rs"), "pub mod backups;\npub mod migrate;\nuse self::backups::x;\n").unwrap();
    std::fs::write(src.join("pg/backups.rs"), "use super::migrate::lock;\nuse super::Thing;\n").unwrap();
    std::fs::write(src.join("pg/migrate.rs"), "fn f() { crate::pg::backups::take(); }\n").unwrap();
    assert_eq!(circle_at_any_depth(src).unwrap(), ["pg::backups", "pg::migrate", "pg::backups"]);
    // Without the import back, a child naming its parent is no circle.
    std::fs::write(src.join("pg/migrate.rs"), "fn f() { super::Thing::new(); }\n").unwrap();
    assert_eq!(circle_at_any_depth(src), None);
}

#[test]
fn the_checks_see_a_task_importing_a_task_and_a_circle() {
    let paths = crate_paths("use crate::{a::B, c};\nlet x = crate::d::e();\nuse crate::{f::{g, h}, i};");
    assert_eq!(paths, ["a", "c", "d", "f", "i"].map(String::from).into());
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("deploy", vec!["stack"]), ("stack", vec!["records"]), ("records", vec!["deploy"])]
            .into_iter()
            .map(|(module, uses)| (module.to_owned(), uses.into_iter().map(String::from).collect()))
            .collect();
    assert_eq!(circle(&graph).unwrap(), ["deploy", "stack", "records", "deploy"]);
    let code = code_outside_tests(
        "use crate::a;\n// crate::b\n#[cfg(test)]\nfn f() {}\n#[cfg(test)]\nmod tests {\nuse crate::c;",
    );
    assert_eq!(crate_paths(&code), ["a"].map(String::from).into());
    assert!(code.contains("fn f"), "{code}");
}
