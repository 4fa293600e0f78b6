//! Where the PostgreSQL database is: `TODOBACKEND_DATABASE_URL`
//! (`postgres://USER@HOST:PORT/DB?sslmode=MODE`) and the password in the
//! file named by `TODOBACKEND_DATABASE_PASSWORD_FILE` (Docker secrets
//! convention). Parsed by hand: the URL is the small libpq subset the
//! service needs, and every refusal names the variable and the fix.

use std::fmt;

pub const URL_VAR: &str = "TODOBACKEND_DATABASE_URL";
pub const PASSWORD_FILE_VAR: &str = "TODOBACKEND_DATABASE_PASSWORD_FILE";

const EXAMPLE: &str = "postgres://USER@HOST:PORT/DB";

/// libpq's `sslmode` values. `verify-ca` and `verify-full` need a root
/// certificate, which a `FROM scratch` image does not carry, so they are
/// refused with that reason rather than silently weakened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, else plain (libpq's default).
    Prefer,
    /// TLS or no connection. As in libpq without a root certificate, the
    /// server's certificate is not checked against a CA: the session is
    /// encrypted, which is what RDS's `rds.force_ssl` asks for.
    Require,
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
    pub password: Option<Password>,
}

impl Target {
    /// Reads the two variables; `None` when the URL is unset (SQLite).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Target>, String> {
        let Some(url) = env(URL_VAR).filter(|v| !v.is_empty()) else { return Ok(None) };
        let mut target = parse_url(&url)?;
        if let Some(file) = env(PASSWORD_FILE_VAR).filter(|v| !v.is_empty()) {
            target.password = Some(read_password(&file)?);
        }
        Ok(Some(target))
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

/// Parses `postgres://USER@HOST[:PORT][/DB][?sslmode=MODE]` (or
/// `postgresql://`). A password in the URL is refused without echoing it:
/// it belongs in the password file, out of the service's environment.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let malformed = |why: &str| format!("{URL_VAR} is not a PostgreSQL URL: {why}; write it as {EXAMPLE}");
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| malformed("it must start with postgres:// or postgresql://"))?;
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, path),
        None => (rest, ""),
    };
    let (userinfo, hostport) = authority.rsplit_once('@').ok_or_else(|| malformed("it names no user (USER@)"))?;
    if userinfo.contains(':') {
        return Err(format!(
            "{URL_VAR} holds a password; remove it from the URL and put it in the file named by {PASSWORD_FILE_VAR}"
        ));
    }
    let user = percent_decode(userinfo, "user")?;
    if user.is_empty() {
        return Err(malformed("the user is empty"));
    }
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or_else(|| malformed("an IPv6 host lacks its ]"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| malformed("junk after the IPv6 host"))?),
        };
        (host.to_owned(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (percent_decode(host, "host")?, Some(port)),
            None => (percent_decode(hostport, "host")?, None),
        }
    };
    if host.is_empty() {
        return Err(malformed("the host is empty"));
    }
    if host.contains(',') {
        return Err(malformed("several hosts are not supported"));
    }
    let port = match port {
        None => 5432,
        Some(p) => {
            p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| malformed(&format!("port {p:?} is not 1-65535")))?
        }
    };
    let dbname = if path.is_empty() { user.clone() } else { percent_decode(path, "database name")? };
    if dbname.contains('/') {
        return Err(malformed("the database name contains /"));
    }
    let mut sslmode = SslMode::Prefer;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                sslmode = match value {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" | "verify-full" => {
                        return Err(format!(
                            "{URL_VAR}: sslmode={value} needs a root certificate, which this image does not carry; use sslmode=require (encrypted, as libpq does without a root certificate)"
                        ));
                    }
                    other => {
                        return Err(format!("{URL_VAR}: unknown sslmode {other:?}; use disable, prefer or require"));
                    }
                }
            }
            other => {
                return Err(format!("{URL_VAR}: unsupported parameter {other:?}; only sslmode is understood"));
            }
        }
    }
    Ok(Target { user, host, port, dbname, sslmode, password: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_their_parts() {
        let t = parse_url("postgres://app@db:5433/todos?sslmode=require").unwrap();
        assert_eq!((t.user.as_str(), t.host.as_str(), t.port, t.dbname.as_str()), ("app", "db", 5433, "todos"));
        assert_eq!(t.sslmode, SslMode::Require);
        let t = parse_url("postgresql://app@db").unwrap();
        assert_eq!((t.port, t.dbname.as_str(), t.sslmode), (5432, "app", SslMode::Prefer));
        let t = parse_url("postgres://a%40b@[::1]:6000/x%20y?sslmode=disable").unwrap();
        assert_eq!((t.user.as_str(), t.host.as_str(), t.port, t.dbname.as_str()), ("a@b", "::1", 6000, "x y"));
        assert_eq!(t.display(), "postgres://a@b@[::1]:6000/x y");
        assert_eq!(parse_url("postgres://u@127.0.0.1/").unwrap().dbname, "u");
    }

    #[test]
    fn bad_urls_are_one_line_errors_naming_the_variable() {
        for (url, fragment) in [
            ("mysql://u@h/d", "postgres://"),
            ("postgres://h/d", "no user"),
            ("postgres://@h/d", "user is empty"),
            ("postgres://u@/d", "host is empty"),
            ("postgres://u@h:x/d", "port"),
            ("postgres://u@h:0/d", "port"),
            ("postgres://u@h1,h2/d", "several hosts"),
            ("postgres://u@h/d?sslmode=maybe", "sslmode"),
            ("postgres://u@h/d?sslmode=verify-full", "root certificate"),
            ("postgres://u@h/d?foo=1", "foo"),
            ("postgres://u@[::1/d", "]"),
            ("postgres://u@h/d%zz", "%-escape"),
        ] {
            let err = parse_url(url).unwrap_err();
            assert!(err.contains(URL_VAR) && err.contains(fragment) && !err.contains('\n'), "{url}: {err}");
        }
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
