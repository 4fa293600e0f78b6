//! Local images a test builds (nothing is pulled), untagged when dropped.

use std::process::Command;

use xtask_test_support::run_ok;

/// Local image tags made by a test, removed (untagged) when dropped.
pub struct Images(pub Vec<String>);

impl Images {
    /// A tiny image `FROM scratch` (one text file, `LABEL application=todobackend`),
    /// built locally (nothing pulled) and tagged `tag`. `content` makes it unique.
    pub fn build_scratch(tag: &str, content: &str) -> Images {
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
        Images(vec![tag.to_owned()])
    }

    /// Also remove `tag` when dropped (a tag the code under test made).
    pub fn track(&mut self, tag: &str) {
        self.0.push(tag.to_owned());
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
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        for tag in &self.0 {
            let _ = Command::new("docker").args(["image", "rm", "--force", tag]).output();
        }
    }
}
