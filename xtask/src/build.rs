//! `build`: the release image. The service is compiled as one statically
//! linked binary on the host, then packed into an image `FROM scratch`, so the
//! build pulls nothing: no base image, no builder image. Its SBOM is written
//! beside the binary and packed into an image of its own (`<version>.sbom`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::ctx::Ctx;
use crate::notice;

/// The service's crate and binary.
const PACKAGE: &str = "todobackend";

pub fn run(ctx: &Ctx) -> Result<()> {
    // No engine: say so in one line now, not after a compile or a build.
    crate::docker_endpoint::check_reachable(ctx.docker_endpoint())?;
    let target = static_target()?;
    // Asked once: the release image and its SBOM image build the same way.
    let buildkit = buildkit(ctx);
    ctx.step("static build of the service", || {
        let sh = ctx.sh();
        let cargo = crate::cargo::program();
        // RUSTFLAGS for the target only: with --target, build scripts and
        // proc macros stay dynamically linked and keep their cache.
        let flags_var = format!("CARGO_TARGET_{}_RUSTFLAGS", target.to_uppercase().replace('-', "_"));
        ctx.run(crate::cargo::clean(
            cmd!(sh, "{cargo} build --release --locked --package {PACKAGE} --target {target}")
                .env(flags_var, "-C target-feature=+crt-static"),
        ))
    })?;
    // One context per run: two builds at once (CI jobs, tests) must not
    // stage into the same directory.
    let context = target_dir(ctx).join(format!("docker-context-{}", std::process::id()));
    ctx.step("stage the image's build context", || {
        let binary = target_dir(ctx).join(&target).join("release").join(PACKAGE);
        ctx.effect(&format!("stage {} with {}", context.display(), binary.display()), (), || {
            stage_context(&binary, &context)
        })
    })?;
    ctx.step("build the release image", || {
        let sh = ctx.sh();
        let version = ctx.version();
        let app = &ctx.settings.app;
        // The local name only: `publish` tags it for the registry.
        let image = ctx.settings.local_image(version);
        let mine = ctx.settings.local_label();
        let dockerfile = ctx.settings.root.join("Dockerfile");
        // Empty outside a git repository: the label is then empty, and the
        // history records no commit for this image.
        let commit = crate::git::head_commit(&ctx.settings.root).unwrap_or_default();
        let built = ctx.run_explained(
            cmd!(
                sh,
                "docker build --file {dockerfile} --tag {image} --label {mine}
                    --build-arg APP_NAME={app} --build-arg APP_VERSION={version} --build-arg APP_COMMIT={commit} {context}"
            )
            .env("DOCKER_BUILDKIT", buildkit),
            &[notice::LEGACY_BUILDER],
        );
        let removed = ctx.remove(&context);
        built.and(removed)
    })?;
    sbom(ctx, &target, buildkit)
}

