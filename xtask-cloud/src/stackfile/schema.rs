//! The compose file format the docker CLI enforces for `docker stack deploy`
//! (compose file v3), as a table of keys and their types: an unknown key or
//! a value of the wrong type is refused here, before anything runs, with its
//! line, rather than by `docker stack deploy` after the jobs ran.
//!
//! The table covers the keys of the v3 format up to 3.9 that a stack uses;
//! values below the keys it knows but does not describe are taken as they
//! are. Keys starting with `x-` are extensions, allowed where the CLI allows
//! them (top level, service, and the objects in between).

use serde_yaml::Value;

/// What a value must be.
#[derive(Clone, Copy)]
enum Type {
    /// Anything (a part of the format this table does not describe).
    Any,
    Str,
    /// An integer, or a string of one (interpolated values are strings;
    /// the CLI converts them).
    Int,
    /// A number, or a string of one.
    Number,
    Bool,
    /// A string or a list of strings (`command`, `dns`).
    StrOrList,
    /// A list of anything (`ports`, `volumes` of a service).
    List,
    /// A mapping, or a list of `KEY=VALUE` strings (`environment`, `labels`).
    Dict,
    /// A mapping of names the user chooses to values of `Type`.
    Named(&'static Type),
    /// A mapping with exactly these keys.
    Object(&'static [(&'static str, Type)]),
    /// A list of names, or a mapping of names to anything (`networks`,
    /// `secrets` of a service).
    ListOrNamed,
    /// A key of the format that `docker stack deploy` drops without a word:
    /// refused here, with what to write instead, so that a setting that
    /// looks applied is not silently missing from the service.
    Ignored(&'static str),
}

use Type::*;

const TOP: &[(&str, Type)] = &[
    ("version", Str),
    ("services", Named(&Object(SERVICE))),
    ("networks", Named(&Any)),
    ("volumes", Named(&Any)),
    ("secrets", Named(&Any)),
    ("configs", Named(&Any)),
];

const SERVICE: &[(&str, Type)] = &[
    ("build", Any),
    ("cap_add", List),
    ("cap_drop", List),
    ("cgroup_parent", Str),
    ("command", StrOrList),
    ("configs", List),
    ("container_name", Str),
    ("credential_spec", Any),
    ("depends_on", ListOrNamed),
    ("deploy", Object(DEPLOY)),
    ("devices", List),
    ("dns", StrOrList),
    ("dns_search", StrOrList),
    ("domainname", Str),
    ("entrypoint", StrOrList),
    ("env_file", StrOrList),
    ("environment", Dict),
    ("expose", List),
    ("external_links", List),
    ("extra_hosts", Dict),
    ("healthcheck", Object(HEALTHCHECK)),
    ("hostname", Str),
    ("image", Str),
    ("init", Bool),
    ("ipc", Str),
    ("isolation", Str),
    ("labels", Dict),
    ("links", List),
    ("logging", Object(&[("driver", Str), ("options", Named(&Any))])),
    ("mac_address", Str),
    ("network_mode", Str),
    ("networks", ListOrNamed),
    ("pid", Str),
    ("ports", List),
    ("privileged", Bool),
    ("read_only", Bool),
    ("restart", Str),
    ("secrets", List),
    ("security_opt", List),
    ("shm_size", Any),
    ("stdin_open", Bool),
    ("stop_grace_period", Str),
    ("stop_signal", Str),
    ("sysctls", Dict),
    (
        "tmpfs",
        Ignored(
            "is ignored by `docker stack deploy` (the swarm mounts no tmpfs from it): use a `volumes:` entry with `type: tmpfs` and `target:`",
        ),
    ),
    ("tty", Bool),
    ("ulimits", Named(&Any)),
    ("user", Str),
    ("userns_mode", Str),
    ("volumes", List),
    ("working_dir", Str),
];

const HEALTHCHECK: &[(&str, Type)] = &[
    ("disable", Bool),
    ("interval", Str),
    ("retries", Int),
    ("start_period", Str),
    ("test", StrOrList),
    ("timeout", Str),
];

