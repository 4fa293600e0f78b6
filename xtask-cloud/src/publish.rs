//! `publish`: tag the local release image (`<compose project>/<repository>:
//! <APP_VERSION>`, as `build` named it) for the registry, as
//! `<registry>/<repository>:<APP_VERSION>` and `:latest`, and push both
//! through the Docker engine API, with the credential of a fresh ECR token
//! (no earlier `login` needed), and the release's SBOM image (`build` made it:
//! `<version>.sbom`, sbom.rs) beside them as `<registry>/<repository>:
//! <APP_VERSION>.sbom`; then print each tag's digest as the registry has it:
//! `<ref>@sha256:...` on stdout.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptionsBuilder, TagImageOptionsBuilder};
use futures_util::StreamExt;

use crate::async_ctx::AsyncCtx;
use crate::ecr::{self, Authorization};
use crate::progress::{self, Progress};
use crate::registry::{self, RegistryProblem};
use xtask::ctx::Ctx;

/// Attempts per push when the registry fails transiently (reset, 5xx).
const PUSH_ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_secs(2);

use xtask::flags::PublishArgs as Args;

pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let version = ctx.version().to_owned();
    check_version(&version, args.allow_dirty)?;
    let local = ctx.settings.local_image(&version);
    let versioned = ctx.settings.image(&version);
    let latest = ctx.settings.image("latest");
    let sbom_tag = xtask::sbom::tag(&version);
    let local_sbom = ctx.settings.local_image(&sbom_tag);
    let sbom = ctx.settings.image(&sbom_tag);

    // A read: it runs in a dry run too, where the image may not be built
    // (`ci --dry-run` only planned the build).
    let layers = ctx.step("check the release image and its SBOM are built", || {
        let layers = ctx.block_on(async {
            let docker = ctx.docker().await?;
            let release = local_layers(&docker, &local, "run `cargo xtask test` first").await?;
            // No release without its SBOM: both come from the same `build`.
            let sbom =
                local_layers(&docker, &local_sbom, "`cargo xtask build` (or `test`) makes it with the image").await?;
            Ok((release, sbom))
        });
        ctx.read_or_plan(&format!("inspect {local} and {local_sbom}"), (0, 0), layers)
    })?;
    let auth = ctx.step("get an ECR authorization token", || ecr::authorization(ctx))?;
    if args.create_repository {
        ctx.step(&format!("make sure ECR repository {} exists", ctx.settings.repository), || ensure_repository(ctx))?;
    }
    // What is pushed: (local image, registry reference, tag, its layers).
    let pushes = [
        (&local, &versioned, version.as_str(), layers.0),
        (&local, &latest, "latest", layers.0),
        (&local_sbom, &sbom, sbom_tag.as_str(), layers.1),
    ];
    ctx.step(&format!("tag {local} and {local_sbom} for the registry"), || {
        for (from, image, tag, _) in pushes {
            ctx.call(&format!("docker tag {from} {image}"), (), async {
                let docker = ctx.docker().await?;
                let options = TagImageOptionsBuilder::new().repo(&ctx.settings.image_name()).tag(tag).build();
                docker.tag_image(from, Some(options)).await.with_context(|| format!("cannot tag {from} as {image}"))
            })?;
        }
        Ok(())
    })?;
    for (_, image, tag, layers) in pushes {
        ctx.step(&format!("push {image}"), || {
            ctx.call(&format!("docker push {image} (credential of the ECR token)"), (), async {
                let docker = ctx.docker().await?;
                push_with_retries(&docker, ctx, &auth, tag, layers).await
            })
        })?;
    }
    let digests = ctx.step("resolve the pushed tags in the registry", || {
        // Nothing was pushed in a dry run: no digests to print.
        ctx.call(&format!("engine distribution inspect of {versioned}, {latest} and {sbom}"), Vec::new(), async {
            let docker = ctx.docker().await?;
            let mut digests = Vec::new();
            for (_, image, _, _) in pushes {
                digests.push((image.clone(), registry::digest(&docker, image, Some(auth.docker_credentials())).await?));
            }
            Ok(digests)
        })
    })?;
    for (image, digest) in digests {
        xtask::output::result(&format!("{image}@{digest}"));
    }
    Ok(())
}

/// A `-dirty` version was built from uncommitted changes: no tag should claim
/// it is a commit's build unless the user says so.
fn check_version(version: &str, allow_dirty: bool) -> Result<()> {
    if version.ends_with("-dirty") && !allow_dirty {
        bail!(
            "version {version} was built from uncommitted changes: commit them and run `cargo xtask test` again, \
             or pass --allow-dirty"
        );
    }
    Ok(())
}

