//! Variable interpolation in the stack file, as the docker CLI does it
//! (Compose v3): `$$` is a literal `$`; `$VAR` and `${VAR}` are replaced by the
//! variable, empty when unset (the CLI only warns, and deploys `reg/:` images);
//! `${VAR:-default}` / `${VAR-default}` fall back to `default` when the
//! variable is unset or empty / unset; `${VAR:?err}` / `${VAR?err}` fail.
//!
//! Deploy refuses what the CLI would let through with an empty string: every
//! variable must be set or have a default. [`check`] finds every problem in
//! the file with its line; [`substitute`] expands one value.

use std::fmt;

/// Something in the stack file that would not interpolate to what was meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `${NAME}` or `$NAME` with NAME unset and no default.
    Unset { name: String, line: usize },
    /// `${NAME:?message}` / `${NAME?message}` with NAME unset (or empty).
    Required { name: String, message: String, line: usize },
    /// A `$` that starts no variable (write `$$` for a literal `$`).
    Invalid { text: String, line: usize },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unset { name, line } => write!(
                f,
                "line {line}: variable {name} is not set and has no default: set {name}, or write ${{{name}:-default}}"
            ),
            Problem::Required { name, message, line } if message.is_empty() => {
                write!(f, "line {line}: variable {name} is required: set {name}")
            }
            Problem::Required { name, message, line } => {
                write!(f, "line {line}: variable {name} is required: {message}")
            }
            Problem::Invalid { text, line } => {
                write!(f, "line {line}: invalid interpolation {text:?}: write $$ for a literal $")
            }
        }
    }
}

/// Every problem in `text`, a whole stack file, with 1-based line numbers.
/// YAML comments are skipped: the CLI interpolates values, never comments.
pub fn check(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut out = String::new();
        expand(strip_comment(line), index + 1, lookup, &mut out, &mut problems);
    }
    problems
}

/// `value` with its variables replaced; the first problem if there is one.
pub fn substitute(value: &str, line: usize, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, Problem> {
    let mut out = String::new();
    let mut problems = Vec::new();
    expand(value, line, lookup, &mut out, &mut problems);
    match problems.into_iter().next() {
        Some(problem) => Err(problem),
        None => Ok(out),
    }
}

/// The part of a YAML line before its comment: a `#` outside quotes, at the
/// start of the line or after whitespace.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (index, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && previous.is_whitespace() => return &line[..index],
            None => {}
        }
        previous = c;
    }
    line
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

fn expand(
    input: &str,
    line: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
    problems: &mut Vec<Problem>,
) {
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let next = after.chars().next();
        match next {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some(c) if is_name_start(c) => {
                let end = after.find(|c: char| !is_name_char(c)).unwrap_or(after.len());
                let name = &after[..end];
                match lookup(name) {
                    Some(value) => out.push_str(&value),
                    None => problems.push(Problem::Unset { name: name.to_owned(), line }),
                }
                rest = &after[end..];
            }
            Some('{') => {
                let Some(close) = after.find('}') else {
                    problems.push(Problem::Invalid { text: rest[dollar..].to_owned(), line });
                    return;
                };
                let body = &after[1..close];
                rest = &after[close + 1..];
                braced(body, line, lookup, out, problems);
            }
            _ => {
                let shown: String = rest[dollar..].chars().take(2).collect();
                problems.push(Problem::Invalid { text: shown, line });
                rest = after;
            }
        }
    }
    out.push_str(rest);
}

