//! `login`, `logout` and `publish` against moto's ECR emulator and a local
//! registry whose htpasswd user is the emulator's token: everything on loopback.

mod support;

use std::time::{Duration, Instant};

use support::images::Images;
use support::moto::{ECR_PASSWORD, Moto};
use support::registry::Registry;
use xtask_test_support::sandbox::{Run, Sandbox};
use xtask_test_support::unique_name;

/// A sandbox for the emulator and the registry, with a unique repository and version.
fn sandbox(moto: &Moto, registry: &Registry, repository: &str, version: &str) -> Sandbox {
    moto.sandbox(support::sandbox())
        .with_env("ECR_REGISTRY", &registry.host())
        .with_env("IMAGE_REPOSITORY", repository)
        .with_env("APP_VERSION", version)
}

/// A scratch image built under the sandbox's local name for a unique
/// repository and version (the registry's tags that `publish` makes removed
/// with it), and a sandbox that publishes it.
struct Built {
    repository: String,
    version: String,
    /// `<registry>/<repository>`, without a tag.
    image: String,
    sandbox: Sandbox,
    /// Removes the images when dropped: bind it for as long as the test runs.
    images: Images,
}

fn built(moto: &Moto, registry: &Registry, prefix: &str) -> Built {
    let repository = unique_name(prefix);
    let version = unique_name("v");
    let image = format!("{}/{repository}", registry.host());
    let sandbox = sandbox(moto, registry, &repository, &version);
    let local = sandbox.local_image(&repository, &version);
    let mut images = Images::build_scratch(&local, &version);
    // The SBOM image `build` makes beside the release image (here a stand-in:
    // `publish` only pushes it; publish_pushes_the_sbom_that_build_wrote
    // publishes a real one).
    images.add_scratch(&format!("{local}.sbom"), &format!("the SBOM of {version}"));
    images.track(&format!("{image}:{version}"));
    images.track(&format!("{image}:latest"));
    images.track(&format!("{image}:{version}.sbom"));
    Built { repository, version, image, sandbox, images }
}

