//! An HAProxy image built offline from Debian's own package, for the swarm
//! tests of the stacks' `edge` service: nothing can be pulled here, and the
//! stacks' default `haproxy:2.8-alpine` is on Docker Hub.
//!
//! Laid out like the official image, so that a stack runs unchanged on
//! either: `haproxy` in /usr/local/sbin (on PATH), its configuration read
//! from /usr/local/etc/haproxy/haproxy.cfg (empty here: the stack mounts
//! it), the user and group `haproxy` (uid and gid 99) that it runs as, its
//! home and working directory /var/lib/haproxy (theirs), and
//! `edge/entrypoint.sh` doing what the official entrypoint does (`haproxy
//! ...` runs as `haproxy -W -db ...`: master-worker, in the foreground).
//! One difference: `docker import` cannot set the official image's
//! `STOPSIGNAL SIGUSR1` (a soft stop: listeners close, connections in flight
//! finish), so the stacks' `edge` service says `stop_signal: SIGUSR1`, which
//! both images then get. The image holds no other tool than /bin/sh (dash):
//! the official (alpine) one has busybox's, so a stack must not rely on
//! either's tools beyond `sh`.
//!
//! Small, as almost every swarm test pushes it to a fresh registry: not the
//! debootstrap root (220 MB) but a root assembled from it, with HAProxy,
//! dash and the shared objects `ldd` names for them (about 19 MB). Built
//! once per machine under a lock, its tag carrying a hash of the recipe and
//! the entrypoint (see [`super::debian_image`]).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use xtask_test_support::run_ok;

use super::debian_image;

/// The entrypoint, embedded: a change to it is a new tag.
const ENTRYPOINT: &str = include_str!("edge/entrypoint.sh");

/// Bumped when the steps below change what the image holds.
const RECIPE: &str = "debootstrap minbase bookworm haproxy; haproxy, dash and their shared objects v1";

/// The user and group HAProxy runs as: the official image's.
const HAPROXY_ID: u32 = 99;

/// The image's configuration: the official image's, but for its STOPSIGNAL
/// (see the module's documentation).
const CONFIG: [&str; 6] = [
    r#"ENTRYPOINT ["docker-entrypoint.sh"]"#,
    r#"CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]"#,
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "USER haproxy",
    "WORKDIR /var/lib/haproxy",
    "LABEL org.opencontainers.image.title=todobackend-tests-haproxy",
];

/// The local tag of the image, built if this machine has not built it yet.
pub fn image() -> String {
    let tag = format!("todobackend-tests/haproxy:2.6-{:016x}", debian_image::recipe_hash(&[RECIPE, ENTRYPOINT]));
    debian_image::built_once(&tag, "haproxy-image.lock", build);
    tag
}

fn build(tag: &str, work: &Path) {
    let debian = debian_image::debootstrap(work, "haproxy", "HAProxy");
    let root = work.join("image");
    assemble(&debian, &root);
    debian_image::import(&root, tag, &CONFIG);
}

