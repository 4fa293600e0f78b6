//! The release image's software bill of materials: CycloneDX 1.5 JSON, made
//! from the lock file. `build` writes it beside the service's binary and packs
//! it into an image of its own, tagged `<version>.sbom` ([`tag`]), that
//! `publish` pushes beside the release image; `check_tag` keeps that tag from
//! ever being taken for a release (version.rs).
//!
//! What is in it: the service's crate and its resolved normal dependencies
//! for the image's target, transitively (`cargo metadata --filter-platform`:
//! no dev or build dependencies, no other platform's crates), each with its
//! name, version, purl (`pkg:cargo/NAME@VERSION`), licence (SPDX) and the
//! SHA-256 of its `.crate` file as crates.io published it (Cargo.lock's
//! checksum). cargo metadata resolves the whole workspace's features at
//! once, so an optional dependency another member enables may be listed
//! though the service's own build leaves it out: a superset, never a subset.
//! No timestamp or serial number: the same lock makes the same file.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// The suffix of the SBOM image's tag (`<version>.sbom`).
pub const TAG_SUFFIX: &str = ".sbom";

/// The SBOM's file name at the SBOM image's root.
pub const FILE_NAME: &str = "sbom.cdx.json";

/// The file `build` writes beside the binary of `package` for `version`.
pub fn file_name(package: &str, version: &str) -> String {
    format!("{package}-{version}.cdx.json")
}

/// The tag of `version`'s SBOM image.
pub fn tag(version: &str) -> String {
    format!("{version}{TAG_SUFFIX}")
}

/// The SBOM of `package` (a workspace member) as the image of the repository
/// `image` at `version`, from `cargo metadata --format-version 1` output and
/// the text of Cargo.lock.
pub fn cyclonedx(metadata: &str, lock: &str, package: &str, image: &str, version: &str) -> Result<String> {
    let metadata: Value = serde_json::from_str(metadata).context("cannot read `cargo metadata`'s JSON")?;
    let checksums = lock_checksums(lock);
    let packages: HashMap<&str, &Value> = metadata["packages"]
        .as_array()
        .context("`cargo metadata` lists no packages")?
        .iter()
        .filter_map(|package| Some((package["id"].as_str()?, package)))
        .collect();
    let nodes: HashMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .context("`cargo metadata` has no resolve graph (was it run with --no-deps?)")?
        .iter()
        .filter_map(|node| Some((node["id"].as_str()?, node)))
        .collect();
    let root = packages
        .iter()
        .find(|(_, p)| p["name"] == package && p["source"].is_null())
        .map(|(id, _)| *id)
        .with_context(|| format!("`cargo metadata` has no workspace package {package}"))?;

    // The normal dependencies reachable from the root, and each one's own.
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        if edges.contains_key(id) {
            continue;
        }
        let node = nodes.get(id).with_context(|| format!("`cargo metadata` has no resolve node for {id}"))?;
        let normal: BTreeSet<&str> = node["deps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|dep| dep["dep_kinds"].as_array().into_iter().flatten().any(|kind| kind["kind"].is_null()))
            .filter_map(|dep| dep["pkg"].as_str())
            .collect();
        todo.extend(normal.iter().copied());
        edges.insert(id, normal);
    }

    let purl = |id: &str| -> Result<String> {
        let package = packages.get(id).with_context(|| format!("`cargo metadata` has no package {id}"))?;
        let (Some(name), Some(version)) = (package["name"].as_str(), package["version"].as_str()) else {
            bail!("`cargo metadata`'s package {id} has no name or version");
        };
        Ok(format!("pkg:cargo/{name}@{version}"))
    };
    let image_ref = format!("{image}:{version}");
    let mut components = Vec::new();
    for id in edges.keys() {
        let package = packages[id];
        let (name, crate_version) =
            (package["name"].as_str().unwrap_or_default(), package["version"].as_str().unwrap_or_default());
        let mut component = json!({
            "type": if *id == root { "application" } else { "library" },
            "bom-ref": purl(id)?,
            "name": name,
            "version": crate_version,
            "purl": purl(id)?,
        });
        if let Some(license) = package["license"].as_str() {
            component["licenses"] = json!([{ "expression": spdx_expression(license) }]);
        }
        let from_crates_io = package["source"].as_str().is_some_and(|source| source.starts_with("registry+"));
        if let Some(checksum) = checksums.get(&(name, crate_version)).filter(|_| from_crates_io) {
            component["hashes"] = json!([{ "alg": "SHA-256", "content": checksum }]);
        }
        components.push(component);
    }
    components.sort_by(|a, b| a["bom-ref"].as_str().cmp(&b["bom-ref"].as_str()));
    let mut dependencies = vec![json!({ "ref": image_ref, "dependsOn": [purl(root)?] })];
    for (id, deps) in &edges {
        let depends_on = deps.iter().map(|dep| purl(dep)).collect::<Result<Vec<_>>>()?;
        dependencies.push(json!({ "ref": purl(id)?, "dependsOn": depends_on }));
    }
    let bom = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "tools": { "components": [{ "type": "application", "name": "cargo xtask build" }] },
            "component": { "type": "container", "bom-ref": image_ref, "name": image, "version": version },
        },
        "components": components,
        "dependencies": dependencies,
    });
    serde_json::to_string_pretty(&bom).context("cannot encode the SBOM")
}

