//! Where the PostgreSQL database is: `TODOBACKEND_DATABASE_URL`
//! (`postgres://USER@HOST:PORT/DB?sslmode=MODE&channel_binding=MODE`), the
//! password in the file named by `TODOBACKEND_DATABASE_PASSWORD_FILE`
//! (Docker secrets convention) and the root certificates that vouch for the
//! server in the file named by `TODOBACKEND_DATABASE_CA_FILE`. Parsed by
//! hand: the URL is the small libpq subset the service needs, and every
//! refusal names the variable and the fix.

use std::fmt;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

pub const URL_VAR: &str = "TODOBACKEND_DATABASE_URL";
pub const PASSWORD_FILE_VAR: &str = "TODOBACKEND_DATABASE_PASSWORD_FILE";
pub const CA_FILE_VAR: &str = "TODOBACKEND_DATABASE_CA_FILE";

const EXAMPLE: &str = "postgres://USER@HOST:PORT/DB";

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, else plain (libpq's default without
    /// a root certificate).
    Prefer,
    /// TLS or no connection. As in libpq without a root certificate, the
    /// server's certificate is not checked against a CA: the session is
    /// encrypted, which is what RDS's `rds.force_ssl` asks for, but a relay
    /// with a certificate of its own is not told apart from the server.
    Require,
    /// TLS, and the server's certificate chains to a root of the CA file.
    VerifyCa,
    /// `VerifyCa`, and the certificate names the URL's host (the default
    /// when a CA file is given).
    VerifyFull,
}

impl SslMode {
    /// The server's certificate is checked against the CA file.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// libpq's `channel_binding` values: whether SCRAM authentication binds to
/// the TLS session (`SCRAM-SHA-256-PLUS`, RFC 5802 with RFC 5929's
/// tls-server-end-point), so that a relay that terminates TLS cannot pass
/// the authentication on to the real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelBinding {
    Disable,
    /// Bound when the server offers it (libpq's default).
    Prefer,
    /// Bound, or no connection: refused before any password or proof is
    /// sent to a server that does not offer `SCRAM-SHA-256-PLUS` (the
    /// default whenever the certificate is verified).
    Require,
}

/// The root certificates of `TODOBACKEND_DATABASE_CA_FILE`, read once at
/// start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFile {
    pub path: String,
    pub roots: Arc<[CertificateDer<'static>]>,
}

/// The password, kept out of every `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A parsed `TODOBACKEND_DATABASE_URL` and its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub user: String,
    /// A name (resolved by `resolve`) or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub sslmode: SslMode,
    pub channel_binding: ChannelBinding,
    pub password: Option<Password>,
    /// Set exactly when `sslmode` verifies.
    pub ca: Option<CaFile>,
}

impl Target {
    /// Reads the three variables; `None` when the URL is unset (SQLite).
    /// With a CA file, `sslmode` is `verify-full` unless the URL says
    /// otherwise (a CA given and then not used would be a surprise), and
    /// `channel_binding` is `require` unless the URL says otherwise.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Target>, String> {
        let Some(url) = env(URL_VAR).filter(|v| !v.is_empty()) else { return Ok(None) };
        let parsed = parse_url(&url)?;
        let ca_file = env(CA_FILE_VAR).filter(|v| !v.is_empty());
        let sslmode = match (parsed.sslmode, &ca_file) {
            (Some(mode), _) if mode.verifies() && ca_file.is_none() => {
                return Err(format!(
                    "{URL_VAR}: sslmode={} needs the root certificate(s) that sign the server's certificate; set {CA_FILE_VAR} to a PEM file holding them",
                    if mode == SslMode::VerifyFull { "verify-full" } else { "verify-ca" }
                ));
            }
            (Some(SslMode::Disable | SslMode::Prefer), Some(file)) => {
                return Err(format!(
                    "{CA_FILE_VAR}={file} is set but {URL_VAR} does not verify the server (sslmode disable or prefer); use sslmode=verify-full, or unset {CA_FILE_VAR}"
                ));
            }
            // libpq's rule: `require` with a root certificate checks the chain.
            (Some(SslMode::Require), Some(_)) => SslMode::VerifyCa,
            (Some(mode), _) => mode,
            (None, Some(_)) => SslMode::VerifyFull,
            (None, None) => SslMode::Prefer,
        };
        let channel_binding = parsed.channel_binding.unwrap_or(if sslmode.verifies() {
            ChannelBinding::Require
        } else {
            ChannelBinding::Prefer
        });
        if channel_binding == ChannelBinding::Require && sslmode == SslMode::Disable {
            return Err(format!(
                "{URL_VAR}: channel_binding=require needs TLS, and sslmode=disable turns it off; use sslmode=verify-full"
            ));
        }
        let ca = match ca_file {
            Some(file) => Some(read_ca_file(&file)?),
            None => None,
        };
        let password = match env(PASSWORD_FILE_VAR).filter(|v| !v.is_empty()) {
            Some(file) => Some(read_password(&file)?),
            None => None,
        };
        let Url { user, host, port, dbname, .. } = parsed;
        Ok(Some(Target { user, host, port, dbname, sslmode, channel_binding, password, ca }))
    }

    /// `postgres://user@host:port/db`, for logs and messages (no password).
    pub fn display(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("postgres://{}@{host}:{}/{}", self.user, self.port, self.dbname)
    }
}