/// The number of layers of the local image; `way_out` when it is missing.
async fn local_layers(docker: &Docker, image: &str, way_out: &str) -> Result<usize> {
    match docker.inspect_image(image).await {
        Ok(inspect) => Ok(inspect.root_fs.and_then(|fs| fs.layers).map_or(0, |layers| layers.len())),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
            bail!("the image {image} is not built: {way_out}")
        }
        Err(err) => Err(err).with_context(|| format!("cannot inspect the local image {image}")),
    }
}

/// DescribeRepositories; CreateRepository when it says the repository is missing.
fn ensure_repository(ctx: &Ctx) -> Result<()> {
    let settings = &ctx.settings;
    let repository = settings.repository.clone();
    let description = format!("ecr DescribeRepositories {repository}, then CreateRepository {repository} if missing");
    ctx.call(&description, (), async {
        let client = ecr::client(settings).await?;
        let described = client.describe_repositories().repository_names(&repository).send().await;
        match described {
            Ok(_) => {
                ctx.say(&format!("ECR repository {repository} exists"));
                Ok(())
            }
            Err(err) if err.as_service_error().is_some_and(|e| e.is_repository_not_found_exception()) => {
                client
                    .create_repository()
                    .repository_name(&repository)
                    .send()
                    .await
                    .map_err(|err| ecr::explain_sdk_error("ECR CreateRepository", &err, settings))?;
                ctx.say(&format!("created ECR repository {repository}"));
                Ok(())
            }
            Err(err) => Err(ecr::explain_sdk_error("ECR DescribeRepositories", &err, settings)),
        }
    })
}

/// Push `tag` of the settings' image, again after a transient failure, with
/// backoff; any other failure ends it at once.
async fn push_with_retries(docker: &Docker, ctx: &Ctx, auth: &Authorization, tag: &str, layers: usize) -> Result<()> {
    let image = ctx.settings.image(tag);
    let name = ctx.settings.image_name();
    let (result, attempts) = retry(
        PUSH_ATTEMPTS,
        FIRST_BACKOFF,
        |attempt, reason| {
            ctx.say(&format!("push of {image} failed ({reason}); attempt {attempt} of {PUSH_ATTEMPTS} follows"));
        },
        || push(docker, &name, tag, auth.docker_credentials(), layers),
    )
    .await;
    result.map_err(|reason| {
        let what = if attempts > 1 { format!("push {image} ({attempts} attempts)") } else { format!("push {image}") };
        registry::explain_registry_error(&what, &auth.registry, &reason)
    })
}

/// Run `op` up to `attempts` times while it fails transiently (see
/// [`registry::classify_registry_error`]), sleeping `backoff`, then twice that, ...
/// between attempts. Returns the last result and the attempts made.
async fn retry<Fut>(
    attempts: u32,
    backoff: Duration,
    mut announce: impl FnMut(u32, &str),
    mut op: impl FnMut() -> Fut,
) -> (std::result::Result<(), String>, u32)
where
    Fut: std::future::Future<Output = std::result::Result<(), String>>,
{
    let mut backoff = backoff;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(reason)
                if attempt < attempts && registry::classify_registry_error(&reason) == RegistryProblem::Transient =>
            {
                attempt += 1;
                announce(attempt, &reason);
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            result => return (result, attempt),
        }
    }
}

/// One push, its stream drained to the end; progress on stderr. The error is
/// Docker's reason as text, for classification.
async fn push(
    docker: &Docker,
    name: &str,
    tag: &str,
    credentials: DockerCredentials,
    layers: usize,
) -> std::result::Result<(), String> {
    let image = format!("{name}:{tag}");
    let mut progress = Progress::new(&image);
    let mut tracker = PushTracker::new(layers);
    let options = PushImageOptionsBuilder::new().tag(tag).build();
    let mut stream = docker.push_image(name, Some(options), Some(credentials));
    while let Some(item) = stream.next().await {
        let info = item.map_err(|err| registry::docker_error_text(&err))?;
        if let Some(detail) = info.error_detail.and_then(|detail| detail.message) {
            return Err(detail);
        }
        let Some(status) = info.status else { continue };
        let (current, total) = info.progress_detail.map_or((None, None), |detail| (detail.current, detail.total));
        match tracker.event(&status, current, total) {
            Event::Milestone(text) => progress.milestone(tracker.fraction(), &text),
            Event::Progress(text) => progress.update(tracker.fraction(), &text),
            Event::None => {}
        }
    }
    progress.finish(&tracker.summary());
    Ok(())
}

enum Event {
    Milestone(String),
    Progress(String),
    None,
}

/// Makes sense of a push stream. Docker's push messages carry a layer id that
/// bollard's `PushImageInfo` does not keep, so layers are counted, not named.
struct PushTracker {
    layers: usize,
    done: usize,
    current: Option<(i64, i64)>,
    digest: Option<String>,
}