/// The one `error:` line of a failed run.
fn error_line(run: &Run) -> String {
    let lines = run.error_lines();
    assert_eq!(lines.len(), 1, "expected one error line\n--- stderr\n{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    eprintln!("{}", lines[0]); // shown with --nocapture
    lines[0].to_owned()
}

fn config_json(sandbox: &Sandbox) -> String {
    std::fs::read_to_string(sandbox.docker_config().join("config.json")).unwrap_or_default()
}

#[test]
fn publish_pushes_both_tags_and_login_lets_the_docker_cli_pull() {
    xtask_test_support::require_docker();
    let moto = Moto::start();
    let registry = Registry::start_for_ecr();
    let Built { repository, version, image, sandbox: publisher, mut images } = built(&moto, &registry, "ecrpub");

    // publish needs no earlier login: the sandbox's Docker config stays empty.
    let run = publisher.xtask(&["publish"]);
    run.assert_success().assert_not_leaked(ECR_PASSWORD);
    assert!(!config_json(&publisher).contains(&registry.host()), "publish logged Docker in");
    let versioned = registry.manifest_digest(&repository, &version).expect("the version tag is in the registry");
    let latest = registry.manifest_digest(&repository, "latest").expect("latest is in the registry");
    assert_eq!(versioned, latest, "both tags name the same manifest");
    let sbom = registry.manifest_digest(&repository, &format!("{version}.sbom")).expect("the SBOM is in the registry");
    assert_ne!(sbom, versioned, "the SBOM tag names the release image");
    let printed: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        printed,
        [
            format!("{image}:{version}@{versioned}"),
            format!("{image}:latest@{versioned}"),
            format!("{image}:{version}.sbom@{sbom}")
        ],
        "stdout: one `<ref>@<digest>` per tag\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("layer 1/1"), "layer milestones in CI mode:\n{}", run.stderr);
    if std::env::var_os("SHOW_PUBLISH").is_some() {
        eprintln!("{}", run.stderr);
    }

    // Another user: no credential, so the docker CLI cannot pull; after
    // `login` it can, by digest; after `logout` it cannot again.
    let user = sandbox(&moto, &registry, &repository, &version);
    let by_digest = format!("{image}@{versioned}");
    images.track(&by_digest);
    let pull = user.docker(&["pull", &by_digest]);
    assert!(!pull.success(), "pulled without a login:\n{}", pull.stdout);

    let run = user.xtask(&["login"]);
    run.assert_success().assert_not_leaked(ECR_PASSWORD);
    assert!(run.stderr.contains(&format!("logged in to {}", registry.host())), "{}", run.stderr);
    assert!(run.stderr.contains("the token expires at "), "{}", run.stderr);
    assert!(config_json(&user).contains(&registry.host()), "login stored no credential");
    let pull = user.docker(&["pull", &by_digest]);
    assert!(pull.success(), "docker pull by digest after login failed:\n{}", pull.stderr);

    let run = user.xtask(&["logout"]);
    run.assert_success().assert_not_leaked(ECR_PASSWORD);
    assert!(!config_json(&user).contains(&registry.host()), "logout left the credential:\n{}", config_json(&user));
    // Logging out twice is fine.
    user.xtask(&["logout"]).assert_success();
}

#[test]
fn publish_can_create_the_repository_and_runs_twice() {
    xtask_test_support::require_docker();
    let moto = Moto::start();
    let registry = Registry::start_for_ecr();
    let Built { repository, sandbox, images: _images, .. } = built(&moto, &registry, "ecrnew");

    let run = sandbox.xtask(&["publish", "--create-repository"]);
    run.assert_success().assert_not_leaked(ECR_PASSWORD);
    assert!(run.stderr.contains(&format!("created ECR repository {repository}")), "{}", run.stderr);

    let run = sandbox.with_env("ECR_CREATE_REPOSITORY", "true").xtask(&["publish"]);
    run.assert_success().assert_not_leaked(ECR_PASSWORD);
    assert!(run.stderr.contains(&format!("ECR repository {repository} exists")), "{}", run.stderr);
    assert!(run.stderr.contains("already in the registry"), "{}", run.stderr);
}

/// `build` writes the release's SBOM beside the binary and packs it into
/// `<version>.sbom`; `publish` pushes it beside the release image. What the
/// registry holds is valid CycloneDX listing the service's crates at the
/// versions and crates.io checksums of Cargo.lock, and none of the xtask's.
#[test]
fn publish_pushes_the_sbom_that_build_wrote() {
    xtask_test_support::require_docker();
    let moto = Moto::start();
    let registry = Registry::start_for_ecr();
    let (repository, version) = (unique_name("ecrsbom"), unique_name("v"));
    let publisher = sandbox(&moto, &registry, &repository, &version);
    let image = format!("{}/{repository}", registry.host());
    let local = publisher.local_image(&repository, &version);
    let sbom_image = format!("{image}:{version}.sbom");
    let mut images = Images::new();
    for tag in
        [&local, &format!("{local}.sbom"), &format!("{image}:{version}"), &format!("{image}:latest"), &sbom_image]
    {
        images.track(tag);
    }

    publisher.xtask(&["build"]).assert_success();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| xtask_test_support::project_root().join("target"));
    let written = target
        .join(format!("{}-unknown-linux-gnu/release", std::env::consts::ARCH))
        .join(format!("todobackend-{version}.cdx.json"));
    let beside = std::fs::read_to_string(&written).unwrap_or_else(|err| panic!("{}: {err}", written.display()));

    let run = publisher.xtask(&["publish"]);
    run.assert_success().assert_not_leaked(ECR_PASSWORD);
    let digest =
        registry.manifest_digest(&repository, &format!("{version}.sbom")).expect("the SBOM is in the registry");
    assert!(run.stdout.contains(&format!("{sbom_image}@{digest}")), "{}", run.stdout);
    // The registry's manifest is the local SBOM image's, whose file is the
    // one `build` wrote.
    let pushed = publisher.docker(&["image", "inspect", "--format", "{{json .RepoDigests}}", &sbom_image]);
    assert!(pushed.stdout.contains(&digest), "{sbom_image} is not what the registry holds: {}", pushed.stdout);
    let in_image = file_in_image(&publisher, &sbom_image, "/sbom.cdx.json");
    assert_eq!(in_image, beside, "the SBOM image holds another file than the one build wrote");

    let bom: serde_json::Value = serde_json::from_str(&in_image).expect("the SBOM is JSON");
    assert_eq!((bom["bomFormat"].as_str(), bom["specVersion"].as_str()), (Some("CycloneDX"), Some("1.5")));
    assert_eq!(bom["metadata"]["component"]["version"], version.as_str());
    let components = bom["components"].as_array().expect("components");
    let lock = std::fs::read_to_string(xtask_test_support::project_root().join("Cargo.lock")).expect("Cargo.lock");
    for name in ["hyper", "rusqlite", "tokio-postgres"] {
        let (locked, checksum) = locked(&lock, name);
        let component =
            components.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no {name} in the SBOM"));
        assert_eq!(component["version"], locked.as_str(), "{name}");
        assert_eq!(component["purl"], format!("pkg:cargo/{name}@{locked}").as_str());
        assert_eq!(component["hashes"][0]["alg"], "SHA-256");
        assert_eq!(component["hashes"][0]["content"], checksum.as_str(), "{name}'s checksum is not Cargo.lock's");
        assert!(component["licenses"][0]["expression"].is_string(), "{name} has no licence: {component}");
    }
    // The xtask's crates and the tests' are not in the image.
    for name in ["aws-sdk-ecr", "bollard", "git2", "tempfile"] {
        assert!(!components.iter().any(|c| c["name"] == name), "{name} is listed in the image's SBOM");
    }
    check_cyclonedx_schema(&in_image);
}

