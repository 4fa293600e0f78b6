//! One service as a flat list of fields, read two ways that must agree: from
//! the interpolated stack file, as `docker stack deploy` turns it into a
//! service spec ([`desired`]), and from the spec the swarm runs ([`live`]).
//! A field is a name (`replicas`, `environment.FOO`, `update_config.delay`)
//! and its value as text; a field absent from the file has the value the
//! engine fills in (a monitor of 5s, `stop-first`), so that a file that never
//! names it agrees with the spec the engine completed.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use crate::image_ref::ImageRef;

/// Field name → value. `image.digest` is there only when it is known.
pub type Fields = BTreeMap<String, String>;

/// The engine's defaults for an update or rollback config.
const UPDATE_DEFAULTS: [(&str, &str); 6] = [
    ("parallelism", "1"),
    ("delay", "0s"),
    ("failure_action", "pause"),
    ("monitor", "5s"),
    ("max_failure_ratio", "0"),
    ("order", "stop-first"),
];
const RESTART_DEFAULTS: [(&str, &str); 4] =
    [("condition", "any"), ("delay", "5s"), ("max_attempts", "0"), ("window", "0s")];
const STOP_GRACE_DEFAULT: &str = "10s";

/// Whether an environment variable's value must never be shown.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "PRIVATE", "AUTH", "DSN", "DATABASE_URL"]
        .iter()
        .any(|word| upper.contains(word))
}

/// The top-level sections that name the swarm objects a service refers to.
pub struct StackFile<'a> {
    pub stack: &'a str,
    pub file: &'a Yaml,
    /// The directory relative bind mounts resolve from.
    pub base_dir: &'a Path,
    /// The variables a bare `environment: [NAME]` takes its value from.
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl StackFile<'_> {
    /// The swarm's name of `key` in the top-level `section` (`volumes`,
    /// `networks`, `secrets`, `configs`): `external` or `name:` as written,
    /// else prefixed with the stack's name, as the CLI does.
    fn object_name(&self, section: &str, key: &str) -> String {
        let object = self.file.get(section).and_then(|objects| objects.get(key));
        let name = object.and_then(|object| object.get("name")).and_then(scalar);
        let external = object.and_then(|object| object.get("external"));
        let external_name = external.and_then(|external| external.get("name")).and_then(scalar);
        let is_external = external.is_some_and(|external| external.as_bool().unwrap_or(external.is_mapping()));
        match (name, external_name) {
            (Some(name), _) => name,
            (None, Some(name)) => name,
            (None, None) if is_external => key.to_owned(),
            (None, None) => format!("{}_{key}", self.stack),
        }
    }
}