const UPDATE: &[(&str, Type)] = &[
    ("delay", Str),
    ("failure_action", Str),
    ("max_failure_ratio", Number),
    ("monitor", Str),
    ("order", Str),
    ("parallelism", Int),
];

const DEPLOY: &[(&str, Type)] = &[
    ("endpoint_mode", Str),
    ("labels", Dict),
    ("mode", Str),
    ("placement", Object(&[("constraints", List), ("preferences", List), ("max_replicas_per_node", Int)])),
    ("replicas", Int),
    ("resources", Object(&[("limits", Any), ("reservations", Any)])),
    ("restart_policy", Object(&[("condition", Str), ("delay", Str), ("max_attempts", Int), ("window", Str)])),
    ("rollback_config", Object(UPDATE)),
    ("update_config", Object(UPDATE)),
];

/// One thing the CLI would refuse: where (`services.app.comand`), and why.
#[derive(Debug, PartialEq)]
pub struct Violation {
    pub path: Vec<String>,
    pub problem: String,
}

/// Every violation of the format in `file` (interpolated), in file order.
pub fn check(file: &Value) -> Vec<Violation> {
    let mut found = Vec::new();
    check_value(file, &Object(TOP), &mut Vec::new(), &mut found);
    found
}

fn is_int(value: &Value) -> bool {
    value.as_i64().is_some()
        || value.as_u64().is_some()
        || value.as_str().is_some_and(|s| s.trim().parse::<i64>().is_ok())
}

fn check_value(value: &Value, kind: &Type, path: &mut Vec<String>, found: &mut Vec<Violation>) {
    let mut wrong = |expected: &str| {
        found.push(Violation { path: path.clone(), problem: format!("must be {expected}") });
    };
    match kind {
        Any => {}
        Ignored(instead) => found.push(Violation { path: path.clone(), problem: (*instead).to_owned() }),
        Str => {
            if !(value.is_string() || value.is_number() || value.is_bool()) {
                wrong("a string")
            }
        }
        Int => {
            if !is_int(value) {
                wrong("an integer")
            }
        }
        Number => {
            if !(value.is_number() || value.as_str().is_some_and(|s| s.trim().parse::<f64>().is_ok())) {
                wrong("a number")
            }
        }
        Bool => {
            let text = value.as_str().map(str::to_ascii_lowercase);
            if !(value.is_bool() || matches!(text.as_deref(), Some("true" | "false"))) {
                wrong("true or false")
            }
        }
        StrOrList => {
            let strings = value.as_sequence().is_some_and(|items| items.iter().all(|item| !item.is_mapping()));
            if !(value.is_string() || strings) {
                wrong("a string or a list of strings")
            }
        }
        List => {
            if !value.is_sequence() {
                wrong("a list")
            }
        }
        Dict => {
            if !(value.is_mapping() || value.is_sequence()) {
                wrong("a mapping or a list of KEY=VALUE")
            }
        }
        ListOrNamed => {
            if !(value.is_mapping() || value.is_sequence()) {
                wrong("a list or a mapping")
            }
        }
        Named(inner) => match value.as_mapping() {
            Some(mapping) => {
                for (key, item) in mapping {
                    let key = key.as_str().map(str::to_owned).unwrap_or_else(|| format!("{key:?}"));
                    path.push(key);
                    // A named entry may be empty (`volumes: {data: }`).
                    if !item.is_null() {
                        check_value(item, inner, path, found);
                    }
                    path.pop();
                }
            }
            None if value.is_null() => {}
            None => wrong("a mapping"),
        },
        Object(keys) => match value.as_mapping() {
            Some(mapping) => {
                for (key, item) in mapping {
                    let Some(name) = key.as_str() else {
                        found.push(Violation {
                            path: path.clone(),
                            problem: format!("has a key that is not a string: {key:?}"),
                        });
                        continue;
                    };
                    path.push(name.to_owned());
                    match keys.iter().find(|(known, _)| *known == name) {
                        Some((_, inner)) => check_value(item, inner, path, found),
                        None if name.starts_with("x-") => {}
                        None => found.push(Violation {
                            path: path.clone(),
                            problem: format!(
                                "is not a key of the compose file format (a stack file takes: {})",
                                known_keys(keys)
                            ),
                        }),
                    }
                    path.pop();
                }
            }
            None => wrong("a mapping"),
        },
    }
}