impl PushTracker {
    fn new(layers: usize) -> PushTracker {
        PushTracker { layers, done: 0, current: None, digest: None }
    }

    fn fraction(&self) -> f64 {
        let total = self.layers.max(self.done).max(1) as f64;
        let partial = match self.current {
            Some((current, size)) if size > 0 => current as f64 / size as f64,
            _ => 0.0,
        };
        ((self.done as f64 + partial) / total).min(1.0)
    }

    fn counter(&self) -> String {
        format!("{}/{}", self.done, self.layers.max(self.done))
    }

    fn event(&mut self, status: &str, current: Option<i64>, total: Option<i64>) -> Event {
        let kind = status.split_whitespace().collect::<Vec<_>>();
        if status == "Pushed" || status == "Layer already exists" || status.starts_with("Mounted from") {
            self.done += 1;
            self.current = None;
            let how = match status {
                "Pushed" => "pushed".to_owned(),
                "Layer already exists" => "already in the registry".to_owned(),
                other => other.to_lowercase(),
            };
            Event::Milestone(format!("layer {} {how}", self.counter()))
        } else if status == "Pushing" {
            if let (Some(current), Some(total)) = (current, total) {
                self.current = Some((current, total));
                Event::Progress(format!(
                    "layers {} done, pushing {} of {}",
                    self.counter(),
                    progress::bytes(current),
                    progress::bytes(total)
                ))
            } else {
                Event::None
            }
        } else if let Some(digest) = kind.iter().position(|word| *word == "digest:").and_then(|i| kind.get(i + 1)) {
            // The closing line of the push shows it.
            self.digest = Some((*digest).to_owned());
            Event::None
        } else if status.starts_with("The push refers to") {
            let plural = if self.layers == 1 { "" } else { "s" };
            Event::Milestone(format!("pushing {} layer{plural}", self.layers))
        } else {
            Event::None
        }
    }

    fn summary(&self) -> String {
        match &self.digest {
            Some(digest) => format!("pushed, {} layers, {digest}", self.counter()),
            None => format!("pushed, {} layers", self.counter()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_versions_need_the_flag() {
        let err = check_version("abc1234-dirty", false).unwrap_err().to_string();
        assert!(err.contains("--allow-dirty"), "{err}");
        check_version("abc1234-dirty", true).unwrap();
        check_version("abc1234", false).unwrap();
    }

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
    }

    #[test]
    fn transient_failures_are_retried_a_bounded_number_of_times() {
        let answers = |list: Vec<std::result::Result<(), String>>| {
            let mut list = list.into_iter();
            move || std::future::ready(list.next().unwrap_or(Ok(())))
        };
        let reset = || Err("read tcp: connection reset by peer".to_owned());
        let unavailable = || Err("received unexpected HTTP status: 503 Service Unavailable".to_owned());
        let refused = || Err("dial tcp 127.0.0.1:1: connect: connection refused".to_owned());
        let mut announced = Vec::new();
        let (result, attempts) =
            block_on(retry(3, Duration::ZERO, |n, _| announced.push(n), answers(vec![reset(), unavailable(), Ok(())])));
        assert_eq!((result, attempts), (Ok(()), 3));
        assert_eq!(announced, [2, 3]);
        let (result, attempts) =
            block_on(retry(3, Duration::ZERO, |_, _| {}, answers(vec![reset(), reset(), reset(), Ok(())])));
        assert_eq!((result.is_err(), attempts), (true, 3), "gives up after 3 attempts");
        let (result, attempts) = block_on(retry(3, Duration::ZERO, |_, _| {}, answers(vec![refused(), Ok(())])));
        assert_eq!((result.is_err(), attempts), (true, 1), "an unreachable registry is not retried");
    }

    #[test]
    fn push_stream_is_tracked() {
        let mut tracker = PushTracker::new(2);
        assert!(matches!(tracker.event("The push refers to repository [r/x]", None, None), Event::Milestone(_)));
        assert!(matches!(tracker.event("Preparing", None, None), Event::None));
        assert!(matches!(tracker.event("Pushing", Some(512), Some(1024)), Event::Progress(_)));
        assert!((tracker.fraction() - 0.25).abs() < 1e-9);
        match tracker.event("Pushed", None, None) {
            Event::Milestone(text) => assert_eq!(text, "layer 1/2 pushed"),
            _ => panic!("Pushed is a milestone"),
        }
        match tracker.event("Layer already exists", None, None) {
            Event::Milestone(text) => assert_eq!(text, "layer 2/2 already in the registry"),
            _ => panic!("an existing layer is a milestone"),
        }
        tracker.event("1: digest: sha256:abc size: 528", None, None);
        assert_eq!(tracker.digest.as_deref(), Some("sha256:abc"));
        assert_eq!(tracker.fraction(), 1.0);
    }
}