/// The fields of service `service` of the stack file, as the CLI converts it.
pub fn desired(stack: &StackFile, service: &Yaml) -> Fields {
    let mut fields = Fields::new();
    let deploy = service.get("deploy");
    let get = |path: &[&str]| path_yaml(service, path);
    if let Some(image) = get(&["image"]).and_then(scalar) {
        fields.insert("image".into(), ImageRef::parse(&image).name_tag());
    }
    if let Some(command) = get(&["entrypoint"]).and_then(words) {
        fields.insert("command".into(), command);
    }
    if let Some(args) = get(&["command"]).and_then(words) {
        fields.insert("args".into(), args);
    }
    for (name, value) in key_values(get(&["environment"])) {
        let value = value.or_else(|| (stack.lookup)(&name));
        if let Some(value) = value {
            fields.insert(format!("environment.{name}"), value);
        }
    }
    for (name, value) in key_values(deploy.and_then(|deploy| deploy.get("labels"))) {
        fields.insert(format!("labels.{name}"), value.unwrap_or_default());
    }
    for (name, value) in key_values(get(&["labels"])) {
        fields.insert(format!("container_labels.{name}"), value.unwrap_or_default());
    }
    for (section, default_target) in [("secrets", "{}"), ("configs", "/{}")] {
        let refs: Vec<String> = sequence(get(&[section]))
            .map(|entry| {
                let (source, target) = match entry {
                    Yaml::Mapping(_) => {
                        (entry.get("source").and_then(scalar).unwrap_or_default(), entry.get("target").and_then(scalar))
                    }
                    other => (scalar(other).unwrap_or_default(), None),
                };
                let target = target.unwrap_or_else(|| default_target.replace("{}", &source));
                format!("{} → {target}", stack.object_name(section, &source))
            })
            .collect();
        insert_list(&mut fields, section, refs);
    }
    let mounts: Vec<String> = sequence(get(&["volumes"])).filter_map(|entry| desired_mount(stack, entry)).collect();
    insert_list(&mut fields, "mounts", mounts);
    let networks: Vec<String> = match get(&["networks"]) {
        Some(Yaml::Mapping(map)) => map.keys().filter_map(scalar).collect(),
        Some(Yaml::Sequence(list)) => list.iter().filter_map(scalar).collect(),
        _ => vec!["default".to_owned()],
    };
    let networks = networks.iter().map(|key| stack.object_name("networks", key)).collect();
    insert_list(&mut fields, "networks", networks);
    let ports: Vec<String> = sequence(get(&["ports"])).flat_map(desired_ports).collect();
    insert_list(&mut fields, "ports", ports);

    let mode = deploy.and_then(|deploy| deploy.get("mode")).and_then(scalar).unwrap_or_else(|| "replicated".into());
    if mode == "replicated" {
        let replicas = deploy.and_then(|deploy| deploy.get("replicas")).and_then(scalar);
        fields.insert("replicas".into(), replicas.unwrap_or_else(|| "1".into()));
    }
    fields.insert("mode".into(), mode);
    let endpoint_mode = deploy.and_then(|deploy| deploy.get("endpoint_mode")).and_then(scalar);
    fields.insert("endpoint_mode".into(), endpoint_mode.unwrap_or_else(|| "vip".into()));
    let placement = |key: &str| deploy.and_then(|deploy| path_yaml(deploy, &["placement", key]));
    let constraints: Vec<String> = sequence(placement("constraints")).filter_map(scalar).collect();
    insert_list(&mut fields, "placement.constraints", constraints);
    let preferences: Vec<String> = sequence(placement("preferences"))
        .filter_map(|preference| preference.get("spread").and_then(scalar))
        .map(|spread| format!("spread={spread}"))
        .collect();
    insert_list(&mut fields, "placement.preferences", preferences);
    if let Some(max) = placement("max_replicas_per_node").and_then(scalar) {
        fields.insert("placement.max_replicas_per_node".into(), max);
    }
    for kind in ["limits", "reservations"] {
        let resources = deploy.and_then(|deploy| path_yaml(deploy, &["resources", kind]));
        if let Some(cpus) = resources.and_then(|r| r.get("cpus")).and_then(scalar) {
            let nanos = cpus.trim().parse::<f64>().map(|cpus| (cpus * 1e9).round() as i64);
            fields.insert(format!("resources.{kind}.cpus"), nanos.map(format_cpus).unwrap_or(cpus));
        }
        if let Some(memory) = resources.and_then(|r| r.get("memory")).and_then(scalar) {
            fields.insert(format!("resources.{kind}.memory"), parse_bytes(&memory).map(format_bytes).unwrap_or(memory));
        }
    }
    for section in ["update_config", "rollback_config"] {
        let config = deploy.and_then(|deploy| deploy.get(section));
        for (key, default) in UPDATE_DEFAULTS {
            let value = config.and_then(|config| config.get(key)).and_then(scalar);
            let value = match key {
                "delay" | "monitor" => value.map(|value| normal_duration(&value)).filter(|value| value != "0s"),
                "max_failure_ratio" => value.map(|value| value.parse::<f64>().map_or(value, |ratio| ratio.to_string())),
                _ => value,
            };
            fields.insert(format!("{section}.{key}"), value.unwrap_or_else(|| default.into()));
        }
    }
    let restart = deploy.and_then(|deploy| deploy.get("restart_policy"));
    for (key, default) in RESTART_DEFAULTS {
        let value = restart.and_then(|restart| restart.get(key)).and_then(scalar);
        let value = match key {
            "delay" | "window" => value.map(|value| normal_duration(&value)),
            _ => value,
        };
        fields.insert(format!("restart_policy.{key}"), value.unwrap_or_else(|| default.into()));
    }
    let grace = get(&["stop_grace_period"]).and_then(scalar).map(|value| normal_duration(&value));
    fields.insert("stop_grace_period".into(), grace.unwrap_or_else(|| STOP_GRACE_DEFAULT.into()));
    if let Some(health) = get(&["healthcheck"]) {
        let disabled = health.get("disable").and_then(Yaml::as_bool).unwrap_or(false);
        let test = match health.get("test") {
            _ if disabled => Some(r#"["NONE"]"#.to_owned()),
            Some(Yaml::String(shell)) => Some(json_list(&["CMD-SHELL".to_owned(), shell.clone()])),
            Some(other) => words(other),
            None => None,
        };
        if let Some(test) = test {
            fields.insert("healthcheck.test".into(), test);
        }
        for key in ["interval", "timeout", "start_period"] {
            if let Some(value) = health.get(key).and_then(scalar).map(|value| normal_duration(&value))
                && value != "0s"
            {
                fields.insert(format!("healthcheck.{key}"), value);
            }
        }
        if let Some(retries) = health.get("retries").and_then(scalar).filter(|retries| retries != "0") {
            fields.insert("healthcheck.retries".into(), retries);
        }
    }
    for (key, field) in [("user", "user"), ("working_dir", "working_dir"), ("hostname", "hostname")] {
        if let Some(value) = get(&[key]).and_then(scalar) {
            fields.insert(field.into(), value);
        }
    }
    // Only when set, as the live side reads them: a spec from before these
    // keys and a file without them agree.
    let read_only = get(&["read_only"]);
    if read_only.is_some_and(|value| value.as_bool() == Some(true) || scalar(value).as_deref() == Some("true")) {
        fields.insert("read_only".into(), "true".into());
    }
    let caps = |key: &str| -> Vec<String> { sequence(get(&[key])).filter_map(scalar).collect() };
    let (add, drop) = effective_capabilities(&caps("cap_add"), &caps("cap_drop"));
    insert_list(&mut fields, "cap_add", add);
    insert_list(&mut fields, "cap_drop", drop);
    fields
}

/// `cap_add` and `cap_drop` as the docker CLI puts them in the spec (its
/// `opts.EffectiveCapAddCapDrop`): upper case with a `CAP_` prefix (but
/// `ALL`), `ALL` on either side standing for the whole side, and what is
/// both added and dropped only added.
fn effective_capabilities(add: &[String], drop: &[String]) -> (Vec<String>, Vec<String>) {
    let normal = |caps: &[String]| -> std::collections::BTreeSet<String> {
        let caps: std::collections::BTreeSet<String> = caps
            .iter()
            .map(|cap| cap.trim().to_ascii_uppercase())
            .map(|cap| if cap == "ALL" || cap.starts_with("CAP_") { cap } else { format!("CAP_{cap}") })
            .collect();
        if caps.contains("ALL") { ["ALL".to_owned()].into() } else { caps }
    };
    let (add, drop) = (normal(add), normal(drop));
    let drop = drop.difference(&add).cloned().collect();
    (add.into_iter().collect(), drop)
}

/// The fields of a live service spec (the engine API's JSON of it);
/// `network_names` maps network ids to names.
pub fn live(spec: &Json, network_names: &BTreeMap<String, String>) -> Fields {
    let mut fields = Fields::new();
    let at = |pointer: &str| spec.pointer(pointer).filter(|value| !value.is_null());
    let container = |key: &str| at(&format!("/TaskTemplate/ContainerSpec/{key}"));
    if let Some(image) = container("Image").and_then(Json::as_str) {
        let reference = ImageRef::parse(image);
        fields.insert("image".into(), reference.name_tag());
        if let Some(digest) = reference.digest {
            fields.insert("image.digest".into(), digest);
        }
    }
    for (key, field) in [("Command", "command"), ("Args", "args")] {
        if let Some(list) = container(key).and_then(Json::as_array).filter(|list| !list.is_empty()) {
            let items: Vec<String> = list.iter().filter_map(|item| item.as_str().map(str::to_owned)).collect();
            fields.insert(field.into(), json_list(&items));
        }
    }
    for item in container("Env").and_then(Json::as_array).into_iter().flatten().filter_map(Json::as_str) {
        let (name, value) = item.split_once('=').unwrap_or((item, ""));
        fields.insert(format!("environment.{name}"), value.to_owned());
    }
    let ours = |name: &str| name.starts_with("com.docker.stack.");
    for (pointer, prefix) in [("/Labels", "labels"), ("/TaskTemplate/ContainerSpec/Labels", "container_labels")] {
        for (name, value) in at(pointer).and_then(Json::as_object).into_iter().flatten() {
            if !ours(name) {
                fields.insert(format!("{prefix}.{name}"), value.as_str().unwrap_or_default().to_owned());
            }
        }
    }
    for (key, section) in [("Secrets", "secrets"), ("Configs", "configs")] {
        let name_key = if key == "Secrets" { "SecretName" } else { "ConfigName" };
        let refs: Vec<String> = container(key)
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .map(|entry| {
                let name = entry.get(name_key).and_then(Json::as_str).unwrap_or_default();
                let target = entry.pointer("/File/Name").and_then(Json::as_str).unwrap_or_default();
                format!("{name} → {target}")
            })
            .collect();
        insert_list(&mut fields, section, refs);
    }
    let mounts: Vec<String> = container("Mounts")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .map(|mount| {
            let text = |key: &str| mount.get(key).and_then(Json::as_str).unwrap_or_default().to_owned();
            let read_only = mount.get("ReadOnly").and_then(Json::as_bool).unwrap_or(false);
            let size = mount.pointer("/TmpfsOptions/SizeBytes").and_then(Json::as_i64).filter(|size| *size != 0);
            mount_text(&text("Type"), &text("Source"), &text("Target"), read_only, size)
        })
        .collect();
    insert_list(&mut fields, "mounts", mounts);
    let networks: Vec<String> = at("/TaskTemplate/Networks")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|network| network.get("Target").and_then(Json::as_str))
        .map(|target| network_names.get(target).cloned().unwrap_or_else(|| target.to_owned()))
        .collect();
    insert_list(&mut fields, "networks", networks);
    let ports: Vec<String> = at("/EndpointSpec/Ports")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .map(|port| {
            let text = |key: &str| port.get(key).map(json_text).unwrap_or_default();
            let protocol = Some(text("Protocol")).filter(|p| !p.is_empty()).unwrap_or_else(|| "tcp".into());
            let mode = Some(text("PublishMode")).filter(|m| !m.is_empty()).unwrap_or_else(|| "ingress".into());
            port_text(Some(text("PublishedPort")).filter(|p| !p.is_empty()), &text("TargetPort"), &protocol, &mode)
        })
        .collect();
    insert_list(&mut fields, "ports", ports);
    if let Some(replicas) = at("/Mode/Replicated") {
        fields.insert("mode".into(), "replicated".into());
        fields.insert("replicas".into(), replicas.get("Replicas").map(json_text).unwrap_or_else(|| "1".into()));
    } else if at("/Mode/Global").is_some() {
        fields.insert("mode".into(), "global".into());
    } else if at("/Mode/ReplicatedJob").is_some() {
        fields.insert("mode".into(), "replicated-job".into());
    } else if at("/Mode/GlobalJob").is_some() {
        fields.insert("mode".into(), "global-job".into());
    }
    let endpoint_mode = at("/EndpointSpec/Mode").and_then(Json::as_str).unwrap_or("vip");
    fields.insert("endpoint_mode".into(), endpoint_mode.to_owned());
    let strings = |pointer: &str| -> Vec<String> {
        at(pointer).and_then(Json::as_array).into_iter().flatten().filter_map(Json::as_str).map(str::to_owned).collect()
    };
    insert_list(&mut fields, "placement.constraints", strings("/TaskTemplate/Placement/Constraints"));
    let preferences: Vec<String> = at("/TaskTemplate/Placement/Preferences")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|preference| preference.pointer("/Spread/SpreadDescriptor").and_then(Json::as_str))
        .map(|spread| format!("spread={spread}"))
        .collect();
    insert_list(&mut fields, "placement.preferences", preferences);
    if let Some(max) = at("/TaskTemplate/Placement/MaxReplicas").filter(|max| max.as_u64() != Some(0)) {
        fields.insert("placement.max_replicas_per_node".into(), json_text(max));
    }
    for (key, kind) in [("Limits", "limits"), ("Reservations", "reservations")] {
        let resources = |field: &str| at(&format!("/TaskTemplate/Resources/{key}/{field}")).and_then(Json::as_i64);
        if let Some(nanos) = resources("NanoCPUs").filter(|nanos| *nanos != 0) {
            fields.insert(format!("resources.{kind}.cpus"), format_cpus(nanos));
        }
        if let Some(bytes) = resources("MemoryBytes").filter(|bytes| *bytes != 0) {
            fields.insert(format!("resources.{kind}.memory"), format_bytes(bytes));
        }
    }
    for (pointer, section) in [("/UpdateConfig", "update_config"), ("/RollbackConfig", "rollback_config")] {
        let config = at(pointer);
        for (key, default) in UPDATE_DEFAULTS {
            let api_key = match key {
                "parallelism" => "Parallelism",
                "delay" => "Delay",
                "failure_action" => "FailureAction",
                "monitor" => "Monitor",
                "max_failure_ratio" => "MaxFailureRatio",
                _ => "Order",
            };
            let value = config.and_then(|config| config.get(api_key)).filter(|value| !value.is_null());
            let value = match key {
                "delay" | "monitor" => value.and_then(Json::as_i64).filter(|ns| *ns != 0).map(format_duration),
                "max_failure_ratio" => value.and_then(Json::as_f64).map(|ratio| ratio.to_string()),
                _ => value.map(json_text),
            };
            fields.insert(format!("{section}.{key}"), value.unwrap_or_else(|| default.into()));
        }
    }
    let restart = at("/TaskTemplate/RestartPolicy");
    for (key, default) in RESTART_DEFAULTS {
        let api_key = match key {
            "condition" => "Condition",
            "delay" => "Delay",
            "max_attempts" => "MaxAttempts",
            _ => "Window",
        };
        let value = restart.and_then(|restart| restart.get(api_key)).filter(|value| !value.is_null());
        let value = match key {
            "delay" | "window" => value.and_then(Json::as_i64).map(format_duration),
            _ => value.map(json_text),
        };
        fields.insert(format!("restart_policy.{key}"), value.unwrap_or_else(|| default.into()));
    }
    let grace = container("StopGracePeriod").and_then(Json::as_i64).map(format_duration);
    fields.insert("stop_grace_period".into(), grace.unwrap_or_else(|| STOP_GRACE_DEFAULT.into()));
    if let Some(health) = container("Healthcheck") {
        if let Some(test) = health.get("Test").and_then(Json::as_array).filter(|test| !test.is_empty()) {
            let items: Vec<String> = test.iter().filter_map(|item| item.as_str().map(str::to_owned)).collect();
            fields.insert("healthcheck.test".into(), json_list(&items));
        }
        for (api_key, key) in [("Interval", "interval"), ("Timeout", "timeout"), ("StartPeriod", "start_period")] {
            if let Some(ns) = health.get(api_key).and_then(Json::as_i64).filter(|ns| *ns != 0) {
                fields.insert(format!("healthcheck.{key}"), format_duration(ns));
            }
        }
        if let Some(retries) = health.get("Retries").and_then(Json::as_i64).filter(|retries| *retries != 0) {
            fields.insert("healthcheck.retries".into(), retries.to_string());
        }
    }
    for (key, field) in [("User", "user"), ("Dir", "working_dir"), ("Hostname", "hostname")] {
        if let Some(value) = container(key).and_then(Json::as_str).filter(|value| !value.is_empty()) {
            fields.insert(field.into(), value.to_owned());
        }
    }
    if container("ReadOnly").and_then(Json::as_bool) == Some(true) {
        fields.insert("read_only".into(), "true".into());
    }
    insert_list(&mut fields, "cap_add", strings("/TaskTemplate/ContainerSpec/CapabilityAdd"));
    insert_list(&mut fields, "cap_drop", strings("/TaskTemplate/ContainerSpec/CapabilityDrop"));
    fields
}