/// The release image's SBOM (sbom.rs): written beside the binary, then packed
/// `FROM scratch` into the image `<local image>:<version>.sbom`, which
/// `publish` pushes beside the release image.
fn sbom(ctx: &Ctx, target: &str, buildkit: &str) -> Result<()> {
    // One file per version: builds running at once (CI jobs, tests) each
    // pack their own.
    let path = target_dir(ctx).join(target).join("release").join(crate::sbom::file_name(PACKAGE, ctx.version()));
    ctx.step("write the SBOM (CycloneDX, from Cargo.lock)", || {
        let sh = ctx.sh();
        let cargo = crate::cargo::program();
        let manifest = ctx.settings.root.join("Cargo.toml");
        // Only the target's crates: the image holds no other platform's.
        let metadata = ctx.read(crate::cargo::clean(cmd!(
            sh,
            "{cargo} metadata --format-version 1 --locked --manifest-path {manifest} --filter-platform {target}"
        )))?;
        let lock_path = ctx.settings.root.join("Cargo.lock");
        let lock =
            std::fs::read_to_string(&lock_path).with_context(|| format!("cannot read {}", lock_path.display()))?;
        let sbom = crate::sbom::cyclonedx(&metadata, &lock, PACKAGE, &ctx.settings.repository, ctx.version())?;
        ctx.write_file(&path, &sbom)
    })?;
    let context = target_dir(ctx).join(format!("sbom-context-{}", std::process::id()));
    ctx.step("build the SBOM image", || {
        let sh = ctx.sh();
        let version = ctx.version();
        let image = ctx.settings.local_image(&crate::sbom::tag(version));
        // The release image's labels (application, this checkout's): `clean`
        // prunes its dangling versions with the release image's.
        let application = format!("application={}", ctx.settings.app);
        let mine = ctx.settings.local_label();
        let file = crate::sbom::FILE_NAME;
        let describes =
            format!("org.opencontainers.image.description=CycloneDX SBOM of {}", ctx.settings.local_image(version));
        ctx.effect(&format!("stage {} with {}", context.display(), path.display()), (), || {
            std::fs::create_dir_all(&context).with_context(|| format!("cannot create {}", context.display()))?;
            std::fs::copy(&path, context.join(file)).with_context(|| format!("cannot copy {}", path.display()))?;
            // Nothing but the file: no base, no shell, nothing to run.
            std::fs::write(context.join("Dockerfile"), format!("FROM scratch\nCOPY {file} /{file}\n"))
                .with_context(|| format!("cannot write {}", context.join("Dockerfile").display()))
        })?;
        let built = ctx.run_explained(
            cmd!(
                sh,
                "docker build --quiet --tag {image} --label {application} --label {mine} --label {describes} {context}"
            )
            .env("DOCKER_BUILDKIT", buildkit),
            &[notice::LEGACY_BUILDER],
        );
        let removed = ctx.remove(&context);
        built.and(removed)
    })
}

/// DOCKER_BUILDKIT for the build: "1" (BuildKit) when the docker CLI has
/// the buildx component, which the docker CLI 23+ needs for BuildKit; else
/// empty, which the CLI takes as unset: the legacy builder, whose notice
/// [`notice::LEGACY_BUILDER`] explains (Debian 12 ships no buildx, and a
/// DOCKER_BUILDKIT=1 of the caller's would then fail the build).
fn buildkit(ctx: &Ctx) -> &'static str {
    // Its "unknown command" on a CLI without buildx is the answer, not ours
    // to show.
    let buildx = ctx.read(cmd!(ctx.sh(), "docker buildx version").ignore_stderr()).is_ok();
    if buildx { "1" } else { "" }
}

/// Where cargo puts build output: CARGO_TARGET_DIR, else target/.
fn target_dir(ctx: &Ctx) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => ctx.settings.root.join(dir),
        None => ctx.settings.root.join("target"),
    }
}

/// The Linux GNU target of this machine's architecture: the image runs on
/// the same kind of machine it was built on.
fn static_target() -> Result<String> {
    if std::env::consts::OS != "linux" {
        bail!(
            "the release image holds a Linux binary built on the host: run `cargo xtask build` on Linux \
             (or in a Linux VM / CI runner)"
        );
    }
    Ok(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
}

/// The build context holds only what the image gets: `rootfs/` the binary,
/// mode 0555, which the Dockerfile copies as root's (the process cannot
/// replace it); `writable/` the empty /data and /public directories, which it
/// hands to the non-root user (named volumes copy that ownership when first
/// mounted). Modes are set here: COPY keeps them, and the legacy builder has
/// no `--chmod`.
fn stage_context(binary: &Path, context: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if context.exists() {
        std::fs::remove_dir_all(context).with_context(|| format!("cannot clear {}", context.display()))?;
    }
    let rootfs = context.join("rootfs");
    let writable = context.join("writable");
    for dir in [rootfs.clone(), writable.join("data"), writable.join("public")] {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
    }
    let staged = rootfs.join(PACKAGE);
    std::fs::copy(binary, &staged).with_context(|| format!("cannot copy the service binary {}", binary.display()))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o555))
        .with_context(|| format!("cannot set the mode of {}", staged.display()))?;
    Ok(())
}