/// The file at `path` in `image`, read through a container that is created
/// (never started) and removed.
fn file_in_image(sandbox: &Sandbox, image: &str, path: &str) -> String {
    let created = sandbox.docker(&["create", image, "none"]);
    assert!(created.success(), "docker create {image}: {}", created.stderr);
    let id = created.stdout.trim().to_owned();
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("file");
    let copied = sandbox.docker(&["cp", &format!("{id}:{path}"), &copy.display().to_string()]);
    let _ = sandbox.docker(&["rm", &id]);
    assert!(copied.success(), "docker cp {path} out of {image}: {}", copied.stderr);
    std::fs::read_to_string(&copy).expect("the copied file")
}

/// The version and checksum of the one `name` in Cargo.lock.
fn locked(lock: &str, name: &str) -> (String, String) {
    let entries: Vec<&str> =
        lock.split("[[package]]").filter(|entry| entry.contains(&format!("\nname = \"{name}\"\n"))).collect();
    assert_eq!(entries.len(), 1, "Cargo.lock has {} versions of {name}", entries.len());
    let field = |key: &str| {
        entries[0]
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key} = \"")))
            .map(|value| value.trim_end_matches('"').to_owned())
            .unwrap_or_else(|| panic!("{name} has no {key} in Cargo.lock"))
    };
    (field("version"), field("checksum"))
}