/// The image's root file system, from the Debian root `debian`.
fn assemble(debian: &Path, root: &Path) {
    make_dir(root, "", 0o755);
    // bookworm is merged-/usr (bin -> usr/bin, lib -> usr/lib, lib64 -> usr/lib64,
    // sbin -> usr/sbin): the same links here, so that the paths ld.so, ldd and
    // the entrypoint name (/lib64/ld-linux-x86-64.so.2, /bin/sh) lead where
    // Debian put the files.
    for entry in std::fs::read_dir(debian).expect("read the Debian root") {
        let entry = entry.expect("an entry of the Debian root");
        if !entry.file_type().expect("file type").is_symlink() {
            continue;
        }
        let target = std::fs::read_link(entry.path()).expect("read a top-level link");
        make_dir(root, target.to_str().expect("a UTF-8 link").trim_start_matches('/'), 0o755);
        std::os::unix::fs::symlink(&target, root.join(entry.file_name())).expect("make a top-level link");
    }

    // dash as /bin/sh for the entrypoint, and every shared object that it and
    // HAProxy load, ld.so included. A name that is a link (libz.so.1 ->
    // libz.so.1.2.13) gets the file's content under the name ld.so looks for.
    let mut files = BTreeSet::from(["/bin/sh".to_owned()]);
    for program in ["/usr/sbin/haproxy", "/bin/sh"] {
        let out = run_ok(Command::new("chroot").arg(debian).args(["ldd", program]), &format!("ldd {program}"));
        let listed = shared_objects(&String::from_utf8_lossy(&out.stdout))
            .unwrap_or_else(|missing| panic!("{program} needs {missing}, which the Debian root does not have"));
        files.extend(listed);
    }
    let names: Vec<&String> = files.iter().collect();
    // Resolved by the Debian root's own links, whatever they are (absolute
    // ones would lead out of it on this machine).
    let out = run_ok(Command::new("chroot").arg(debian).args(["readlink", "-e", "--"]).args(&names), "readlink");
    let resolved = String::from_utf8_lossy(&out.stdout);
    let resolved: Vec<&str> = resolved.lines().collect();
    assert_eq!(resolved.len(), names.len(), "readlink -e of {names:?}: {resolved:?}");
    for (name, file) in names.iter().zip(resolved) {
        copy(debian, file, root, name);
    }
    // Where the official image has it.
    copy(debian, "/usr/sbin/haproxy", root, "/usr/local/sbin/haproxy");

    make_dir(root, "usr/local/bin", 0o755);
    let entrypoint = root.join("usr/local/bin/docker-entrypoint.sh");
    std::fs::write(&entrypoint, ENTRYPOINT).expect("write the entrypoint");
    std::fs::set_permissions(&entrypoint, std::fs::Permissions::from_mode(0o755)).expect("chmod the entrypoint");

    make_dir(root, "etc", 0o755);
    let id = HAPROXY_ID;
    let passwd = format!("root:x:0:0:root:/root:/bin/sh\nhaproxy:x:{id}:{id}:haproxy:/var/lib/haproxy:/sbin/nologin\n");
    std::fs::write(root.join("etc/passwd"), passwd).expect("write /etc/passwd");
    std::fs::write(root.join("etc/group"), format!("root:x:0:\nhaproxy:x:{id}:\n")).expect("write /etc/group");
    // Empty: the stack mounts haproxy.cfg into it.
    make_dir(root, "usr/local/etc/haproxy", 0o755);
    // HAProxy's home and working directory, its own (a stats socket or a
    // server-state file can go there).
    make_dir(root, "var/lib/haproxy", 0o755);
    std::os::unix::fs::chown(root.join("var/lib/haproxy"), Some(id), Some(id)).expect("chown /var/lib/haproxy");
    make_dir(root, "tmp", 0o1777);
    make_dir(root, "run", 0o755);
}

/// The absolute paths of the shared objects in `ldd`'s output (the vDSO,
/// which is no file, left out), or the first one ldd did not find.
pub fn shared_objects(ldd: &str) -> Result<Vec<String>, String> {
    let mut paths = Vec::new();
    for line in ldd.lines().map(str::trim).filter(|line| !line.is_empty()) {
        // `libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)`, or
        // `/lib64/ld-linux-x86-64.so.2 (0x...)` for ld.so itself.
        let (soname, location) = line.split_once(" => ").unwrap_or(("", line));
        if location.starts_with("not found") {
            return Err(soname.to_owned());
        }
        if let Some(path) = location.split_whitespace().next().filter(|path| path.starts_with('/')) {
            paths.push(path.to_owned());
        }
    }
    Ok(paths)
}

/// A directory in the image (`path` relative to its root), and those above
/// it that are missing, with `mode` whatever the umask (HAProxy's user reads
/// them all).
fn make_dir(root: &Path, path: &str, mode: u32) {
    let dir = root.join(path);
    let missing: Vec<&Path> = dir.ancestors().take_while(|dir| !dir.exists()).collect();
    for dir in missing.into_iter().rev() {
        std::fs::create_dir(dir).unwrap_or_else(|err| panic!("create {}: {err}", dir.display()));
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|err| panic!("chmod {}: {err}", dir.display()));
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|err| panic!("chmod {}: {err}", dir.display()));
}

/// The Debian root's file `from` (absolute inside it, no link) as `to` in
/// the image, with its mode.
fn copy(debian: &Path, from: &str, root: &Path, to: &str) {
    let to = to.trim_start_matches('/');
    let source = debian.join(from.trim_start_matches('/'));
    let target = root.join(to);
    make_dir(root, Path::new(to).parent().and_then(Path::to_str).expect("a file in a directory"), 0o755);
    std::fs::copy(&source, &target)
        .unwrap_or_else(|err| panic!("copy {} to {}: {err}", source.display(), target.display()));
}