/// The password file's content, minus one trailing newline (`echo` and
/// editors add one; `docker secret create` keeps what it is given).
pub fn read_password(file: &str) -> Result<Password, String> {
    let bytes = std::fs::read(file).map_err(|e| {
        format!("{PASSWORD_FILE_VAR}={file}: cannot read the password file ({e}); point it at a readable file holding the password")
    })?;
    let mut text = String::from_utf8(bytes)
        .map_err(|_| format!("{PASSWORD_FILE_VAR}={file}: the password file is not UTF-8 text"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(format!("{PASSWORD_FILE_VAR}={file}: the password file is empty; write the password into it"));
    }
    Ok(Password(text))
}

/// The CA file's certificates (PEM, one or more `CERTIFICATE` blocks;
/// anything else in the file is skipped, as libpq's root.crt allows). Each
/// must be usable as a trust anchor, checked here so that a bad file stops
/// the service at start rather than at its first connection.
pub fn read_ca_file(file: &str) -> Result<CaFile, String> {
    let bad = |why: String| format!("{CA_FILE_VAR}={file}: {why}");
    let bytes = std::fs::read(file).map_err(|e| {
        bad(format!("cannot read the CA file ({e}); point it at a readable PEM file of root certificates"))
    })?;
    let roots = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM file of certificates ({e})")))?;
    if roots.is_empty() {
        return Err(bad(
            "holds no certificate (-----BEGIN CERTIFICATE-----); write the root certificate(s) in PEM".into()
        ));
    }
    let mut store = tokio_rustls::rustls::RootCertStore::empty();
    for (index, root) in roots.iter().enumerate() {
        store
            .add(root.clone())
            .map_err(|e| bad(format!("certificate {} is not a usable root certificate ({e})", index + 1)))?;
    }
    Ok(CaFile { path: file.to_owned(), roots: roots.into() })
}

/// %-decodes one part of the URL, refusing a bad escape: the
/// percent-encoding crate (linked through `url`) keeps `%zz` as it is, and a
/// user or database name silently different from the one written is worse
/// than a one-line refusal.
fn percent_decode(part: &str, what: &str) -> Result<String, String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = part.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = hex else {
                return Err(format!("{URL_VAR}: bad %-escape in the {what}; write it as {EXAMPLE}"));
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{URL_VAR}: the {what} is not UTF-8"))
}

/// The URL's parts; `None` for a parameter it does not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub sslmode: Option<SslMode>,
    pub channel_binding: Option<ChannelBinding>,
}

