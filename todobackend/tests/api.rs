//! The whole HTTP API over real sockets, against the real server on each
//! backend: a real SQLite file, and a real PostgreSQL server on loopback.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Backend, TestServer, error_message, json, start_server_on};
use serde_json::{Value, json};
use todobackend::http::server;

fn assert_cors(r: &todobackend::client::Response) {
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"), "{:?}", r.headers);
    let methods = r.header("Access-Control-Allow-Methods").unwrap_or("");
    for m in ["GET", "POST", "PATCH", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = r.header("Access-Control-Allow-Headers").unwrap_or("").to_ascii_lowercase();
    assert!(headers.contains("content-type"), "{headers}");
}

fn root_is_a_json_index_pointing_at_todos(backend: Backend) {
    let s = start_server_on(backend);
    let r = s.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(json(&r), json!({ "todos": s.url("/todos") }));
    assert_cors(&r);
}

fn post_answers_201_with_location_and_the_todo(backend: Backend) {
    let s = start_server_on(backend);
    let r = s.post_json("/todos", &json!({ "title": "buy milk" }));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_cors(&r);
    let location = r.header("Location").expect("Location header").to_string();
    let todo = json(&r);
    let id = todo["id"].as_i64().expect("integer id");
    assert_eq!(location, s.url(&format!("/todos/{id}")));
    assert_eq!(todo, json!({ "id": id, "title": "buy milk", "completed": false, "order": null, "url": location }));

    // The Location is a working URL for that todo.
    let r = todobackend::client::request("GET", &location, &[], None, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(json(&r), todo);

    let r = s.post_json("/todos", &json!({ "title": "second", "order": 7, "completed": true, "ignored": 1 }));
    assert_eq!(r.status, 201);
    let second = json(&r);
    assert_eq!((second["order"].clone(), second["completed"].clone()), (json!(7), json!(true)));
    assert!(second.get("ignored").is_none());

    let list = json(&s.get("/todos"));
    assert_eq!(list, json!([todo, second]));
}

fn patch_updates_only_the_given_fields(backend: Backend) {
    let s = start_server_on(backend);
    let created = json(&s.post_json("/todos", &json!({ "title": "a", "order": 1 })));
    let path = TestServer::path_of(created["url"].as_str().unwrap());

    let r = s.patch_json(&path, &json!({ "completed": true }));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_cors(&r);
    let t = json(&r);
    assert_eq!((t["title"].clone(), t["completed"].clone(), t["order"].clone()), (json!("a"), json!(true), json!(1)));

    let r = s.patch_json(&path, &json!({ "title": "b", "order": 42 }));
    assert_eq!(r.status, 200);
    let t = json(&s.get(&path));
    assert_eq!((t["title"].clone(), t["completed"].clone(), t["order"].clone()), (json!("b"), json!(true), json!(42)));

    // order may be cleared; completed may be set back.
    s.patch_json(&path, &json!({ "order": null, "completed": false }));
    let t = json(&s.get(&path));
    assert_eq!((t["completed"].clone(), t["order"].clone()), (json!(false), Value::Null));

    // An empty patch changes nothing and still answers the todo.
    let r = s.patch_json(&path, &json!({}));
    assert_eq!((r.status, json(&r)), (200, t.clone()));

    // Invalid patches are refused and change nothing.
    for bad in [json!({ "title": "" }), json!({ "completed": "yes" }), json!({ "order": "x" }), json!([1])] {
        let r = s.patch_json(&path, &bad);
        assert_eq!(r.status, 400, "{bad}");
        error_message(&r);
    }
    let r = s.call("PATCH", &path, &[], Some("{broken"));
    assert_eq!(r.status, 400);
    assert_eq!(json(&s.get(&path)), t);

    let r = s.patch_json("/todos/999999", &json!({ "title": "x" }));
    assert_eq!(r.status, 404);
    error_message(&r);
}

fn delete_one_and_delete_all(backend: Backend) {
    let s = start_server_on(backend);
    let a = json(&s.post_json("/todos", &json!({ "title": "a" })));
    let b = json(&s.post_json("/todos", &json!({ "title": "b" })));
    let a_path = TestServer::path_of(a["url"].as_str().unwrap());

    let r = s.call("DELETE", &a_path, &[], None);
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_cors(&r);
    assert_eq!(s.get(&a_path).status, 404);
    assert_eq!(s.call("DELETE", &a_path, &[], None).status, 404);
    assert_eq!(json(&s.get("/todos")), json!([b]));

    let r = s.call("DELETE", "/todos", &[], None);
    assert_eq!(r.status, 204);
    assert_eq!(json(&s.get("/todos")), json!([]));
}

fn unknown_ids_and_paths_are_404_with_a_json_error(backend: Backend) {
    let s = start_server_on(backend);
    for path in ["/todos/12345", "/todos/abc", "/todos/1/extra", "/nope", "/static/missing.css"] {
        let r = s.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert_cors(&r);
        error_message(&r);
    }
    assert_eq!(s.call("DELETE", "/todos/12345", &[], None).status, 404);
}

fn bad_post_bodies_are_400_and_store_nothing(backend: Backend) {
    let s = start_server_on(backend);
    for body in [
        "{\"title\": ",
        "not json",
        "",
        "[]",
        "\"just a string\"",
        "{}",
        "{\"title\": \"\"}",
        "{\"title\": \"  \"}",
        "{\"title\": 12}",
        "{\"title\": null}",
        "{\"title\": \"x\", \"completed\": \"no\"}",
        "{\"title\": \"x\", \"order\": 1.5}",
    ] {
        let r = s.call("POST", "/todos", &[("Content-Type", "application/json")], Some(body));
        assert_eq!(r.status, 400, "{body:?}: {}", r.text());
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_cors(&r);
        assert!(!error_message(&r).is_empty());
    }
    assert_eq!(json(&s.get("/todos")), json!([]));
}

/// U+0000 is refused by the API on both backends alike (SQLite would store
/// it, PostgreSQL's text cannot): 400 naming the field, nothing stored or
/// changed, on POST (keyed or not) and PATCH.
fn a_title_holding_nul_is_400_naming_the_field_on_post_and_patch(backend: Backend) {
    let s = start_server_on(backend);
    let nul_titles = ["a\u{0}b", "\u{0}", "trailing\u{0}"];
    for title in nul_titles {
        for key in [None, Some("nul-key")] {
            let headers: Vec<(&str, &str)> =
                [("Content-Type", "application/json")].into_iter().chain(key.map(|k| ("Idempotency-Key", k))).collect();
            let body = json!({ "title": title }).to_string();
            assert!(body.contains("\\u0000"), "sent as JSON's escape: {body}");
            let r = s.call("POST", "/todos", &headers, Some(&body));
            assert_eq!(r.status, 400, "{title:?} (key {key:?}): {}", r.text());
            assert_eq!(r.header("Content-Type"), Some("application/json"));
            let message = error_message(&r);
            assert!(message.starts_with("title must not contain the character U+0000 (NUL)"), "{message}");
        }
    }
    assert_eq!(json(&s.get("/todos")), json!([]), "nothing was stored");

    let created = s.post_json("/todos", &json!({ "title": "clean", "order": 1 }));
    assert_eq!(created.status, 201);
    let path = TestServer::path_of(json(&created)["url"].as_str().unwrap());
    for title in nul_titles {
        let r = s.patch_json(&path, &json!({ "title": title, "completed": true }));
        assert_eq!(r.status, 400, "{title:?}: {}", r.text());
        assert!(error_message(&r).starts_with("title must not contain the character U+0000"), "{}", r.text());
    }
    let kept = json(&s.get(&path));
    assert_eq!((&kept["title"], &kept["completed"]), (&json!("clean"), &json!(false)), "the todo is unchanged");
    // The character beside it is fine: only U+0000 is refused.
    let r = s.patch_json(&path, &json!({ "title": "\u{1}x\u{7f}" }));
    assert_eq!(r.status, 200, "{}", r.text());
}

fn wrong_methods_are_405_with_allow(backend: Backend) {
    let s = start_server_on(backend);
    for (method, path) in [
        ("PUT", "/todos"),
        ("PATCH", "/todos"),
        ("POST", "/"),
        ("DELETE", "/"),
        ("POST", "/todos/1"),
        ("PUT", "/todos/1"),
        ("POST", "/static/style.css"),
    ] {
        let r = s.call(method, path, &[], Some("{}"));
        assert_eq!(r.status, 405, "{method} {path}");
        assert!(r.header("Allow").is_some(), "{method} {path}");
        assert_cors(&r);
        error_message(&r);
    }
}

fn options_preflight_is_answered_on_any_path(backend: Backend) {
    let s = start_server_on(backend);
    let preflight = [
        ("Origin", "http://example.test"),
        ("Access-Control-Request-Method", "PATCH"),
        ("Access-Control-Request-Headers", "content-type"),
    ];
    for path in ["/", "/todos", "/todos/1", "/anything/at/all"] {
        let r = s.call("OPTIONS", path, &preflight, None);
        assert!(r.status == 204 || r.status == 200, "{path}: {}", r.status);
        assert_cors(&r);
    }
}

fn urls_follow_host_and_forwarded_headers(backend: Backend) {
    let s = start_server_on(backend);
    let r = s.post_json("/todos", &json!({ "title": "t" }));
    assert_eq!(r.status, 201);
    let id = json(&r)["id"].as_i64().unwrap();

    let answer =
        s.raw(&format!("GET /todos/{id} HTTP/1.1\r\nHost: api.example.test:9000\r\nConnection: close\r\n\r\n"));
    assert!(answer.contains(&format!("\"url\":\"http://api.example.test:9000/todos/{id}\"")), "{answer}");

    let answer = s.raw(&format!(
        "GET /todos/{id} HTTP/1.1\r\nHost: internal:8000\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: todo.example.org\r\nConnection: close\r\n\r\n"
    ));
    assert!(answer.contains(&format!("\"url\":\"https://todo.example.org/todos/{id}\"")), "{answer}");

    let answer = s.raw(
        "POST /todos HTTP/1.1\r\nHost: internal:8000\r\nX-Forwarded-Proto: https\r\nContent-Type: application/json\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{\"title\":\"u\"}",
    );
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("Location: https://internal:8000/todos/"), "{answer}");

    let answer =
        s.raw("GET / HTTP/1.1\r\nHost: h.test\r\nX-Forwarded-Host: proxy.test:8443\r\nConnection: close\r\n\r\n");
    assert!(answer.contains("{\"todos\":\"http://proxy.test:8443/todos\"}"), "{answer}");

    // HTTP/1.0 without Host: the server's own address.
    let answer = s.raw("GET / HTTP/1.0\r\n\r\n");
    assert!(answer.contains(&format!("{{\"todos\":\"{}/todos\"}}", s.base)), "{answer}");
}

fn static_files_are_served_from_the_static_root(backend: Backend) {
    let s = start_server_on(backend);
    let r = s.get("/static/style.css");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/css; charset=utf-8"));
    assert_eq!(r.body, std::fs::read(s.static_root.join("style.css")).unwrap());
    let r = s.get("/static/index.html");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("/static/style.css"));

    // Served from disk, not from the binary: a new file appears at once.
    std::fs::write(s.static_root.join("extra.txt"), "hello").unwrap();
    assert_eq!(s.get("/static/extra.txt").text(), "hello");

    // Nothing outside the static root is reachable.
    std::fs::write(s.dir.join("secret.txt"), "TOP-SECRET-CONTENT").unwrap();
    for path in ["/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/.hidden", "/static/"] {
        let answer = s.raw(&format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
        assert!(!answer.contains("TOP-SECRET-CONTENT"), "{path}: {answer}");
    }
}

fn oversized_bodies_are_refused(backend: Backend) {
    let s = start_server_on(backend);
    let big = format!("{{\"title\":\"{}\"}}", "x".repeat(server::MAX_BODY + 10));
    let r = s.call("POST", "/todos", &[("Content-Type", "application/json")], Some(&big));
    assert_eq!(r.status, 413);
    assert_eq!(json(&s.get("/todos")), json!([]));
}

fn concurrent_requests_are_all_answered(backend: Backend) {
    let s = Arc::new(start_server_on(backend));
    // A client that connects and sends half a request must not hold up others.
    let mut stalled = TcpStream::connect(s.handle.addr()).unwrap();
    stalled.write_all(b"POST /todos HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{").unwrap();

    let started = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                for i in 0..10 {
                    let r = s.post_json("/todos", &json!({ "title": format!("t{t}-{i}") }));
                    assert_eq!(r.status, 201, "{}", r.text());
                    assert_eq!(s.get("/todos").status, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    let list = json(&s.get("/todos"));
    assert_eq!(list.as_array().map(Vec::len), Some(80));
    drop(stalled);
}

fn todos_survive_a_restart_of_the_server(backend: Backend) {
    let s = start_server_on(backend);
    let created = json(&s.post_json("/todos", &json!({ "title": "durable" })));
    let common::TestServer { handle, database, static_root, dir, .. } = s;
    handle.shutdown();
    let handle = server::start_on("127.0.0.1:0", &database, &static_root, server::Options::default()).unwrap();
    let r = todobackend::client::request("GET", &format!("{}/todos", handle.url()), &[], None, Duration::from_secs(5))
        .unwrap();
    let list = json(&r);
    assert_eq!(list[0]["title"], created["title"]);
    assert_eq!(list[0]["id"], created["id"]);
    handle.shutdown();
    drop(dir);
}

/// POST /todos with an `Idempotency-Key` header (and a JSON body).
fn post_keyed(s: &TestServer, key: &str, body: &Value) -> todobackend::client::Response {
    let text = body.to_string();
    s.call("POST", "/todos", &[("Content-Type", "application/json"), ("Idempotency-Key", key)], Some(&text))
}

fn replayed(r: &todobackend::client::Response) -> bool {
    r.header("Idempotent-Replayed") == Some("true")
}

fn a_keyed_post_stores_one_todo_and_answers_the_same_again(backend: Backend) {
    let s = start_server_on(backend);
    let first = post_keyed(&s, "order-7f3a", &json!({ "title": "pay", "order": 2 }));
    assert_eq!(first.status, 201, "{}", first.text());
    assert!(!replayed(&first));
    let todo = json(&first);
    let location = first.header("Location").unwrap().to_string();

    // The same request again (the same fields, written otherwise): the same
    // answer, and nothing stored.
    let again = s.call(
        "POST",
        "/todos",
        &[("Idempotency-Key", "order-7f3a")],
        Some(r#"{ "order": 2, "completed": false, "title": "pay", "ignored": true }"#),
    );
    assert_eq!((again.status, json(&again)), (201, todo.clone()));
    assert_eq!(again.header("Location"), Some(location.as_str()));
    assert!(replayed(&again));
    assert_cors(&again);
    assert_eq!(json(&s.get("/todos")), json!([todo.clone()]));

    // Changed, then deleted: a repeat still answers what the first POST
    // answered, and re-creates nothing.
    let path = TestServer::path_of(&location);
    assert_eq!(s.patch_json(&path, &json!({ "title": "paid" })).status, 200);
    let again = post_keyed(&s, "order-7f3a", &json!({ "title": "pay", "order": 2 }));
    assert_eq!((again.status, json(&again)), (201, todo.clone()));
    assert_eq!(s.call("DELETE", &path, &[], None).status, 204);
    let again = post_keyed(&s, "order-7f3a", &json!({ "title": "pay", "order": 2 }));
    assert_eq!((again.status, json(&again)), (201, todo.clone()));
    assert_eq!(json(&s.get("/todos")), json!([]));

    // Another key is another todo; keys are compared exactly.
    let other = post_keyed(&s, "ORDER-7F3A", &json!({ "title": "pay", "order": 2 }));
    assert_eq!(other.status, 201);
    assert!(!replayed(&other));
    assert_ne!(json(&other)["id"], todo["id"]);
}

fn a_key_reused_for_another_body_is_422_and_stores_nothing(backend: Backend) {
    let s = start_server_on(backend);
    let first = post_keyed(&s, "k-1", &json!({ "title": "a" }));
    assert_eq!(first.status, 201);
    for other in
        [json!({ "title": "b" }), json!({ "title": "a", "completed": true }), json!({ "title": "a", "order": 1 })]
    {
        let r = post_keyed(&s, "k-1", &other);
        assert_eq!(r.status, 422, "{other}: {}", r.text());
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_cors(&r);
        let message = error_message(&r);
        assert!(message.contains("Idempotency-Key") && message.contains("new key"), "{message}");
    }
    assert_eq!(json(&s.get("/todos")), json!([json(&first)]));
    // A bad body with the key is a 400 as without one.
    assert_eq!(post_keyed(&s, "k-1", &json!({ "title": "" })).status, 400);
}

fn bad_keys_are_400_naming_the_rule_and_store_nothing(backend: Backend) {
    let s = start_server_on(backend);
    let too_long = "k".repeat(256);
    for key in ["", " ", "two words", too_long.as_str(), "caf\u{e9}", "tab\there", "nul\u{1}"] {
        let raw = s.raw(&format!(
            "POST /todos HTTP/1.1\r\nHost: t\r\nIdempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{{\"title\":\"x\"}}"
        ));
        // hyper itself refuses a control character in a header (400 too).
        assert!(raw.starts_with("HTTP/1.1 400"), "{key:?}: {raw}");
        if !key.contains('\u{1}') {
            let rule = "Idempotency-Key must be 1 to 255 visible ASCII characters";
            assert!(raw.contains(rule), "{key:?}: {raw}");
        }
    }
    let r = s.call("POST", "/todos", &[("Idempotency-Key", "a"), ("Idempotency-Key", "b")], Some(r#"{"title":"x"}"#));
    assert_eq!(r.status, 400);
    assert!(error_message(&r).contains("Idempotency-Key must be sent once"), "{}", r.text());
    assert_eq!(json(&s.get("/todos")), json!([]));
    // The longest key and every visible character are accepted.
    let longest = "~".repeat(255);
    assert_eq!(post_keyed(&s, &longest, &json!({ "title": "x" })).status, 201);
    let visible: String = (0x21u8..=0x7e).map(char::from).collect();
    assert_eq!(post_keyed(&s, &visible, &json!({ "title": "y" })).status, 201);
    assert_eq!(post_keyed(&s, &visible, &json!({ "title": "y" })).status, 201);
    assert_eq!(json(&s.get("/todos")).as_array().map(Vec::len), Some(2));
}

fn posts_without_a_key_are_each_stored(backend: Backend) {
    let s = start_server_on(backend);
    let a = s.post_json("/todos", &json!({ "title": "same" }));
    let b = s.post_json("/todos", &json!({ "title": "same" }));
    assert_eq!((a.status, b.status), (201, 201));
    assert!(!replayed(&a) && !replayed(&b));
    assert_ne!(json(&a)["id"], json(&b)["id"]);
    assert_eq!(json(&s.get("/todos")), json!([json(&a), json(&b)]));
}

fn posts_racing_with_one_key_store_one_todo(backend: Backend) {
    let s = Arc::new(start_server_on(backend));
    const RACERS: usize = 8;
    for round in 0..10 {
        let key = format!("race-{round}");
        let start = Arc::new(std::sync::Barrier::new(RACERS));
        let racers: Vec<_> = (0..RACERS)
            .map(|_| {
                let (s, start, key) = (Arc::clone(&s), Arc::clone(&start), key.clone());
                thread::spawn(move || {
                    start.wait();
                    post_keyed(&s, &key, &json!({ "title": key }))
                })
            })
            .collect();
        let answers: Vec<_> = racers.into_iter().map(|r| r.join().expect("racer")).collect();
        for r in &answers {
            assert_eq!(r.status, 201, "{key}: {}", r.text());
            assert_eq!(json(r), json(&answers[0]), "{key}: every racer gets the one todo");
        }
        assert_eq!(answers.iter().filter(|r| !replayed(r)).count(), 1, "{key}: one racer created it");
    }
    let list = json(&s.get("/todos"));
    let titles: Vec<&str> = list.as_array().unwrap().iter().map(|t| t["title"].as_str().unwrap()).collect();
    assert_eq!(titles, (0..10).map(|round| format!("race-{round}")).collect::<Vec<_>>());
}

both_backends!(
    a_keyed_post_stores_one_todo_and_answers_the_same_again,
    a_key_reused_for_another_body_is_422_and_stores_nothing,
    bad_keys_are_400_naming_the_rule_and_store_nothing,
    posts_without_a_key_are_each_stored,
    posts_racing_with_one_key_store_one_todo,
    root_is_a_json_index_pointing_at_todos,
    post_answers_201_with_location_and_the_todo,
    patch_updates_only_the_given_fields,
    delete_one_and_delete_all,
    unknown_ids_and_paths_are_404_with_a_json_error,
    bad_post_bodies_are_400_and_store_nothing,
    a_title_holding_nul_is_400_naming_the_field_on_post_and_patch,
    wrong_methods_are_405_with_allow,
    options_preflight_is_answered_on_any_path,
    urls_follow_host_and_forwarded_headers,
    static_files_are_served_from_the_static_root,
    oversized_bodies_are_refused,
    concurrent_requests_are_all_answered,
    todos_survive_a_restart_of_the_server,
);