/// Cargo's older `A/B` licence form as the SPDX expression `A OR B`.
fn spdx_expression(license: &str) -> String {
    license.split('/').map(str::trim).collect::<Vec<_>>().join(" OR ")
}

/// `(name, version) -> checksum` of every package in Cargo.lock. Cargo writes
/// the file in one fixed layout (`[[package]]` tables of `key = "value"`
/// lines), so reading those lines is enough: no TOML parser is compiled for it.
fn lock_checksums(lock: &str) -> HashMap<(&str, &str), &str> {
    // One (name, version, checksum) per `[[package]]`, filled as its lines come.
    let mut packages: Vec<[Option<&str>; 3]> = Vec::new();
    for line in lock.lines() {
        if line.trim() == "[[package]]" {
            packages.push([None; 3]);
            continue;
        }
        let (Some(package), Some((key, value))) = (packages.last_mut(), line.split_once(" = ")) else { continue };
        let field = match key.trim() {
            "name" => 0,
            "version" => 1,
            "checksum" => 2,
            _ => continue,
        };
        package[field] = Some(value.trim().trim_matches('"'));
    }
    packages.into_iter().filter_map(|[name, version, checksum]| Some(((name?, version?), checksum?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"version = 4

[[package]]
name = "app"
version = "0.1.0"
dependencies = [
 "lib",
]

[[package]]
name = "lib"
version = "1.2.3"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "aa11"

[[package]]
name = "devonly"
version = "0.4.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "bb22"
"#;

    fn metadata() -> String {
        let registry = "registry+https://github.com/rust-lang/crates.io-index";
        json!({
            "packages": [
                { "id": "app-id", "name": "app", "version": "0.1.0", "source": null, "license": "MIT" },
                { "id": "lib-id", "name": "lib", "version": "1.2.3", "source": registry, "license": "MIT/Apache-2.0" },
                { "id": "dev-id", "name": "devonly", "version": "0.4.0", "source": registry, "license": "MIT" },
            ],
            "resolve": { "nodes": [
                { "id": "app-id", "deps": [
                    { "pkg": "lib-id", "dep_kinds": [{ "kind": null, "target": null }] },
                    { "pkg": "dev-id", "dep_kinds": [{ "kind": "dev", "target": null }] },
                ]},
                { "id": "lib-id", "deps": [] },
                { "id": "dev-id", "deps": [] },
            ]},
        })
        .to_string()
    }

    #[test]
    fn the_bom_lists_normal_dependencies_with_purl_licence_and_the_lock_checksum() {
        let bom: Value =
            serde_json::from_str(&cyclonedx(&metadata(), LOCK, "app", "repo/app", "abc.1").unwrap()).unwrap();
        assert_eq!((bom["bomFormat"].as_str(), bom["specVersion"].as_str()), (Some("CycloneDX"), Some("1.5")));
        assert_eq!(bom["metadata"]["component"]["version"], "abc.1");
        let components = bom["components"].as_array().unwrap();
        let names: Vec<&str> = components.iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names, ["app", "lib"], "a dev dependency is listed");
        let lib = &components[1];
        assert_eq!(lib["purl"], "pkg:cargo/lib@1.2.3");
        assert_eq!(lib["hashes"][0]["alg"], "SHA-256");
        assert_eq!(lib["hashes"][0]["content"], "aa11");
        assert_eq!(lib["licenses"][0]["expression"], "MIT OR Apache-2.0");
        assert!(components[0]["hashes"].is_null(), "a workspace crate has no crates.io checksum");
        let app = bom["dependencies"].as_array().unwrap().iter().find(|d| d["ref"] == "pkg:cargo/app@0.1.0").unwrap();
        assert_eq!(app["dependsOn"], json!(["pkg:cargo/lib@1.2.3"]));
    }

    #[test]
    fn a_missing_package_is_an_error_naming_it() {
        let err = cyclonedx(&metadata(), LOCK, "nothere", "repo/app", "abc.1").unwrap_err();
        assert!(format!("{err:#}").contains("nothere"), "{err:#}");
        assert!(cyclonedx("{", LOCK, "app", "repo/app", "abc.1").is_err());
    }

    #[test]
    fn the_sbom_tag_and_file_follow_the_version() {
        assert_eq!(tag("abc1234.7"), "abc1234.7.sbom");
        assert_eq!(file_name("app", "abc1234.7"), "app-abc1234.7.cdx.json");
    }
}