/// The SBOM against CycloneDX 1.5's JSON schema (strict: no unknown field),
/// with the CycloneDX project's own validator (cyclonedx-python-lib, which
/// ships the schemas), installed once into target/cyclonedx-venv; made again
/// when it does not run.
fn check_cyclonedx_schema(bom: &str) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| xtask_test_support::project_root().join("target"));
    let venv = target.join("cyclonedx-venv");
    let python = venv.join("bin/python");
    let script = "import sys\n\
                  from cyclonedx.schema import SchemaVersion\n\
                  from cyclonedx.validation.json import JsonStrictValidator\n\
                  error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(sys.stdin.read())\n\
                  print(error or '', end='')\n\
                  sys.exit(1 if error else 0)\n";
    let runs = std::process::Command::new(&python)
        .args(["-c", "import cyclonedx.validation.json"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !runs {
        let _ = std::fs::remove_dir_all(&venv);
        let made = std::process::Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("venv");
        assert!(made.success(), "python3 -m venv failed (install python3-venv)");
        let pip = std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "cyclonedx-python-lib[json-validation]"])
            .status()
            .expect("pip");
        assert!(pip.success(), "pip install cyclonedx-python-lib[json-validation] failed");
    }
    use std::io::Write;
    let mut child = std::process::Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child.stdin.take().unwrap().write_all(bom.as_bytes()).unwrap();
    let out = child.wait_with_output().expect("the validator");
    assert!(out.status.success(), "the SBOM is not valid CycloneDX 1.5: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn the_password_is_on_stdin_never_in_argv() {
    // A `docker` stand-in that records its arguments and its stdin.
    let moto = Moto::start();
    let registry = Registry::start_for_ecr();
    let bin = tempfile::tempdir().unwrap();
    let record = bin.path().join("record");
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> {args}\ncat > {stdin}\n",
        args = record.with_extension("args").display(),
        stdin = record.with_extension("stdin").display()
    );
    let docker = bin.path().join("docker");
    std::fs::write(&docker, script).unwrap();
    std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());
    let run = sandbox(&moto, &registry, "todobackend", "1").with_env("PATH", &path).xtask(&["login"]);
    run.assert_success().assert_not_leaked(ECR_PASSWORD);
    let args = std::fs::read_to_string(record.with_extension("args")).unwrap();
    assert_eq!(args.trim(), format!("login --username AWS --password-stdin {}", registry.host()));
    assert_eq!(std::fs::read_to_string(record.with_extension("stdin")).unwrap(), ECR_PASSWORD);
}

#[test]
fn a_registry_refusing_the_credential_is_a_clear_failure() {
    xtask_test_support::require_docker();
    let moto = Moto::start();
    let registry = Registry::start(xtask_cloud::ecr::ECR_USER, "not-the-ecr-token");
    let Built { sandbox, images: _images, .. } = built(&moto, &registry, "ecrbad");

    for task in ["login", "publish"] {
        let run = sandbox.xtask(&[task]);
        run.assert_failure().assert_not_leaked(ECR_PASSWORD);
        let error = error_line(&run);
        assert!(error.contains(&format!("registry {} refused the ECR credential", registry.host())), "{error}");
        assert!(error.contains("ECR_REGISTRY"), "{error}");
    }
    assert!(!config_json(&sandbox).contains(&registry.host()));
}

#[test]
fn an_unreachable_registry_fails_quickly_and_names_it() {
    xtask_test_support::require_docker();
    let moto = Moto::start();
    let mut registry = Registry::start_for_ecr();
    registry.stop();
    let Built { sandbox, images: _images, .. } = built(&moto, &registry, "ecrdown");

    for task in ["login", "publish"] {
        let started = Instant::now();
        let run = sandbox.xtask(&[task]);
        assert!(started.elapsed() < Duration::from_secs(60), "{task} took {:?}", started.elapsed());
        run.assert_failure().assert_not_leaked(ECR_PASSWORD);
        let error = error_line(&run);
        assert!(error.contains(&format!("registry {} is unreachable", registry.host())), "{error}");
    }
}

#[test]
fn dirty_versions_and_unbuilt_images_are_refused() {
    xtask_test_support::require_docker();
    let moto = Moto::start();
    let registry = Registry::start_for_ecr();
    let repository = unique_name("ecrnone");

    let run = sandbox(&moto, &registry, &repository, "abc1234-dirty").xtask(&["publish"]);
    run.assert_failure();
    let error = error_line(&run);
    assert!(error.contains("uncommitted changes") && error.contains("--allow-dirty"), "{error}");

    let run = sandbox(&moto, &registry, &repository, "abc1234-dirty").xtask(&["publish", "--allow-dirty"]);
    run.assert_failure();
    let error = error_line(&run);
    assert!(error.contains("run `cargo xtask test` first"), "{error}");

    let run = sandbox(&moto, &registry, &repository, &unique_name("v")).xtask(&["publish"]);
    run.assert_failure();
    let error = error_line(&run);
    assert!(error.contains("is not built: run `cargo xtask test` first"), "{error}");

    // A release image without its SBOM image: refused, naming the SBOM, and
    // nothing is pushed.
    let version = unique_name("v");
    let unbuilt = sandbox(&moto, &registry, &repository, &version);
    let _images = Images::build_scratch(&unbuilt.local_image(&repository, &version), &version);
    let run = unbuilt.xtask(&["publish"]);
    run.assert_failure();
    let error = error_line(&run);
    assert!(error.contains(&format!("{version}.sbom is not built")) && error.contains("cargo xtask build"), "{error}");
    assert_eq!(registry.manifest_digest(&repository, &version), None, "the release was pushed without its SBOM");
}