fn path_yaml<'a>(value: &'a Yaml, path: &[&str]) -> Option<&'a Yaml> {
    path.iter().try_fold(value, |value, key| value.get(*key)).filter(|value| !value.is_null())
}

/// A YAML scalar as text (`3`, `true`, `10s`).
fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(text) => Some(text.clone()),
        Yaml::Number(number) => Some(number.to_string()),
        Yaml::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn json_text(value: &Json) -> String {
    match value {
        Json::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_default()
}

/// `command:` / `entrypoint:` as the list the spec holds (a string is split
/// on white space, as the CLI's shell-word split does for plain words).
fn words(value: &Yaml) -> Option<String> {
    let items: Vec<String> = match value {
        Yaml::Sequence(list) => list.iter().filter_map(scalar).collect(),
        other => scalar(other)?.split_whitespace().map(str::to_owned).collect(),
    };
    (!items.is_empty()).then(|| json_list(&items))
}

fn sequence(value: Option<&Yaml>) -> impl Iterator<Item = &Yaml> {
    value.and_then(Yaml::as_sequence).into_iter().flatten()
}

/// `[K=V, K]` or `{K: V}`: (name, value); a bare name has no value.
fn key_values(value: Option<&Yaml>) -> Vec<(String, Option<String>)> {
    match value {
        Some(Yaml::Mapping(map)) => map.iter().filter_map(|(key, value)| Some((scalar(key)?, scalar(value)))).collect(),
        Some(Yaml::Sequence(list)) => list
            .iter()
            .filter_map(scalar)
            .map(|item| match item.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (item, None),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A list field, sorted (the order of mounts, ports and secrets does not
/// matter to the swarm); absent when empty.
fn insert_list(fields: &mut Fields, name: &str, mut items: Vec<String>) {
    items.sort();
    if !items.is_empty() {
        fields.insert(name.to_owned(), items.join(", "));
    }
}

fn desired_mount(stack: &StackFile, entry: &Yaml) -> Option<String> {
    let size = path_yaml(entry, &["tmpfs", "size"]).and_then(scalar).and_then(|size| parse_bytes(&size));
    let (kind, source, target, read_only) = match entry {
        Yaml::Mapping(_) => {
            let text = |key: &str| entry.get(key).and_then(scalar).unwrap_or_default();
            let read_only = entry.get("read_only").and_then(Yaml::as_bool).unwrap_or(false);
            (text("type"), text("source"), text("target"), read_only)
        }
        other => {
            let text = scalar(other)?;
            let parts: Vec<&str> = text.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [target] => ("", *target, ""),
                [source, target] => (*source, *target, ""),
                [source, target, mode, ..] => (*source, *target, *mode),
                [] => return None,
            };
            let bind = source.starts_with('/') || source.starts_with('.') || source.starts_with('~');
            let kind = if bind { "bind" } else { "volume" };
            (kind.to_owned(), source.to_owned(), target.to_owned(), mode.split(',').any(|mode| mode == "ro"))
        }
    };
    let source = match kind.as_str() {
        "volume" if !source.is_empty() => stack.object_name("volumes", &source),
        "bind" if !source.starts_with('/') => stack.base_dir.join(&source).display().to_string(),
        _ => source,
    };
    Some(mount_text(&kind, &source, &target, read_only, size.filter(|size| *size != 0)))
}

/// `volume s_data → /data`, `tmpfs → /tmp (16MiB)`, `... (read-only)`.
fn mount_text(kind: &str, source: &str, target: &str, read_only: bool, size: Option<i64>) -> String {
    let source = if source.is_empty() { String::new() } else { format!(" {source}") };
    let size = size.map(|size| format!(" ({})", format_bytes(size))).unwrap_or_default();
    let read_only = if read_only { " (read-only)" } else { "" };
    format!("{kind}{source} → {target}{size}{read_only}")
}

/// `ports:` entries: `8000`, `80:8000`, `80:8000/udp`, a range, or the long form.
fn desired_ports(entry: &Yaml) -> Vec<String> {
    if let Yaml::Mapping(_) = entry {
        let text = |key: &str| entry.get(key).and_then(scalar);
        let protocol = text("protocol").unwrap_or_else(|| "tcp".into());
        let mode = text("mode").unwrap_or_else(|| "ingress".into());
        return vec![port_text(text("published"), &text("target").unwrap_or_default(), &protocol, &mode)];
    }
    let Some(text) = scalar(entry) else { return Vec::new() };
    let (ports, protocol) = text.split_once('/').unwrap_or((&text, "tcp"));
    let parts: Vec<&str> = ports.split(':').collect();
    let (published, target) = match parts.as_slice() {
        [target] => (None, *target),
        [published, target] => (Some(*published), *target),
        [.., published, target] => (Some(*published), *target),
        [] => return Vec::new(),
    };
    vec![port_text(published.map(str::to_owned), target, protocol, "ingress")]
}

fn port_text(published: Option<String>, target: &str, protocol: &str, mode: &str) -> String {
    match published {
        Some(published) => format!("{published}:{target}/{protocol} ({mode})"),
        None => format!("{target}/{protocol} ({mode})"),
    }
}

/// A compose duration (`10s`, `1m30s`, `500ms`) as the spec's duration reads.
fn normal_duration(text: &str) -> String {
    match xtask::settings::parse_duration(text) {
        Ok(duration) => format_duration(duration.as_nanos() as i64),
        Err(_) => text.to_owned(),
    }
}

/// Nanoseconds as Go prints a duration: `1m30s`, `10s`, `500ms`, `0s`.
pub fn format_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos % 1_000_000_000 != 0 {
        return format!("{}ms", nanos / 1_000_000);
    }
    let seconds = nanos / 1_000_000_000;
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    if seconds > 0 {
        text.push_str(&format!("{seconds}s"));
    }
    text
}

fn format_cpus(nanos: i64) -> String {
    let text = format!("{:.3}", nanos as f64 / 1e9);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `50M`, `1g`, `512MiB`, `1024` (bytes), as the CLI reads memory sizes
/// (binary multiples).
fn parse_bytes(text: &str) -> Option<i64> {
    let text = text.trim().to_ascii_lowercase();
    let text = text.trim_end_matches('b').trim_end_matches('i');
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(index) => (text[..index].trim(), &text[index..]),
        None => (text, ""),
    };
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    let number: f64 = number.parse().ok()?;
    Some((number * (1u64 << shift) as f64) as i64)
}

fn format_bytes(bytes: i64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack_file<'a>(file: &'a Yaml, lookup: &'a dyn Fn(&str) -> Option<String>) -> StackFile<'a> {
        StackFile { stack: "s", file, base_dir: Path::new("/p"), lookup }
    }

    /// The app of the project's single-node stack file (the one whose spec was
    /// captured) against the spec the CLI made of
    /// it (docker 20.10, `docker service inspect`): no field differs.
    #[test]
    fn the_projects_app_agrees_with_the_spec_the_cli_made_of_it() {
        let env = |name: &str| match name {
            "ECR_REGISTRY" => Some("127.0.0.1:1".to_owned()),
            "APP_VERSION" => Some("zz".to_owned()),
            _ => None,
        };
        let file = crate::stackfile::interpolated(
            "stack.single-node.yml",
            include_str!("../../../stack.single-node.yml"),
            &env,
        )
        .expect("stack.single-node.yml interpolates");
        let spec: Json = serde_json::from_str(LIVE_APP).unwrap();
        let networks = BTreeMap::from([("zeyy8bvouc4gw43fdt8zi9s2p".to_owned(), "s_net".to_owned())]);
        let mut live = live(&spec, &networks);
        assert_eq!(live.remove("image.digest").as_deref(), Some("sha256:0123"));
        let desired = desired(&stack_file(&file, &env), &file["services"]["app"]);
        assert_eq!(desired, live);
        assert_eq!(desired["update_config.delay"], "10s");
        assert_eq!(desired["rollback_config.delay"], "0s");
        assert_eq!(desired["mounts"], "volume s_data → /data, volume s_public → /public (read-only)");
        assert_eq!((desired["read_only"].as_str(), desired["cap_drop"].as_str()), ("true", "ALL"));
        assert!(!desired.contains_key("cap_add"), "{:?}", desired.get("cap_add"));
        // The app publishes nothing (the edge does), and is reached by its tasks' addresses.
        assert!(!desired.contains_key("ports"), "{:?}", desired.get("ports"));
        assert_eq!(desired["endpoint_mode"], "dnsrr");
    }

    const LIVE_APP: &str = r#"{"Name":"s_app","Labels":{"com.docker.stack.image":"127.0.0.1:1/todobackend:zz","com.docker.stack.namespace":"s"},
      "TaskTemplate":{"ContainerSpec":{"Image":"127.0.0.1:1/todobackend:zz@sha256:0123","Labels":{"com.docker.stack.namespace":"s"},
      "Args":["serve"],"Privileges":{"CredentialSpec":null,"SELinuxContext":null,"NoNewPrivileges":false},"ReadOnly":true,
      "Mounts":[{"Type":"volume","Source":"s_public","Target":"/public","ReadOnly":true,"VolumeOptions":{"Labels":{"com.docker.stack.namespace":"s"}}},
      {"Type":"volume","Source":"s_data","Target":"/data","VolumeOptions":{"Labels":{"com.docker.stack.namespace":"s"}}}],
      "StopGracePeriod":35000000000,"Healthcheck":{"Test":["CMD","/todobackend","healthcheck"],"Interval":5000000000,"Timeout":3000000000,"StartPeriod":5000000000,"Retries":3},
      "DNSConfig":{},"Isolation":"default","CapabilityDrop":["ALL"]},
      "Resources":{},"RestartPolicy":{"Condition":"any","Delay":5000000000,"MaxAttempts":0},"Placement":{"Constraints":["node.labels.todobackend.data == true"]},
      "Networks":[{"Target":"zeyy8bvouc4gw43fdt8zi9s2p","Aliases":["app"]}],"ForceUpdate":0,"Runtime":"container"},
      "Mode":{"Replicated":{"Replicas":2}},
      "UpdateConfig":{"Parallelism":1,"Delay":10000000000,"FailureAction":"rollback","Monitor":30000000000,"MaxFailureRatio":0,"Order":"start-first"},
      "RollbackConfig":{"Parallelism":1,"FailureAction":"pause","Monitor":30000000000,"MaxFailureRatio":0,"Order":"start-first"},
      "EndpointSpec":{"Mode":"dnsrr"}}"#;

    /// The database of the project's PostgreSQL stack file against the spec
    /// the CLI made of it (docker CLI 28 on engine 20.10): its tmpfs mounts,
    /// read-only root and capabilities agree, so a deploy shows no drift.
    /// (Captured before the database had TLS; its arguments, TLS secrets and
    /// pg_hba config were added in the engine's own shape, as the captured
    /// password secret shows it. The deploy tests check the real thing:
    /// `plan --exit-code` is 0 right after a deploy of this file.)
    #[test]
    fn the_projects_database_agrees_with_the_spec_the_cli_made_of_it() {
        let env = |name: &str| match name {
            "ECR_REGISTRY" => Some("127.0.0.1:1".to_owned()),
            "APP_VERSION" => Some("zz".to_owned()),
            _ => None,
        };
        let file = crate::stackfile::interpolated("stack.yml", include_str!("../../../stack.yml"), &env)
            .expect("stack.yml interpolates");
        let spec: Json = serde_json::from_str(LIVE_DB).unwrap();
        let networks = BTreeMap::from([("1mcre7lusswhmoolvtnuru1jv".to_owned(), "s_net".to_owned())]);
        let desired = desired(&stack_file(&file, &env), &file["services"]["db"]);
        assert_eq!(desired, live(&spec, &networks));
        assert_eq!(desired["read_only"], "true");
        assert_eq!(desired["cap_drop"], "ALL");
        assert_eq!(desired["cap_add"], "CAP_CHOWN, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_SETGID, CAP_SETUID");
        assert_eq!(
            desired["mounts"],
            "tmpfs → /tmp (16MiB), tmpfs → /var/run/postgresql (1MiB), volume s_db → /var/lib/postgresql/data"
        );
    }

    const LIVE_DB: &str = r#"{"Name":"s_db","Labels":{"com.docker.stack.image":"postgres:16-alpine","com.docker.stack.namespace":"s"},
      "TaskTemplate":{"ContainerSpec":{"Image":"postgres:16-alpine","Labels":{"com.docker.stack.namespace":"s"},
      "Args":["postgres","-c","ssl=on","-c","ssl_cert_file=/run/secrets/db_tls_cert.pem","-c","ssl_key_file=/run/secrets/db_tls_key.pem","-c","hba_file=/etc/todobackend/pg_hba.conf"],
      "Env":["PGDATA=/var/lib/postgresql/data/pgdata","POSTGRES_DB=todobackend","POSTGRES_PASSWORD_FILE=/run/secrets/todobackend_db_password","POSTGRES_USER=todobackend"],
      "Privileges":{"CredentialSpec":null,"SELinuxContext":null,"NoNewPrivileges":false},"StopSignal":"SIGINT","ReadOnly":true,
      "Mounts":[{"Type":"volume","Source":"s_db","Target":"/var/lib/postgresql/data","VolumeOptions":{"Labels":{"com.docker.stack.namespace":"s"}}},
      {"Type":"tmpfs","Target":"/var/run/postgresql","TmpfsOptions":{"SizeBytes":1048576}},{"Type":"tmpfs","Target":"/tmp","TmpfsOptions":{"SizeBytes":16777216}}],
      "StopGracePeriod":60000000000,"Healthcheck":{"Test":["CMD","pg_isready","--username","todobackend","--dbname","todobackend"],"Interval":5000000000,"Timeout":3000000000,"StartPeriod":30000000000,"Retries":5},
      "DNSConfig":{},"Secrets":[{"File":{"Name":"todobackend_db_password","UID":"0","GID":"0","Mode":292},"SecretID":"1gx8385v3juzzn1l7ajv5we9w","SecretName":"todobackend_db_password"},
      {"File":{"Name":"db_tls_cert.pem","UID":"0","GID":"0","Mode":292},"SecretID":"5k2v1vq0m3a8w7c6d2xg9h4tz","SecretName":"todobackend_db_tls_cert"},
      {"File":{"Name":"db_tls_key.pem","UID":"70","GID":"0","Mode":256},"SecretID":"8p3n6r1s0t2u4v5w7x9y1z3ab","SecretName":"todobackend_db_tls_key"}],
      "Configs":[{"File":{"Name":"/etc/todobackend/pg_hba.conf","UID":"0","GID":"0","Mode":292},"ConfigID":"3c4d5e6f7g8h9i0j1k2l3m4n5","ConfigName":"todobackend_db_hba_0"}],
      "Isolation":"default","CapabilityAdd":["CAP_CHOWN","CAP_DAC_READ_SEARCH","CAP_FOWNER","CAP_SETGID","CAP_SETUID"],"CapabilityDrop":["ALL"]},
      "Resources":{},"RestartPolicy":{"Condition":"any","Delay":5000000000,"MaxAttempts":0},"Placement":{"Constraints":["node.labels.todobackend.data == true"]},
      "Networks":[{"Target":"1mcre7lusswhmoolvtnuru1jv","Aliases":["db"]}],"ForceUpdate":0,"Runtime":"container"},
      "Mode":{"Replicated":{"Replicas":1}},
      "UpdateConfig":{"Parallelism":1,"FailureAction":"rollback","Monitor":5000000000,"MaxFailureRatio":0,"Order":"stop-first"},
      "RollbackConfig":{"Parallelism":1,"FailureAction":"pause","Monitor":5000000000,"MaxFailureRatio":0,"Order":"stop-first"},
      "EndpointSpec":{"Mode":"dnsrr"}}"#;

    #[test]
    fn capabilities_are_read_as_the_cli_puts_them_in_the_spec() {
        let caps = |list: &[&str]| list.iter().map(|cap| (*cap).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            effective_capabilities(&caps(&["setuid", " CAP_CHOWN", "chown"]), &caps(&["all", "NET_RAW"])),
            (caps(&["CAP_CHOWN", "CAP_SETUID"]), caps(&["ALL"]))
        );
        // Added and dropped: added only.
        assert_eq!(
            effective_capabilities(&caps(&["NET_ADMIN"]), &caps(&["net_admin", "MKNOD"])),
            (caps(&["CAP_NET_ADMIN"]), caps(&["CAP_MKNOD"]))
        );
        assert_eq!(effective_capabilities(&caps(&["ALL", "CHOWN"]), &[]), (caps(&["ALL"]), caps(&[])));
    }

    /// A service deployed before the stack files were hardened (no
    /// read_only, no capability lists) against the hardened file: the plan
    /// shows the three keys, and a spec without them against a file without
    /// them shows nothing (no drift from older history entries).
    #[test]
    fn read_only_and_capabilities_are_fields_only_when_set() {
        let file: Yaml = serde_yaml::from_str(
            "services:\n  a:\n    image: r/a:1\n    read_only: true\n    cap_drop: [ALL]\n    cap_add: [CHOWN]\n  b:\n    image: r/b:1\n    read_only: false\n",
        )
        .unwrap();
        let none = |_: &str| None;
        let hardened = desired(&stack_file(&file, &none), &file["services"]["a"]);
        let plain = desired(&stack_file(&file, &none), &file["services"]["b"]);
        assert_eq!(
            (hardened["read_only"].as_str(), hardened["cap_drop"].as_str(), hardened["cap_add"].as_str()),
            ("true", "ALL", "CAP_CHOWN")
        );
        for key in ["read_only", "cap_drop", "cap_add"] {
            assert!(!plain.contains_key(key), "{key}: {plain:?}");
        }
        let old_spec: Json =
            serde_json::from_str(r#"{"TaskTemplate":{"ContainerSpec":{"Image":"r/b:1","ReadOnly":false}}}"#).unwrap();
        let live = live(&old_spec, &BTreeMap::new());
        for key in ["read_only", "cap_drop", "cap_add"] {
            assert!(!live.contains_key(key), "{key}: {live:?}");
        }
    }

    #[test]
    fn fields_the_file_leaves_out_take_the_engines_defaults() {
        let file: Yaml = serde_yaml::from_str(
            "services:\n  job:\n    image: r/j:1\n    deploy:\n      update_config:\n        failure_action: continue\n",
        )
        .unwrap();
        let none = |_: &str| None;
        let desired = desired(&stack_file(&file, &none), &file["services"]["job"]);
        let spec: Json = serde_json::from_str(
            r#"{"TaskTemplate":{"ContainerSpec":{"Image":"r/j:1"},"Networks":[{"Target":"n1"}]},"Mode":{"Replicated":{"Replicas":1}},
               "UpdateConfig":{"Parallelism":1,"FailureAction":"continue","Monitor":5000000000,"MaxFailureRatio":0,"Order":"stop-first"},
               "RollbackConfig":{"Parallelism":1,"FailureAction":"pause","Monitor":5000000000,"MaxFailureRatio":0,"Order":"stop-first"},
               "EndpointSpec":{"Mode":"vip"}}"#,
        )
        .unwrap();
        let live = live(&spec, &BTreeMap::from([("n1".to_owned(), "s_default".to_owned())]));
        assert_eq!(desired, live);
    }

    #[test]
    fn environment_labels_secrets_and_resources_are_read_in_every_form() {
        let file: Yaml = serde_yaml::from_str(
            "services:\n  a:\n    image: r/a:1\n    environment:\n      FROM_SHELL:\n      SET: x\n    labels: [c=1]\n    secrets:\n      - db\n      - source: tok\n        target: /t\n    deploy:\n      labels: {team: x}\n      resources:\n        limits: {cpus: '0.50', memory: 64M}\nsecrets:\n  db: {external: true, name: db_v2}\n  tok: {file: ./t}\n",
        )
        .unwrap();
        let lookup = |name: &str| (name == "FROM_SHELL").then(|| "s".to_owned());
        let fields = desired(&stack_file(&file, &lookup), &file["services"]["a"]);
        assert_eq!(fields["environment.FROM_SHELL"], "s");
        assert_eq!(fields["environment.SET"], "x");
        assert_eq!(fields["container_labels.c"], "1");
        assert_eq!(fields["labels.team"], "x");
        assert_eq!(fields["secrets"], "db_v2 → db, s_tok → /t");
        assert_eq!(fields["resources.limits.cpus"], "0.5");
        assert_eq!(fields["resources.limits.memory"], "64MiB");
        assert_eq!(fields["networks"], "s_default");
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        assert_eq!(format_duration(90_000_000_000), "1m30s");
        assert_eq!(format_duration(500_000_000), "500ms");
        assert_eq!(format_duration(0), "0s");
        assert_eq!(normal_duration("1m30s"), "1m30s");
        assert_eq!(normal_duration("90s"), "1m30s");
    }

    #[test]
    fn secret_looking_names_are_told() {
        for name in ["DB_PASSWORD", "api_token", "SECRET", "AWS_SECRET_ACCESS_KEY", "DATABASE_URL"] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["APP_REPLICAS", "TODOBACKEND_LISTEN", "RUST_LOG"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }
}
