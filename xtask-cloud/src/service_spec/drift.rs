//! Drift: a service changed outside the xtask (`docker service update
//! --env-add ...`) since the last deploy. Each history entry records, per
//! service, a digest of the spec as deployed and one of each field (digests
//! only: the history never holds a value, secret or not); `status` and
//! `plan` compare the live specs with the newest entry that has them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::fields::Fields;

/// A service's spec as a deploy left it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpecRecord {
    /// `sha256:` of every field and value.
    pub digest: String,
    /// Field → the first 16 hex digits of the SHA-256 of its value.
    pub fields: BTreeMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The record of one service's fields.
pub fn record(fields: &Fields) -> SpecRecord {
    let mut whole = Sha256::new();
    let mut hashes = BTreeMap::new();
    for (field, value) in fields {
        whole.update(field.as_bytes());
        whole.update([0]);
        whole.update(value.as_bytes());
        whole.update([0]);
        let one = Sha256::digest(format!("{field}\0{value}").as_bytes());
        hashes.insert(field.clone(), hex(&one)[..16].to_owned());
    }
    SpecRecord { digest: format!("sha256:{}", hex(&whole.finalize())), fields: hashes }
}

/// The records of every live service.
pub fn records(live: &BTreeMap<String, Fields>) -> BTreeMap<String, SpecRecord> {
    live.iter().map(|(name, fields)| (name.clone(), record(fields))).collect()
}

/// The records of the stack's services as the swarm runs them now, for the
/// history entry of a run that changed the stack; none (with a warning)
/// when they cannot be read.
pub fn as_deployed(ctx: &xtask::ctx::Ctx, docker: &bollard::Docker, stack: &str) -> BTreeMap<String, SpecRecord> {
    match super::live_services(ctx, docker, stack) {
        Ok(live) => records(&live),
        Err(err) => {
            ctx.warn(&format!("cannot read the services' specs for the history (drift): {err:#}"));
            BTreeMap::new()
        }
    }
}

/// Per service, the fields the live spec has changed since `recorded`; a
/// service the record does not have is `(service added)`, one the swarm no
/// longer runs `(service removed)`.
pub fn drifted(
    recorded: &BTreeMap<String, SpecRecord>,
    live: &BTreeMap<String, Fields>,
) -> BTreeMap<String, Vec<String>> {
    let mut drifted = BTreeMap::new();
    let names: BTreeSet<&String> = recorded.keys().chain(live.keys()).collect();
    for name in names {
        let changed = match (recorded.get(name), live.get(name)) {
            (Some(was), Some(fields)) => {
                let now = record(fields);
                if now.digest == was.digest {
                    continue;
                }
                let keys: BTreeSet<&String> = was.fields.keys().chain(now.fields.keys()).collect();
                keys.into_iter().filter(|key| was.fields.get(*key) != now.fields.get(*key)).cloned().collect()
            }
            (None, Some(_)) => vec!["(service added)".to_owned()],
            (Some(_), None) => vec!["(service removed)".to_owned()],
            (None, None) => continue,
        };
        drifted.insert(name.clone(), changed);
    }
    drifted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
    }

    #[test]
    fn a_field_changed_added_or_removed_since_the_record_is_drift() {
        let deployed = BTreeMap::from([
            ("app".to_owned(), fields(&[("replicas", "2"), ("environment.A", "1")])),
            ("job".to_owned(), fields(&[("image", "r:1")])),
        ]);
        let recorded = records(&deployed);
        assert!(drifted(&recorded, &deployed).is_empty());
        let mut live = deployed.clone();
        live.get_mut("app").unwrap().insert("environment.DRIFT".into(), "1".into());
        live.get_mut("app").unwrap().insert("replicas".into(), "3".into());
        live.remove("job");
        live.insert("extra".into(), fields(&[]));
        let found = drifted(&recorded, &live);
        assert_eq!(found["app"], ["environment.DRIFT", "replicas"]);
        assert_eq!(found["job"], ["(service removed)"]);
        assert_eq!(found["extra"], ["(service added)"]);
    }

    #[test]
    fn a_record_holds_no_value() {
        let record = record(&fields(&[("environment.DB_PASSWORD", "hunter2")]));
        let json = serde_json::to_string(&record).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
    }
}
