//! The acceptance suite: checks a running server over real HTTP, the way a
//! Todo-Backend client uses it. It deletes every todo on that server.

use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use crate::client::{self, Response};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    /// Names of the failed checks.
    pub failures: Vec<String>,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.failed == 0
    }
}

type Check = Result<(), String>;

struct Suite<'a> {
    base: String,
    out: &'a mut dyn Write,
    summary: Summary,
}

impl Suite<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn record(&mut self, name: &str, result: Check) {
        // Output errors (a closed stderr) must not stop the checks.
        match result {
            Ok(()) => {
                self.summary.passed += 1;
                let _ = writeln!(self.out, "ok      {name}");
            }
            Err(reason) => {
                self.summary.failed += 1;
                self.summary.failures.push(name.to_string());
                let _ = writeln!(self.out, "FAILED  {name}: {reason}");
            }
        }
    }
}

fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Result<Response, String> {
    client::request(method, url, headers, body, TIMEOUT)
}

fn send_json(method: &str, url: &str, body: &Value) -> Result<Response, String> {
    let text = body.to_string();
    send(method, url, &[("Content-Type", "application/json")], Some(text.as_bytes()))
}

fn expect_status(r: &Response, expected: &[u16]) -> Check {
    if expected.contains(&r.status) {
        Ok(())
    } else {
        Err(format!("expected status {expected:?}, got {}: {}", r.status, r.text()))
    }
}

fn expect_field(todo: &Value, field: &str, expected: &Value) -> Check {
    match todo.get(field) {
        Some(v) if v == expected => Ok(()),
        other => Err(format!("expected {field} = {expected}, got {other:?} in {todo}")),
    }
}

fn expect_json_error(r: &Response) -> Check {
    let body = r.json()?;
    match body.get("error") {
        Some(Value::String(_)) => Ok(()),
        _ => Err(format!("expected a JSON body {{\"error\": \"...\"}}, got {body}")),
    }
}

/// The list does not hold the todo at `location`.
fn expect_not_listed(suite: &Suite<'_>, location: &str) -> Check {
    let r = send("GET", &suite.url("/todos"), &[], None)?;
    expect_status(&r, &[200])?;
    match r.json()? {
        Value::Array(items) if items.iter().all(|item| item.get("url") != Some(&json!(location))) => Ok(()),
        Value::Array(_) => Err(format!("the deleted todo {location} is still listed")),
        other => Err(format!("expected a list, got {other}")),
    }
}

/// No todo in the list lacks a title (a POST without one stored nothing).
fn expect_none_untitled(suite: &Suite<'_>) -> Check {
    let r = send("GET", &suite.url("/todos"), &[], None)?;
    expect_status(&r, &[200])?;
    match r.json()? {
        Value::Array(items) => match items.iter().find(|item| !item.get("title").is_some_and(Value::is_string)) {
            Some(todo) => Err(format!("a todo without a title was stored: {todo}")),
            None => Ok(()),
        },
        other => Err(format!("expected a list, got {other}")),
    }
}

fn expect_empty_list(suite: &Suite<'_>) -> Check {
    let r = send("GET", &suite.url("/todos"), &[], None)?;
    expect_status(&r, &[200])?;
    match r.json()? {
        Value::Array(items) if items.is_empty() => Ok(()),
        other => Err(format!("expected an empty list, got {other}")),
    }
}

fn header_lists(r: &Response, name: &str, wanted: &[&str]) -> Check {
    let value = r.header(name).ok_or_else(|| format!("no {name} header"))?.to_ascii_lowercase();
    for w in wanted {
        if !value.split(',').any(|item| item.trim() == w.to_ascii_lowercase()) {
            return Err(format!("{name} is {value:?}, which lacks {w}"));
        }
    }
    Ok(())
}