/// The inside of `${...}`: NAME, then nothing, `:-`, `-`, `:?` or `?`.
fn braced(
    body: &str,
    line: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
    problems: &mut Vec<Problem>,
) {
    let end = body.find(|c: char| !is_name_char(c)).unwrap_or(body.len());
    let (name, operator) = body.split_at(end);
    if name.is_empty() || !name.starts_with(is_name_start) {
        problems.push(Problem::Invalid { text: format!("${{{body}}}"), line });
        return;
    }
    let value = lookup(name);
    let set_and_not_empty = value.as_deref().is_some_and(|value| !value.is_empty());
    let (use_value, fallback) = if let Some(default) = operator.strip_prefix(":-") {
        (set_and_not_empty, Ok(default))
    } else if let Some(default) = operator.strip_prefix('-') {
        (value.is_some(), Ok(default))
    } else if let Some(message) = operator.strip_prefix(":?") {
        (set_and_not_empty, Err(message))
    } else if let Some(message) = operator.strip_prefix('?') {
        (value.is_some(), Err(message))
    } else if operator.is_empty() {
        (value.is_some(), Err(""))
    } else {
        problems.push(Problem::Invalid { text: format!("${{{body}}}"), line });
        return;
    };
    match (use_value, fallback) {
        (true, _) => out.push_str(value.as_deref().unwrap_or_default()),
        // A default may itself hold variables (`${A:-$B}`), as in the CLI.
        (false, Ok(default)) => expand(default, line, lookup, out, problems),
        (false, Err(_)) if operator.is_empty() => problems.push(Problem::Unset { name: name.to_owned(), line }),
        (false, Err(message)) => {
            problems.push(Problem::Required { name: name.to_owned(), message: message.to_owned(), line })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            "REG" => Some("127.0.0.1:5000".into()),
            _ => None,
        }
    }

    fn sub(value: &str) -> Result<String, Problem> {
        substitute(value, 1, &env)
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(sub("${REG}/app:${SET}").unwrap(), "127.0.0.1:5000/app:value");
        assert_eq!(sub("$SET-x").unwrap(), "value-x");
        assert_eq!(sub("a${EMPTY}b").unwrap(), "ab");
        assert_eq!(sub("no variables").unwrap(), "no variables");
    }

    #[test]
    fn defaults_with_and_without_colon() {
        assert_eq!(sub("${UNSET:-80}").unwrap(), "80");
        assert_eq!(sub("${EMPTY:-80}").unwrap(), "80");
        assert_eq!(sub("${SET:-80}").unwrap(), "value");
        assert_eq!(sub("${UNSET-80}").unwrap(), "80");
        assert_eq!(sub("${EMPTY-80}").unwrap(), "");
        assert_eq!(sub("${UNSET:-}").unwrap(), "");
        assert_eq!(sub("${UNSET:-$SET}").unwrap(), "value");
    }

    #[test]
    fn required_variables() {
        assert_eq!(sub("${SET:?need it}").unwrap(), "value");
        let err = sub("${UNSET:?set UNSET to the port}").unwrap_err();
        assert_eq!(err, Problem::Required { name: "UNSET".into(), message: "set UNSET to the port".into(), line: 1 });
        assert!(err.to_string().contains("set UNSET to the port"));
        assert!(matches!(sub("${EMPTY:?x}"), Err(Problem::Required { .. })));
        assert_eq!(sub("${EMPTY?x}").unwrap(), "");
        assert!(matches!(sub("${UNSET?x}"), Err(Problem::Required { .. })));
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar() {
        assert_eq!(sub("costs $$5 and $${NOT_A_VAR}").unwrap(), "costs $5 and ${NOT_A_VAR}");
    }

    #[test]
    fn unset_variables_are_named_with_their_line() {
        let err = sub("${NOPE}").unwrap_err();
        assert_eq!(err, Problem::Unset { name: "NOPE".into(), line: 1 });
        assert!(err.to_string().contains("NOPE"), "{err}");
        assert_eq!(sub("$NOPE/x").unwrap_err(), Problem::Unset { name: "NOPE".into(), line: 1 });
    }

    #[test]
    fn invalid_forms_are_refused() {
        assert!(matches!(sub("a $ b"), Err(Problem::Invalid { .. })));
        assert!(matches!(sub("${1X}"), Err(Problem::Invalid { .. })));
        assert!(matches!(sub("${X:+alt}"), Err(Problem::Invalid { .. })));
        assert!(matches!(sub("${UNCLOSED"), Err(Problem::Invalid { .. })));
        assert!(matches!(sub("${}"), Err(Problem::Invalid { .. })));
    }

    #[test]
    fn check_reports_every_problem_with_its_line_and_skips_comments() {
        let text = "\
services:
  # ${IN_A_COMMENT} is not interpolated, nor $5
  app:
    image: \"${REG}/app:${TAG}\"   # trailing ${COMMENT}
    ports: [\"${PORT:-80}:8000\"]
    command: \"echo '#' ${MISSING:?say why}\"
";
        let problems = check(text, &env);
        assert_eq!(
            problems,
            vec![
                Problem::Unset { name: "TAG".into(), line: 4 },
                Problem::Required { name: "MISSING".into(), message: "say why".into(), line: 6 },
            ]
        );
    }

    #[test]
    fn a_hash_inside_a_word_or_quotes_is_not_a_comment() {
        assert_eq!(strip_comment("a: b#c # comment"), "a: b#c ");
        assert_eq!(strip_comment("a: \"x # y\" # z"), "a: \"x # y\" ");
        assert_eq!(strip_comment("# all"), "");
    }
}