/// Parses `postgres://USER@HOST[:PORT][/DB][?sslmode=MODE][&channel_binding=MODE]`
/// (or `postgresql://`). The URL's grammar (userinfo, brackets, port, path,
/// query) is the `url` crate's, already linked for the resolver; each part is
/// then %-decoded strictly here (a bad escape is refused, not kept). A
/// password in the URL is refused without echoing it: it belongs in the
/// password file, out of the service's environment.
pub fn parse_url(text: &str) -> Result<Url, String> {
    let malformed = |why: &str| format!("{URL_VAR} is not a PostgreSQL URL: {why}; write it as {EXAMPLE}");
    if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
        return Err(malformed("it must start with postgres:// or postgresql://"));
    }
    let parsed = url::Url::parse(text).map_err(|e| match e {
        url::ParseError::EmptyHost => malformed("the host is empty"),
        url::ParseError::InvalidPort => malformed("its port is not 1-65535"),
        url::ParseError::InvalidIpv6Address => malformed("a host in [ ] must be an IPv6 address, closed by ]"),
        other => malformed(&other.to_string()),
    })?;
    if parsed.password().is_some() {
        return Err(format!(
            "{URL_VAR} holds a password; remove it from the URL and put it in the file named by {PASSWORD_FILE_VAR}"
        ));
    }
    if parsed.fragment().is_some() {
        return Err(malformed("a # part is not understood"));
    }
    let user = percent_decode(parsed.username(), "user")?;
    if user.is_empty() {
        return Err(malformed("it names no user, or the user is empty (USER@HOST)"));
    }
    let host = match parsed.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Domain(name)) => percent_decode(name, "host")?,
        None => String::new(),
    };
    if host.is_empty() {
        return Err(malformed("the host is empty"));
    }
    if host.contains(',') {
        return Err(malformed("several hosts are not supported"));
    }
    let port = match parsed.port() {
        None => 5432,
        Some(0) => return Err(malformed("its port is not 1-65535")),
        Some(port) => port,
    };
    let path = parsed.path().strip_prefix('/').unwrap_or(parsed.path());
    let dbname = if path.is_empty() { user.clone() } else { percent_decode(path, "database name")? };
    if dbname.contains('/') {
        return Err(malformed("the database name contains /"));
    }
    let query = parsed.query();
    let (mut sslmode, mut channel_binding) = (None, None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                sslmode = Some(match value {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "{URL_VAR}: unknown sslmode {other:?}; use verify-full (with {CA_FILE_VAR}), verify-ca, require, prefer or disable"
                        ));
                    }
                })
            }
            "channel_binding" => {
                channel_binding = Some(match value {
                    "disable" => ChannelBinding::Disable,
                    "prefer" => ChannelBinding::Prefer,
                    "require" => ChannelBinding::Require,
                    other => {
                        return Err(format!(
                            "{URL_VAR}: unknown channel_binding {other:?}; use require, prefer or disable"
                        ));
                    }
                })
            }
            other => {
                return Err(format!(
                    "{URL_VAR}: unsupported parameter {other:?}; only sslmode and channel_binding are understood"
                ));
            }
        }
    }
    Ok(Url { user, host, port, dbname, sslmode, channel_binding })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_their_parts() {
        let t = parse_url("postgres://app@db:5433/todos?sslmode=require").unwrap();
        assert_eq!((t.user.as_str(), t.host.as_str(), t.port, t.dbname.as_str()), ("app", "db", 5433, "todos"));
        assert_eq!((t.sslmode, t.channel_binding), (Some(SslMode::Require), None));
        let t = parse_url("postgresql://app@db").unwrap();
        assert_eq!((t.port, t.dbname.as_str(), t.sslmode), (5432, "app", None));
        let t = parse_url("postgres://a%40b@[::1]:6000/x%20y?sslmode=disable").unwrap();
        assert_eq!((t.user.as_str(), t.host.as_str(), t.port, t.dbname.as_str()), ("a@b", "::1", 6000, "x y"));
        let t = parse_url("postgres://u@h/d?sslmode=verify-full&channel_binding=disable").unwrap();
        assert_eq!((t.sslmode, t.channel_binding), (Some(SslMode::VerifyFull), Some(ChannelBinding::Disable)));
        let env = |name: &str| (name == URL_VAR).then(|| "postgres://a%40b@[::1]:6000/x%20y".to_owned());
        let target = Target::from_env(&env).unwrap().unwrap();
        assert_eq!((target.sslmode, target.channel_binding), (SslMode::Prefer, ChannelBinding::Prefer));
        assert_eq!(target.display(), "postgres://a@b@[::1]:6000/x y");
        assert_eq!(parse_url("postgres://u@127.0.0.1/").unwrap().dbname, "u");
    }

    #[test]
    fn bad_urls_are_one_line_errors_naming_the_variable() {
        for (url, fragment) in [
            ("mysql://u@h/d", "postgres://"),
            ("postgres://h/d", "no user"),
            ("postgres://@h/d", "user is empty"),
            ("postgres://u@h/d#x", "# part"),
            ("postgres://u@/d", "host is empty"),
            ("postgres://u@h:x/d", "port"),
            ("postgres://u@h:0/d", "port"),
            ("postgres://u@h1,h2/d", "several hosts"),
            ("postgres://u@h/d?sslmode=maybe", "sslmode"),
            ("postgres://u@h/d?channel_binding=always", "channel_binding"),
            ("postgres://u@h/d?foo=1", "foo"),
            ("postgres://u@[::1/d", "]"),
            ("postgres://u@h/d%zz", "%-escape"),
        ] {
            let err = parse_url(url).unwrap_err();
            assert!(err.contains(URL_VAR) && err.contains(fragment) && !err.contains('\n'), "{url}: {err}");
        }
    }

    /// A root certificate made by `openssl req -x509` (P-256, CN=test root).
    const ROOT_PEM: &str = include_str!("../../../tests/data/test-root.pem");

    #[test]
    fn a_ca_file_makes_verify_full_and_channel_binding_the_defaults() {
        let dir = std::env::temp_dir().join(format!("todobackend-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        // Two roots and a key between them: the certificates are kept, the rest skipped.
        std::fs::write(
            &ca,
            format!("{ROOT_PEM}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{ROOT_PEM}"),
        )
        .unwrap();
        let ca_path = ca.to_str().unwrap().to_owned();
        let target_for = |url: &str, ca_file: Option<&str>| {
            let env = |name: &str| match name {
                URL_VAR => Some(url.to_owned()),
                CA_FILE_VAR => ca_file.map(str::to_owned),
                _ => None,
            };
            Target::from_env(&env).map(Option::unwrap)
        };
        let t = target_for("postgres://app@db/todos", Some(&ca_path)).unwrap();
        assert_eq!((t.sslmode, t.channel_binding), (SslMode::VerifyFull, ChannelBinding::Require));
        assert_eq!(t.ca.as_ref().unwrap().roots.len(), 2);
        let t = target_for("postgres://app@db/todos?sslmode=require", Some(&ca_path)).unwrap();
        assert_eq!((t.sslmode, t.channel_binding), (SslMode::VerifyCa, ChannelBinding::Require));
        let t =
            target_for("postgres://app@db/todos?sslmode=verify-full&channel_binding=prefer", Some(&ca_path)).unwrap();
        assert_eq!(t.channel_binding, ChannelBinding::Prefer);
        let t = target_for("postgres://app@db/todos?sslmode=require", None).unwrap();
        assert_eq!((t.sslmode, t.channel_binding, t.ca), (SslMode::Require, ChannelBinding::Prefer, None));

        std::fs::write(dir.join("empty.pem"), "no certificate here\n").unwrap();
        std::fs::write(dir.join("junk.pem"), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let absent = dir.join("absent.pem");
        for (url, file, fragment) in [
            ("postgres://app@db/todos?sslmode=verify-full", None, CA_FILE_VAR.to_owned()),
            ("postgres://app@db/todos?sslmode=verify-ca", None, CA_FILE_VAR.to_owned()),
            ("postgres://app@db/todos?sslmode=prefer", Some(ca_path.clone()), "sslmode=verify-full".to_owned()),
            ("postgres://app@db/todos?sslmode=disable&channel_binding=require", None, "needs TLS".to_owned()),
            (
                "postgres://app@db/todos",
                Some(absent.to_str().unwrap().to_owned()),
                "absent.pem: cannot read".to_owned(),
            ),
            (
                "postgres://app@db/todos",
                Some(dir.join("empty.pem").to_str().unwrap().to_owned()),
                "no certificate".to_owned(),
            ),
            (
                "postgres://app@db/todos",
                Some(dir.join("junk.pem").to_str().unwrap().to_owned()),
                "not a usable root".to_owned(),
            ),
        ] {
            let err = target_for(url, file.as_deref()).unwrap_err();
            assert!(err.contains(&fragment) && !err.contains('\n'), "{url} {file:?}: {err}");
            if let Some(file) = file {
                assert!(err.contains(&format!("{CA_FILE_VAR}={file}")), "{err}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_password_in_the_url_is_refused_without_being_echoed() {
        let err = parse_url("postgres://app:hunter2@db/todos").unwrap_err();
        assert!(err.contains(PASSWORD_FILE_VAR), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn the_password_file_loses_one_trailing_newline_and_never_shows() {
        let dir = std::env::temp_dir().join(format!("todobackend-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret\n\n").unwrap();
        let password = read_password(file.to_str().unwrap()).unwrap();
        assert_eq!(password.expose(), "s3cret\n");
        std::fs::write(&file, "s3cret\r\n").unwrap();
        assert_eq!(read_password(file.to_str().unwrap()).unwrap().expose(), "s3cret");
        let env = |name: &str| match name {
            URL_VAR => Some("postgres://app@db/todos".to_owned()),
            PASSWORD_FILE_VAR => Some(file.to_str().unwrap().to_owned()),
            _ => None,
        };
        let target = Target::from_env(&env).unwrap().unwrap();
        assert!(!format!("{target:?}").contains("s3cret"), "{target:?}");
        let missing = read_password(dir.join("absent").to_str().unwrap()).unwrap_err();
        assert!(missing.contains(PASSWORD_FILE_VAR) && missing.contains("absent"), "{missing}");
        std::fs::write(&file, "\n").unwrap();
        assert!(read_password(file.to_str().unwrap()).unwrap_err().contains("empty"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(Target::from_env(&|_| None).unwrap(), None);
    }
}
