//! Image references (`registry:port/path:tag@digest`) split into their parts:
//! deploy compares the images the swarm runs with the ones it expects, and
//! the registry is found from the reference.

/// An image reference split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (and port); `None` for Docker Hub's implicit one.
    pub registry: Option<String>,
    /// `registry/path` (or `path`), without tag or digest.
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(reference: &str) -> ImageRef {
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.to_owned())),
            None => (reference, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |index| index + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(colon) => (&rest[..last_slash + colon], Some(rest[last_slash + colon + 1..].to_owned())),
            None => (rest, None),
        };
        let registry = name
            .split_once('/')
            .map(|(first, _)| first)
            .filter(|first| first.contains('.') || first.contains(':') || *first == "localhost");
        ImageRef { registry: registry.map(str::to_owned), name: name.to_owned(), tag, digest }
    }

    /// The version it names: its tag, else `latest`, as Docker defaults it
    /// (status, logs, rollback and deploy's progress all say this).
    pub fn version(&self) -> String {
        self.tag.clone().unwrap_or_else(|| "latest".to_owned())
    }

    /// `name:tag` (the tag defaults to `latest`, as Docker's does).
    pub fn name_tag(&self) -> String {
        format!("{}:{}", self.name, self.version())
    }

    /// Whether a task or service image (`name:tag@digest`) is this image: same
    /// name and tag, and the same digest where both know it.
    pub fn matches(&self, other: &str, digest: Option<&str>) -> bool {
        let other = ImageRef::parse(other);
        if other.name_tag() != self.name_tag() {
            return false;
        }
        match (other.digest.as_deref(), digest.or(self.digest.as_deref())) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let image = ImageRef::parse("127.0.0.1:5000/todobackend:abc@sha256:1");
        assert_eq!(image.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(image.name, "127.0.0.1:5000/todobackend");
        assert_eq!(image.tag.as_deref(), Some("abc"));
        assert_eq!(image.digest.as_deref(), Some("sha256:1"));
        let plain = ImageRef::parse("library/alpine");
        assert_eq!(plain.registry, None);
        assert_eq!(plain.name_tag(), "library/alpine:latest");
        assert_eq!(plain.version(), "latest");
        assert_eq!(image.version(), "abc");
        assert_eq!(ImageRef::parse("localhost/x:1").registry.as_deref(), Some("localhost"));
        assert_eq!(ImageRef::parse("reg:5000/x").tag, None);
    }

    #[test]
    fn image_matching_uses_the_digest_when_both_sides_know_it() {
        let target = ImageRef::parse("r:5000/app:B");
        assert!(target.matches("r:5000/app:B@sha256:new", Some("sha256:new")));
        assert!(!target.matches("r:5000/app:B@sha256:old", Some("sha256:new")));
        assert!(target.matches("r:5000/app:B", Some("sha256:new")));
        assert!(!target.matches("r:5000/app:A@sha256:new", Some("sha256:new")));
        assert!(target.matches("r:5000/app:B@sha256:any", None));
    }
}
