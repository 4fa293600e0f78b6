//! Known notices of the tools we run, which are not ours to show: the docker
//! CLI's "legacy builder is deprecated" and docker-compose v1's "running in
//! swarm mode" print in the middle of our output and explain nothing about
//! our run. [`Filter`] takes a command's stderr line by line, holds back a
//! known notice (its lines, from the first to the last) and gives our own
//! one-line account in its place; any other line passes as it is.

/// A tool's notice: its first line contains `first` (a sentence specific
/// enough to be no other line: a prefix such as compose's `WARNING: `
/// comes and goes with the terminal), its last line contains one of
/// `last`; `ours` says in one line what it means for us.
#[derive(Debug)]
pub struct Notice {
    pub first: &'static str,
    pub last: &'static [&'static str],
    pub ours: &'static str,
}

/// docker CLI 23+ without the buildx component, building with the legacy
/// builder (or with DOCKER_BUILDKIT=0).
pub const LEGACY_BUILDER: Notice = Notice {
    first: "DEPRECATED: The legacy builder is deprecated",
    last: &["docs.docker.com/go/buildx", "environment-variable"],
    ours: "note: this docker CLI has no buildx component, so the image is built with the legacy builder \
           (the docker CLI's deprecation notice); it builds the same image, and installing buildx switches to BuildKit",
};

/// docker-compose v1's `up` on an engine that is a swarm manager.
pub const COMPOSE_SWARM: Notice = Notice {
    first: "The Docker Engine you're using is running in swarm mode",
    last: &["docker stack deploy"],
    ours: "note: this engine is a swarm manager; the local environment runs as plain containers on this node, \
           as intended (compose's swarm-mode warning)",
};

/// A notice held for longer than this many lines was not the notice: its
/// lines pass after all.
const LONGEST_NOTICE: usize = 10;

/// What to print for one line of a command's stderr.
#[derive(Debug, PartialEq, Eq)]
pub enum Out {
    /// A line of the command's, to pass on.
    Line(String),
    /// Our account of a notice that was held back.
    Ours(&'static str),
}

/// Holds back the `notices` in a stream of lines.
pub struct Filter<'a> {
    notices: &'a [Notice],
    /// The notice being held back, and its lines so far.
    held: Option<(&'a Notice, Vec<String>)>,
    /// The blank line that closes some notices goes with them.
    after_notice: bool,
}

impl<'a> Filter<'a> {
    pub fn new(notices: &'a [Notice]) -> Filter<'a> {
        Filter { notices, held: None, after_notice: false }
    }

    /// The lines to print now for `line`.
    pub fn line(&mut self, line: &str) -> Vec<Out> {
        if let Some((notice, mut lines)) = self.held.take() {
            lines.push(line.to_owned());
            if notice.last.iter().any(|last| line.contains(last)) {
                self.after_notice = true;
                return vec![Out::Ours(notice.ours)];
            }
            if lines.len() > LONGEST_NOTICE {
                return lines.into_iter().map(Out::Line).collect();
            }
            self.held = Some((notice, lines));
            return Vec::new();
        }
        if std::mem::take(&mut self.after_notice) && line.trim().is_empty() {
            return Vec::new();
        }
        match self.notices.iter().find(|notice| line.contains(notice.first)) {
            Some(notice) if notice.last.iter().any(|last| line.contains(last)) => {
                self.after_notice = true;
                vec![Out::Ours(notice.ours)]
            }
            Some(notice) => {
                self.held = Some((notice, vec![line.to_owned()]));
                Vec::new()
            }
            None => vec![Out::Line(line.to_owned())],
        }
    }

    /// The lines still held when the stream ends: a notice cut short is
    /// shown as it came.
    pub fn finish(&mut self) -> Vec<Out> {
        self.held.take().map(|(_, lines)| lines.into_iter().map(Out::Line).collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filtered(notices: &[Notice], text: &str) -> Vec<Out> {
        let mut filter = Filter::new(notices);
        let mut out: Vec<Out> = text.lines().flat_map(|line| filter.line(line)).collect();
        out.extend(filter.finish());
        out
    }

    fn line(text: &str) -> Out {
        Out::Line(text.to_owned())
    }

    #[test]
    fn the_legacy_builders_notice_becomes_our_line_and_the_build_output_stays() {
        // docker CLI 28.2 without buildx, as it prints it.
        let text = "DEPRECATED: The legacy builder is deprecated and will be removed in a future release.\n            \
                    Install the buildx component to build images with BuildKit:\n            \
                    https://docs.docker.com/go/buildx/\n\nSending build context to Docker daemon  3.1MB\n\
                    Step 1/12 : FROM scratch\n ---> \n";
        assert_eq!(
            filtered(&[LEGACY_BUILDER, COMPOSE_SWARM], text),
            [
                Out::Ours(LEGACY_BUILDER.ours),
                line("Sending build context to Docker daemon  3.1MB"),
                line("Step 1/12 : FROM scratch"),
                line(" ---> ")
            ]
        );
    }

    #[test]
    fn composes_swarm_warning_becomes_our_line() {
        // docker-compose 1.29's `up`, as it prints it to a pipe; to a
        // terminal, after `WARNING: `.
        let text = "The Docker Engine you're using is running in swarm mode.\n\nCompose does not use swarm \
                    mode to deploy services to multiple nodes in a swarm. All containers will be scheduled on the \
                    current node.\n\nTo deploy your application across the swarm, use `docker stack deploy`.\n\n\
                    Creating x_app_1 ... done\n";
        for text in [text.to_owned(), format!("WARNING: {text}")] {
            assert_eq!(
                filtered(&[COMPOSE_SWARM], &text),
                [Out::Ours(COMPOSE_SWARM.ours), line("Creating x_app_1 ... done")]
            );
        }
    }

    #[test]
    fn a_notice_that_does_not_end_as_known_is_shown_as_it_came() {
        let mut text = String::from("WARNING: The Docker Engine you're using is running in swarm mode.\n");
        for n in 0..20 {
            text.push_str(&format!("line {n}\n"));
        }
        let out = filtered(&[COMPOSE_SWARM], &text);
        assert_eq!(out.len(), 21, "{out:?}");
        assert!(out.iter().all(|out| matches!(out, Out::Line(_))));
        let cut = filtered(&[COMPOSE_SWARM], "WARNING: The Docker Engine you're using is running in swarm mode.\n");
        assert_eq!(cut.len(), 1, "a stream ending inside a notice shows it");
        // Unknown warnings pass.
        assert_eq!(filtered(&[COMPOSE_SWARM], "WARNING: other\n"), [line("WARNING: other")]);
    }
}