#[test]
fn dry_runs_print_the_plan_and_change_nothing() {
    xtask_test_support::require_docker();
    let moto = Moto::start();
    let registry = Registry::start_for_ecr();
    let Built { repository, version, sandbox, images: _images, .. } = built(&moto, &registry, "ecrdry");
    let host = registry.host();

    let run = sandbox.xtask(&["--dry-run", "login"]);
    run.assert_success().assert_not_leaked(ECR_PASSWORD);
    assert!(run.stdout.contains("api: ecr GetAuthorizationToken"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("docker login --username AWS --password-stdin {host}")), "{}", run.stdout);

    let run = sandbox.xtask(&["--dry-run", "publish", "--create-repository"]);
    run.assert_success().assert_not_leaked(ECR_PASSWORD);
    for expected in [
        "api: ecr GetAuthorizationToken".to_owned(),
        "DescribeRepositories".to_owned(),
        format!("docker push {host}/{repository}:{version}"),
        format!("docker push {host}/{repository}:latest"),
        format!("docker push {host}/{repository}:{version}.sbom"),
    ] {
        assert!(run.stdout.contains(&expected), "plan lacks {expected:?}:\n{}", run.stdout);
    }

    let run = sandbox.xtask(&["--dry-run", "logout"]);
    run.assert_success();
    assert!(run.stdout.contains(&format!("docker logout {host}")), "{}", run.stdout);

    assert_eq!(registry.manifest_digest(&repository, &version), None, "a dry run pushed");
    assert!(!config_json(&sandbox).contains(&host), "a dry run logged in");
    for tag in [version.as_str(), "latest"] {
        let tagged = sandbox.docker(&["image", "inspect", &format!("{host}/{repository}:{tag}")]);
        assert!(!tagged.success(), "a dry run tagged {tag} for the registry");
    }
}

#[test]
fn aws_problems_are_one_line_with_the_way_out() {
    let moto = Moto::start();
    let registry = Registry::start_for_ecr();
    let base = || sandbox(&moto, &registry, "todobackend", "1");

    let run = base()
        .without_env("AWS_ACCESS_KEY_ID")
        .without_env("AWS_SECRET_ACCESS_KEY")
        .without_env("AWS_SESSION_TOKEN")
        .xtask(&["login"]);
    run.assert_failure();
    let error = error_line(&run);
    assert!(error.contains("no AWS credentials found") && error.contains("AWS_PROFILE"), "{error}");

    let run = base().with_env("AWS_REGION", "nowhere").xtask(&["login"]);
    run.assert_failure();
    let error = error_line(&run);
    assert!(error.contains("unknown AWS region \"nowhere\"") && error.contains("AWS_REGION"), "{error}");

    let strict = Moto::start_with_auth();
    let run = sandbox(&strict, &registry, "todobackend", "1").xtask(&["login"]);
    run.assert_failure();
    let error = error_line(&run);
    assert!(error.contains("AWS rejected the credentials"), "{error}");

    // logout needs no credentials: it falls back to the settings' registry.
    let run = base()
        .without_env("ECR_REGISTRY")
        .without_env("AWS_ACCESS_KEY_ID")
        .without_env("AWS_SECRET_ACCESS_KEY")
        .without_env("AWS_SESSION_TOKEN")
        .xtask(&["logout"]);
    run.assert_success();
    assert!(run.stderr.contains("123456789012.dkr.ecr.us-west-2.amazonaws.com"), "{}", run.stderr);
}

