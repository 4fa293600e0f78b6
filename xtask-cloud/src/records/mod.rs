//! Records kept on the swarm, so that every operator and every CI run sees
//! the same ones: each record is a Docker config whose data is the record as
//! JSON, labelled with its kind and, as the label's value, its stack. The
//! deploy lock (`lock`) and the history's entries (`history`) are such
//! records; their labels and names are defined here, once, for the tests too.
//!
//! A config cannot change, and the swarm refuses to create one whose name
//! exists: a record is written once, and creating one by a fixed name is
//! atomic for everyone who talks to the swarm.
//!
//! Errors from the engine come back without a context of their own: each
//! caller says what it was doing (taking the lock, recording a deploy).

pub mod history;
pub mod lock;

use std::collections::HashMap;
use std::time::SystemTime;

use anyhow::{Context, Result};
use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::ConfigSpec;
use bollard::query_parameters::ListConfigsOptions;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The label on the deploy lock's config, with the stack as its value.
pub const LOCK_LABEL: &str = "com.todobackend.lock";
/// The label on each history entry's config, with the stack as its value.
pub const HISTORY_LABEL: &str = "com.todobackend.history";

/// The name of `stack`'s deploy lock: one config, whose name is the lock.
pub fn lock_name(stack: &str) -> String {
    format!("{stack}_deploy_lock")
}

/// The name of a history entry of `stack` written `at`:
/// `<stack>_history_<UTC time>_<nanoseconds>`, so that the names sort in the
/// order the entries were written, also within one second.
pub fn history_name(stack: &str, at: SystemTime) -> String {
    let nanos = at.duration_since(SystemTime::UNIX_EPOCH).map(|since| since.subsec_nanos()).unwrap_or(0);
    format!("{stack}_history_{}_{nanos:09}", crate::clock::compact(at))
}

/// What creating a record did.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// The config exists now, with this ID.
    Id(String),
    /// A config of that name exists already; nothing was written.
    NameTaken,
}

/// What removing a record did.
#[derive(Debug, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// There was no such config (any more).
    AlreadyGone,
}

/// Create the config `name` of `stack` holding `record`, marked with `label`.
pub async fn create<T: Serialize>(
    docker: &Docker,
    label: &str,
    stack: &str,
    name: &str,
    record: &T,
) -> Result<Created> {
    let json = serde_json::to_string(record).with_context(|| format!("cannot encode the record {name}"))?;
    let spec = ConfigSpec {
        name: Some(name.to_owned()),
        labels: Some(HashMap::from([(label.to_owned(), stack.to_owned())])),
        data: Some(aws_smithy_types::base64::encode(json)),
        ..Default::default()
    };
    match docker.create_config(spec).await {
        Ok(created) => Ok(Created::Id(created.id)),
        Err(EngineError::DockerResponseServerError { status_code: 409, .. }) => Ok(Created::NameTaken),
        Err(err) => Err(err.into()),
    }
}

/// The config `name` (its ID) and its record, `None` where the data is not
/// such a record; `Ok(None)` when there is no such config.
pub async fn read<T: DeserializeOwned>(docker: &Docker, name: &str) -> Result<Option<(String, Option<T>)>> {
    match docker.inspect_config(name).await {
        Ok(config) => {
            let id = config.id.unwrap_or_else(|| name.to_owned());
            Ok(Some((id, decoded(config.spec))))
        }
        Err(EngineError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// The records marked `label` of `stack`, with their config IDs, by name,
/// last first; and the names of the configs under the label that hold no
/// such record (someone else's, or damaged), which are left out, not fatal:
/// the caller says so.
pub async fn list<T: DeserializeOwned>(docker: &Docker, label: &str, stack: &str) -> Result<Listed<T>> {
    let filters = HashMap::from([("label".to_owned(), vec![format!("{label}={stack}")])]);
    let mut configs = docker.list_configs(Some(ListConfigsOptions { filters: Some(filters) })).await?;
    let name = |config: &bollard::models::Config| config.spec.as_ref().and_then(|spec| spec.name.clone());
    configs.sort_by_key(|config| std::cmp::Reverse(name(config)));
    let mut listed = Listed { records: Vec::new(), unreadable: Vec::new() };
    for config in configs {
        let id = config.id.clone().unwrap_or_default();
        let shown = name(&config).unwrap_or_else(|| id.clone());
        match decoded(config.spec) {
            Some(record) => listed.records.push((id, record)),
            None => listed.unreadable.push(shown),
        }
    }
    Ok(listed)
}

/// What [`list`] found.
pub struct Listed<T> {
    /// (config ID, record), last first.
    pub records: Vec<(String, T)>,
    /// The names of the configs that hold no such record.
    pub unreadable: Vec<String>,
}

/// Remove the config `id` (by ID: a config of the same name made since is
/// another's, and stays).
pub async fn remove(docker: &Docker, id: &str) -> Result<Removal> {
    match docker.delete_config(id).await {
        Ok(()) => Ok(Removal::Removed),
        Err(EngineError::DockerResponseServerError { status_code: 404, .. }) => Ok(Removal::AlreadyGone),
        Err(err) => Err(err.into()),
    }
}

/// The record a config's data holds, if it is one.
fn decoded<T: DeserializeOwned>(spec: Option<bollard::models::ConfigSpec>) -> Option<T> {
    let data = spec.and_then(|spec| spec.data).unwrap_or_default();
    let bytes = aws_smithy_types::base64::decode(&data).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_lock_is_named_by_its_stack_and_history_names_sort_as_written() {
        assert_eq!(lock_name("todobackend"), "todobackend_deploy_lock");
        let second = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let names = [
            history_name("s", second + Duration::from_nanos(5)),
            history_name("s", second + Duration::from_nanos(400_000_000)),
            history_name("s", second + Duration::from_secs(1)),
        ];
        assert!(names.iter().all(|name| name.starts_with("s_history_")), "{names:?}");
        assert!(names.is_sorted(), "{names:?}");
    }

    #[test]
    fn a_config_holds_its_record_as_base64_json_and_anything_else_is_no_record() {
        let spec = |data: &str| Some(ConfigSpec { data: Some(data.to_owned()), ..Default::default() });
        let json = aws_smithy_types::base64::encode(r#"{"version":"1"}"#);
        let record: Option<serde_json::Value> = decoded(spec(&json));
        assert_eq!(record.unwrap()["version"], "1");
        assert_eq!(decoded::<serde_json::Value>(spec(&aws_smithy_types::base64::encode("not json"))), None);
        assert_eq!(decoded::<serde_json::Value>(spec("%%% not base64")), None);
        assert_eq!(decoded::<serde_json::Value>(None), None);
    }
}
