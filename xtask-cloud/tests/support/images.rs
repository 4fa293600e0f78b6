//! Local images a test builds (nothing is pulled), removed when dropped:
//! their tags, then the images themselves by id, so that no untagged image
//! stays (a tag that a later build moved left its old image dangling).

use std::process::Command;

use xtask_test_support::run_ok;

/// Local image tags made by a test, removed (untagged) when dropped, and the
/// images they named, removed by id once no other tag names them.
pub struct Images(pub Vec<String>, Vec<String>);

/// The id of the image `tag` names, if any.
fn image_id(tag: &str) -> Option<String> {
    let out = Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", tag]).output().ok()?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !id.is_empty()).then_some(id)
}

impl Images {
    /// None yet: the test tracks the tags it or the code under test makes.
    pub fn new() -> Images {
        Images(Vec::new(), Vec::new())
    }

    /// A tiny image `FROM scratch` (one text file, `LABEL application=todobackend`),
    /// built locally (nothing pulled) and tagged `tag`. `content` makes it unique.
    pub fn build_scratch(tag: &str, content: &str) -> Images {
        let mut images = Images::new();
        images.add_scratch(tag, content);
        images
    }

    /// One more [`Images::build_scratch`] image, removed with the others.
    pub fn add_scratch(&mut self, tag: &str, content: &str) {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("hello.txt"), content).expect("write file");
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nLABEL application=todobackend\nCOPY hello.txt /hello.txt\n",
        )
        .expect("write Dockerfile");
        // --no-cache: with the legacy builder, tests building at once share
        // the LABEL step's cached layer, and one test removing its image
        // removed the parent another's build was exporting onto.
        let build = ["build", "--quiet", "--no-cache", "--tag", tag];
        run_ok(
            Command::new("docker").args(build).arg(dir.path()).env("DOCKER_BUILDKIT", "0"),
            "docker build of a scratch image",
        );
        self.0.push(tag.to_owned());
        self.1.extend(image_id(tag));
    }

    /// Also remove `tag` when dropped (a tag the code under test made), and
    /// the image it names now (a later build may move the tag on).
    pub fn track(&mut self, tag: &str) {
        self.0.push(tag.to_owned());
        self.1.extend(image_id(tag));
    }

    /// An image `FROM base` with more Dockerfile `lines`, tagged `tag`.
    pub fn derive(&mut self, base: &str, tag: &str, lines: &str) {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("Dockerfile"), format!("FROM {base}\n{lines}\n")).expect("Dockerfile");
        self.track(tag);
        run_ok(
            Command::new("docker").args(["build", "--quiet", "--tag", tag]).arg(dir.path()).env("DOCKER_BUILDKIT", "0"),
            &format!("docker build {tag}"),
        );
        self.1.extend(image_id(tag));
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        let mut ids = std::mem::take(&mut self.1);
        for tag in &self.0 {
            ids.extend(image_id(tag));
            let _ = Command::new("docker").args(["image", "rm", "--force", tag]).output();
        }
        ids.sort();
        ids.dedup();
        // A pushed image keeps `<repository>@<digest>` after its tag goes:
        // those of the tracked tags' repositories go too (an image that is
        // also another's, such as the tests' edge image, keeps its own tag).
        let repositories: Vec<&str> = self
            .0
            .iter()
            .map(|tag| tag.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map_or(tag.as_str(), |(r, _)| r))
            .collect();
        for id in &ids {
            let digests = Command::new("docker")
                .args(["image", "inspect", "--format", "{{range .RepoDigests}}{{.}} {{end}}", id])
                .output();
            let Ok(digests) = digests else { continue };
            for reference in String::from_utf8_lossy(&digests.stdout).split_whitespace() {
                let repository = reference.split('@').next().unwrap_or_default();
                if repositories.contains(&repository) {
                    let _ = Command::new("docker").args(["image", "rm", reference]).output();
                }
            }
        }
        // By id, once untagged: an image that another tag still names is
        // someone else's too, and stays.
        for id in &ids {
            let tags = Command::new("docker").args(["image", "inspect", "--format", "{{len .RepoTags}}", id]).output();
            if tags.is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "0") {
                let _ = Command::new("docker").args(["image", "rm", "--force", id]).output();
            }
        }
    }
}
