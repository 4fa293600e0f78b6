//! The plan of a deploy: what it would change, service by service and field
//! by field, against what the swarm runs now (`plan`, and the plan at the top
//! of `deploy --dry-run` and `rollback --dry-run`). Values of secret-looking
//! environment variables are never shown. A field the swarm runs differently
//! from the last recorded deploy was changed outside the xtask (drift): the
//! plan says the deploy reverts it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Result;
use serde::Serialize;
use xtask::ctx::Ctx;

use super::drift::{self, SpecRecord};
use super::fields::{self, Fields};
use crate::stackfile;

/// What one field of one service does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub field: String,
    /// `None`: the field is added (or, for `new`, removed). Masked values
    /// read `(sensitive)`.
    pub old: Option<String>,
    pub new: Option<String>,
    /// The live value differs from what the last deploy recorded: changed
    /// outside the xtask, and this deploy reverts it.
    pub drift: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    /// In the swarm, not in the stack file: kept unless `deploy --prune`.
    Remove,
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePlan {
    pub name: String,
    pub action: Action,
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub stack: String,
    pub stack_file: String,
    pub services: Vec<ServicePlan>,
    /// The images whose digest the registry did not resolve: a tag pushed
    /// again would not show.
    pub unresolved_digests: Vec<String>,
    /// Whether anything would change (removals included).
    pub changes: bool,
}

impl Plan {
    #[cfg(test)]
    fn removed(&self) -> Vec<&str> {
        self.services
            .iter()
            .filter(|service| service.action == Action::Remove)
            .map(|service| service.name.as_str())
            .collect()
    }

    fn count(&self, action: Action) -> usize {
        self.services.iter().filter(|service| service.action == action).count()
    }

    /// `Plan: 1 to add, 1 to change, 0 to remove, 2 unchanged.`
    pub fn summary(&self) -> String {
        format!(
            "Plan: {} to add, {} to change, {} to remove, {} unchanged.",
            self.count(Action::Create),
            self.count(Action::Update),
            self.count(Action::Remove),
            self.count(Action::Unchanged)
        )
    }

    /// Readable like `terraform plan`: a block per service that changes,
    /// `~ field: old → new`, then the summary.
    pub fn render(&self, prune: bool) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.changes {
            lines.push(format!("No changes: stack {} runs what {} describes.", self.stack, self.stack_file));
        } else {
            lines.push(format!("Stack {} against {}:", self.stack, self.stack_file));
        }
        for service in &self.services {
            match service.action {
                Action::Unchanged => continue,
                Action::Create => lines.push(format!("  + {} (new service)", service.name)),
                Action::Update => lines.push(format!("  ~ {}", service.name)),
                Action::Remove if prune => {
                    lines.push(format!("  - {} (not in {}: removed, --prune)", service.name, self.stack_file))
                }
                Action::Remove => lines.push(format!(
                    "  - {} (not in {}: kept, `deploy --prune` removes it)",
                    service.name, self.stack_file
                )),
            }
            for change in &service.changes {
                let drift = if change.drift { "   (changed outside the xtask: reverted)" } else { "" };
                let line = match (&change.old, &change.new) {
                    (Some(old), Some(new)) => format!("      ~ {}: {old} → {new}{drift}", change.field),
                    (None, Some(new)) => format!("      + {}: {new}{drift}", change.field),
                    (Some(old), None) => format!("      - {}: {old}{drift}", change.field),
                    (None, None) => continue,
                };
                lines.push(line);
            }
        }
        if !self.unresolved_digests.is_empty() {
            lines.push(format!(
                "  (the registry did not resolve {}: compared by tag only)",
                self.unresolved_digests.join(", ")
            ));
        }
        lines.push(self.summary());
        lines
    }
}

/// Compare the desired services with the live ones. `drifted` names, per
/// live service, the fields changed since the last recorded deploy.
pub fn compare(
    stack: &str,
    stack_file: &str,
    desired: &BTreeMap<String, Fields>,
    live: &BTreeMap<String, Fields>,
    drifted: &BTreeMap<String, BTreeSet<String>>,
    unresolved_digests: Vec<String>,
) -> Plan {
    let names: BTreeSet<&String> = desired.keys().chain(live.keys()).collect();
    let no_drift = BTreeSet::new();
    let services: Vec<ServicePlan> = names
        .into_iter()
        .map(|name| {
            let drifted = drifted.get(name).unwrap_or(&no_drift);
            match (desired.get(name), live.get(name)) {
                (Some(want), None) => ServicePlan {
                    name: name.clone(),
                    action: Action::Create,
                    changes: diff(&Fields::new(), want, drifted),
                },
                (None, Some(_)) => ServicePlan { name: name.clone(), action: Action::Remove, changes: Vec::new() },
                (Some(want), Some(have)) => {
                    let mut have = have.clone();
                    // A digest the registry did not give cannot be compared.
                    if !want.contains_key("image.digest") {
                        have.remove("image.digest");
                    }
                    let changes = diff(&have, want, drifted);
                    let action = if changes.is_empty() { Action::Unchanged } else { Action::Update };
                    ServicePlan { name: name.clone(), action, changes }
                }
                (None, None) => unreachable!("a name comes from one of the two maps"),
            }
        })
        .collect();
    let changes = services.iter().any(|service| service.action != Action::Unchanged);
    Plan { stack: stack.to_owned(), stack_file: stack_file.to_owned(), services, unresolved_digests, changes }
}