#[test]
fn the_ecr_credential_helper_makes_login_a_no_op() {
    let moto = Moto::start();
    let registry = Registry::start_for_ecr();
    let sandbox = sandbox(&moto, &registry, "todobackend", "1");
    let config = format!(r#"{{"credHelpers": {{"{}": "ecr-login"}}}}"#, registry.host());
    std::fs::write(sandbox.docker_config().join("config.json"), &config).unwrap();
    let run = sandbox.xtask(&["login"]);
    run.assert_success();
    assert!(run.stderr.contains("docker-credential-ecr-login"), "{}", run.stderr);
    assert!(run.stderr.contains("no login needed"), "{}", run.stderr);
    assert_eq!(config_json(&sandbox), config, "the Docker config was changed");
}

#[test]
fn profile_and_service_specific_endpoint_are_honoured() {
    let moto = Moto::start();
    let registry = Registry::start_for_ecr();
    let mut user = sandbox(&moto, &registry, "todobackend", "1");
    // Both variants keep every call on loopback: were AWS_ENDPOINT_URL_ECR
    // ignored, the call would go to the dead general endpoint and fail.
    let dead = format!("http://127.0.0.1:{}", xtask_test_support::free_port());
    user = user.with_env("AWS_ENDPOINT_URL", &dead).with_env("AWS_ENDPOINT_URL_ECR", &moto.url());
    let run = user.xtask(&["login"]);
    run.assert_success().assert_not_leaked(ECR_PASSWORD);
    assert!(config_json(&user).contains(&registry.host()));

    // Credentials only from a named profile of the config file.
    let config = user.dir.path().join("aws-config");
    std::fs::write(
        &config,
        format!(
            "[profile ci]\naws_access_key_id = fromprofile\naws_secret_access_key = fromprofile\nendpoint_url = {}\n",
            moto.url()
        ),
    )
    .unwrap();
    let profiled = sandbox(&moto, &registry, "todobackend", "1")
        .without_env("AWS_ACCESS_KEY_ID")
        .without_env("AWS_SECRET_ACCESS_KEY")
        .without_env("AWS_SESSION_TOKEN")
        .without_env("AWS_ENDPOINT_URL")
        .with_env("AWS_CONFIG_FILE", &config.display().to_string());
    let run = profiled.xtask(&["login"]);
    run.assert_failure();
    assert!(error_line(&run).contains("no AWS credentials found"));
    let run = profiled.with_env("AWS_PROFILE", "ci").xtask(&["login"]);
    run.assert_success().assert_not_leaked(ECR_PASSWORD);
}

/// -q: only results, warnings and errors (a login has none to show); -v:
/// also the API calls as they are made; neither changes what is done.
#[test]
fn quiet_and_verbose_say_less_and_more_and_do_the_same() {
    xtask_test_support::require_docker();
    let moto = Moto::start();
    let registry = Registry::start_for_ecr();
    let user = sandbox(&moto, &registry, &unique_name("verbosity"), "1");

    let normal = user.xtask(&["login"]);
    normal.assert_success();
    assert!(normal.stderr.contains("==> login: get an ECR authorization token"), "{}", normal.stderr);
    assert!(!normal.stderr.contains("-> api:"), "API calls echoed without -v:\n{}", normal.stderr);
    user.xtask(&["logout"]).assert_success();

    let quiet = user.xtask(&["-q", "login"]);
    quiet.assert_success();
    assert_eq!(quiet.stderr, "", "-q login said something");
    assert!(config_json(&user).contains(&registry.host()), "-q login stored no credential");
    user.xtask(&["logout", "--quiet"]).assert_success();

    let verbose = user.xtask(&["login", "-v"]);
    verbose.assert_success().assert_not_leaked(ECR_PASSWORD);
    assert!(verbose.stderr.contains("==> login: get an ECR authorization token"), "{}", verbose.stderr);
    assert!(verbose.stderr.contains("-> api: "), "-v echoed no API call:\n{}", verbose.stderr);
    assert!(config_json(&user).contains(&registry.host()), "-v login stored no credential");

    // Both at once is a usage error; the later one wins across levels.
    let both = user.xtask(&["login", "-q", "-v"]);
    assert_eq!(both.status.code(), Some(2), "{}", both.stderr);
    let later = user.xtask(&["-q", "logout", "-v"]);
    later.assert_success();
    assert!(later.stderr.contains("==> logout:") || later.stderr.contains("-> api:"), "{}", later.stderr);
}