/// Runs every check against the server at `base_url`, writing one line per
/// check and a final `N passed, N failed` line to `out`.
pub fn run(base_url: &str, out: &mut dyn Write) -> Result<Summary, String> {
    run_with(base_url, out, false)
}

/// [`run`] against a server whose todos are users' data (a live stack,
/// verified by `deploy`): no `DELETE /todos`, and every check about the
/// list looks only for the suite's own todo, which it deletes at the end.
pub fn run_keeping_data(base_url: &str, out: &mut dyn Write) -> Result<Summary, String> {
    run_with(base_url, out, true)
}

fn run_with(base_url: &str, out: &mut dyn Write, keep_data: bool) -> Result<Summary, String> {
    // Validate the URL once, so that a typo is one clear error rather than
    // every check failing with it.
    client::parse_url(base_url)?;
    let mut suite = Suite { base: base_url.trim_end_matches('/').to_string(), out, summary: Summary::default() };

    let result = (|| {
        let r = send("GET", &suite.url("/"), &[], None)?;
        expect_status(&r, &[200])?;
        match r.json()?.get("todos") {
            Some(Value::String(u)) if u.ends_with("/todos") => Ok(()),
            other => Err(format!("expected \"todos\": \"<url>/todos\" in the index, got {other:?}")),
        }
    })();
    suite.record("GET / answers 200 with a JSON index", result);

    let result = (|| {
        let r = send("GET", &suite.url("/todos"), &[("Origin", "http://example.test")], None)?;
        match r.header("Access-Control-Allow-Origin") {
            Some("*") | Some("http://example.test") => Ok(()),
            other => Err(format!("Access-Control-Allow-Origin is {other:?}")),
        }
    })();
    suite.record("CORS Access-Control-Allow-Origin on answers", result);

    let result = (|| {
        let headers = [
            ("Origin", "http://example.test"),
            ("Access-Control-Request-Method", "PATCH"),
            ("Access-Control-Request-Headers", "content-type"),
        ];
        let r = send("OPTIONS", &suite.url("/todos/1"), &headers, None)?;
        expect_status(&r, &[200, 204])?;
        if r.header("Access-Control-Allow-Origin").is_none() {
            return Err("no Access-Control-Allow-Origin header".into());
        }
        header_lists(&r, "Access-Control-Allow-Methods", &["GET", "POST", "PATCH", "DELETE"])?;
        header_lists(&r, "Access-Control-Allow-Headers", &["content-type"])
    })();
    suite.record("OPTIONS preflight is answered with CORS headers", result);

    if !keep_data {
        let result = (|| {
            let r = send("DELETE", &suite.url("/todos"), &[], None)?;
            expect_status(&r, &[200, 204])?;
            expect_empty_list(&suite)
        })();
        suite.record("after DELETE /todos the list is empty", result);
    }

    let title = "acceptance: walk the dog";
    let mut location: Option<String> = None;
    let result = (|| {
        let r = send_json("POST", &suite.url("/todos"), &json!({ "title": title, "order": 10 }))?;
        expect_status(&r, &[201])?;
        let loc = r.header("Location").ok_or("no Location header")?.to_string();
        if !loc.starts_with("http://") && !loc.starts_with("https://") {
            return Err(format!("Location {loc:?} is not an absolute URL"));
        }
        let todo = r.json()?;
        expect_field(&todo, "title", &json!(title))?;
        expect_field(&todo, "completed", &json!(false))?;
        expect_field(&todo, "order", &json!(10))?;
        expect_field(&todo, "url", &json!(loc))?;
        location = Some(loc);
        Ok(())
    })();
    suite.record("POST /todos answers 201 with Location and the todo", result);

    let need = |loc: &Option<String>| -> Result<String, String> {
        loc.clone().ok_or_else(|| "skipped: no todo was created".to_string())
    };

    let result = (|| {
        let loc = need(&location)?;
        let r = send("GET", &loc, &[], None)?;
        expect_status(&r, &[200])?;
        expect_field(&r.json()?, "title", &json!(title))
    })();
    suite.record("GET of the Location returns the posted title", result);

    let result = (|| {
        need(&location)?;
        let r = send("GET", &suite.url("/todos"), &[], None)?;
        expect_status(&r, &[200])?;
        let loc = location.clone().unwrap_or_default();
        match r.json()? {
            Value::Array(items) if items.len() == 1 => expect_field(&items[0], "title", &json!(title)),
            Value::Array(items) if keep_data => match items.iter().find(|item| item.get("url") == Some(&json!(loc))) {
                Some(todo) => expect_field(todo, "title", &json!(title)),
                None => Err(format!("the new todo {loc} is not in the list")),
            },
            other => Err(format!("expected a list of one todo, got {other}")),
        }
    })();
    suite.record("GET /todos lists the new todo", result);

    let result = (|| {
        let loc = need(&location)?;
        let new_title = "acceptance: dog walked";
        let r = send_json("PATCH", &loc, &json!({ "title": new_title, "completed": true }))?;
        expect_status(&r, &[200])?;
        let todo = r.json()?;
        expect_field(&todo, "title", &json!(new_title))?;
        expect_field(&todo, "completed", &json!(true))?;
        let r = send("GET", &loc, &[], None)?;
        expect_status(&r, &[200])?;
        let todo = r.json()?;
        expect_field(&todo, "title", &json!(new_title))?;
        expect_field(&todo, "completed", &json!(true))?;
        expect_field(&todo, "order", &json!(10))
    })();
    suite.record("PATCH changes title and completed, and GET shows it", result);

    let result = (|| {
        let loc = need(&location)?;
        let r = send_json("PATCH", &loc, &json!({ "order": 3 }))?;
        expect_status(&r, &[200])?;
        let r = send("GET", &loc, &[], None)?;
        expect_field(&r.json()?, "order", &json!(3))
    })();
    suite.record("PATCH changes order, and GET shows it", result);

    let result = (|| {
        let loc = need(&location)?;
        let r = send("DELETE", &loc, &[], None)?;
        expect_status(&r, &[204])?;
        if keep_data {
            expect_not_listed(&suite, &loc)?
        } else {
            expect_empty_list(&suite)?
        }
        let r = send("GET", &loc, &[], None)?;
        expect_status(&r, &[404])
    })();
    suite.record("DELETE of the todo answers 204, then the list is empty and it is gone", result);

    let result = (|| {
        let r = send("GET", &suite.url("/todos/999999999999"), &[], None)?;
        expect_status(&r, &[404])?;
        expect_json_error(&r)
    })();
    suite.record("GET of a missing id answers 404 with a JSON error", result);

    let result = (|| {
        let headers = [("Content-Type", "application/json")];
        let r = send("POST", &suite.url("/todos"), &headers, Some(b"{\"title\": "))?;
        expect_status(&r, &[400])?;
        expect_json_error(&r)
    })();
    suite.record("malformed JSON POST answers 400 with a JSON error", result);

    let result = (|| {
        let r = send_json("POST", &suite.url("/todos"), &json!({ "completed": true }))?;
        expect_status(&r, &[400])?;
        expect_json_error(&r)?;
        if keep_data { expect_none_untitled(&suite) } else { expect_empty_list(&suite) }
    })();
    suite.record("POST without a title answers 400 and stores nothing", result);

    let result = (|| {
        let r = send("GET", &suite.url("/no-such-path"), &[], None)?;
        expect_status(&r, &[404])
    })();
    suite.record("unknown path answers 404", result);

    let result = (|| {
        let r = send_json("PUT", &suite.url("/todos"), &json!({ "title": "x" }))?;
        expect_status(&r, &[405])
    })();
    suite.record("wrong method answers 405", result);

    let summary = suite.summary;
    let _ = writeln!(suite.out, "{} passed, {} failed", summary.passed, summary.failed);
    Ok(summary)
}