/// The fields that differ, secret-looking values masked.
fn diff(have: &Fields, want: &Fields, drifted: &BTreeSet<String>) -> Vec<Change> {
    let keys: BTreeSet<&String> = have.keys().chain(want.keys()).collect();
    keys.into_iter()
        .filter(|key| have.get(*key) != want.get(*key))
        .map(|key| {
            let sensitive = key.strip_prefix("environment.").is_some_and(fields::is_secret_name);
            let show = |value: Option<&String>, changed: &str| {
                value.map(|value| if sensitive { format!("(sensitive{changed})") } else { value.clone() })
            };
            let (old, new) = (have.get(key), want.get(key));
            let changed = if old.is_some() && new.is_some() { ", changed" } else { "" };
            Change { field: key.clone(), old: show(old, ""), new: show(new, changed), drift: drifted.contains(key) }
        })
        .collect()
}

/// The plan of deploying the stack file as it is now (APP_VERSION and the
/// other variables as the shell has them); `recorded`, the specs as the last
/// deploy left them, tells the drift.
pub fn make(
    ctx: &Ctx,
    docker: &bollard::Docker,
    source: &stackfile::Source,
    services: &[stackfile::ServiceDef],
    digests: Option<&HashMap<String, String>>,
    recorded: Option<&BTreeMap<String, SpecRecord>>,
) -> Result<Plan> {
    let stack = &ctx.settings.stack;
    let (digests, unresolved) = match digests {
        Some(known) => {
            let unresolved = known
                .iter()
                .filter(|(_, digest)| !digest.starts_with("sha256:"))
                .map(|(image, _)| image.clone())
                .collect();
            (known.clone(), unresolved)
        }
        None => super::resolve_digests(ctx, docker, services),
    };
    let desired = super::desired_services(ctx, source, &digests)?;
    let live = super::live_services(ctx, docker, stack)?;
    let drifted = recorded.map(|recorded| drift::drifted(recorded, &live)).unwrap_or_default();
    let drifted = drifted.into_iter().map(|(service, fields)| (service, fields.into_iter().collect())).collect();
    let mut unresolved: Vec<String> = unresolved;
    unresolved.sort();
    Ok(compare(stack, &source.shown, &desired, &live, &drifted, unresolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
    }

    #[test]
    fn changed_added_and_removed_services_and_fields_are_listed() {
        let live = BTreeMap::from([
            ("app".to_owned(), fields(&[("replicas", "1"), ("environment.DB_PASSWORD", "hunter2"), ("image", "r:a")])),
            ("old".to_owned(), fields(&[("image", "r:a")])),
            ("same".to_owned(), fields(&[("image", "r:a"), ("image.digest", "sha256:1")])),
        ]);
        let desired = BTreeMap::from([
            (
                "app".to_owned(),
                fields(&[("replicas", "3"), ("environment.DB_PASSWORD", "swordfish"), ("image", "r:a")]),
            ),
            ("new".to_owned(), fields(&[("image", "r:b")])),
            ("same".to_owned(), fields(&[("image", "r:a")])),
        ]);
        let drifted = BTreeMap::from([("app".to_owned(), BTreeSet::from(["replicas".to_owned()]))]);
        let plan = compare("s", "stack.yml", &desired, &live, &drifted, vec![]);
        let actions: Vec<(&str, Action)> = plan.services.iter().map(|s| (s.name.as_str(), s.action)).collect();
        assert_eq!(
            actions,
            [("app", Action::Update), ("new", Action::Create), ("old", Action::Remove), ("same", Action::Unchanged)]
        );
        assert_eq!(plan.removed(), ["old"]);
        let text = plan.render(false).join("\n");
        assert!(text.contains("~ replicas: 1 → 3   (changed outside the xtask: reverted)"), "{text}");
        assert!(text.contains("~ environment.DB_PASSWORD: (sensitive) → (sensitive, changed)"), "{text}");
        assert!(!text.contains("hunter2") && !text.contains("swordfish"), "{text}");
        assert!(text.contains("- old (not in stack.yml: kept"), "{text}");
        assert!(text.ends_with("Plan: 1 to add, 1 to change, 1 to remove, 1 unchanged."), "{text}");
        let json = serde_json::to_string(&plan).unwrap();
        assert!(!json.contains("hunter2") && !json.contains("swordfish"), "{json}");
    }

    #[test]
    fn the_same_services_make_no_changes() {
        let both = BTreeMap::from([("app".to_owned(), fields(&[("replicas", "1")]))]);
        let plan = compare("s", "stack.yml", &both, &both, &BTreeMap::new(), vec![]);
        assert!(!plan.changes);
        assert_eq!(plan.render(false)[0], "No changes: stack s runs what stack.yml describes.");
    }
}