fn known_keys(keys: &[(&str, Type)]) -> String {
    let names: Vec<&str> = keys.iter().map(|(name, _)| *name).collect();
    names.join(", ")
}

/// The line (1-based) of the key at `path` in `text`, found by a scan of
/// the block-style YAML: serde_yaml's `Value` keeps no positions. Each key
/// of the path is looked for in the block of the one before it, the lines
/// indented deeper than that key. `None` in a flow-style part of the file.
pub fn line_of(text: &str, path: &[String]) -> Option<usize> {
    let mut parent_indent: Option<usize> = None;
    let mut lines = text.lines().enumerate();
    let mut found = None;
    for key in path {
        found = None;
        for (number, line) in lines.by_ref() {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            if parent_indent.is_some_and(|parent| indent <= parent) {
                return None;
            }
            let bare = trimmed.trim_start_matches("- ");
            let named = [key.clone(), format!("\"{key}\""), format!("'{key}'")].iter().any(|quoted| {
                bare.strip_prefix(quoted.as_str()).is_some_and(|rest| rest.trim_start().starts_with(':'))
            });
            if named {
                parent_indent = Some(indent + (trimmed.len() - bare.len()));
                found = Some(number + 1);
                break;
            }
        }
        found?;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(text: &str) -> Vec<(String, Option<usize>, String)> {
        let value: Value = serde_yaml::from_str(text).unwrap();
        check(&value).into_iter().map(|v| (v.path.join("."), line_of(text, &v.path), v.problem)).collect()
    }

    // The project's stack.yml, interpolated, passes: stackfile's
    // `the_projects_stack_file_loads_with_the_exported_variables`.

    #[test]
    fn unknown_keys_and_wrong_types_are_named_with_their_line() {
        let text = "version: \"3.8\"\nservices:\n  app:\n    image: x\n    comand: [\"x\"]\n    deploy:\n      replicas: many\n      x-note: fine\n    healthcheck:\n      retries: \"3\"\nx-top: {}\nvolume: {}\n";
        let found = violations(text);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!((found[0].0.as_str(), found[0].1), ("services.app.comand", Some(5)));
        assert!(found[0].2.contains("not a key") && found[0].2.contains("command"), "{}", found[0].2);
        assert_eq!(
            (found[1].0.as_str(), found[1].1, found[1].2.as_str()),
            ("services.app.deploy.replicas", Some(7), "must be an integer")
        );
        assert_eq!((found[2].0.as_str(), found[2].1), ("volume", Some(12)));
    }

    /// A service's `tmpfs:` would deploy a service without it (docker CLI
    /// 28 against engine 20.10: no mount, no warning); a `volumes:` entry of
    /// type tmpfs is what the swarm mounts.
    #[test]
    fn a_services_tmpfs_key_is_refused_and_a_tmpfs_volume_is_not() {
        let found = violations(
            "services:\n  db:\n    image: x\n    read_only: true\n    cap_drop: [ALL]\n    cap_add: [CHOWN]\n    tmpfs: [/tmp]\n    volumes:\n      - type: tmpfs\n        target: /run\n        tmpfs: {size: 1048576}\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].0.as_str(), found[0].1), ("services.db.tmpfs", Some(7)));
        assert!(found[0].2.contains("type: tmpfs"), "{}", found[0].2);
    }

    #[test]
    fn a_key_is_looked_for_only_in_its_parents_block() {
        let text = "services:\n  a:\n    image: x\n  b:\n    comand: y\n";
        let path = |keys: &[&str]| keys.iter().map(|key| key.to_string()).collect::<Vec<_>>();
        assert_eq!(line_of(text, &path(&["services", "b", "comand"])), Some(5));
        assert_eq!(line_of(text, &path(&["services", "a", "comand"])), None);
    }
}
