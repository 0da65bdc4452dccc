//! The management API of the real binary over HTTP: round trips, durability across
//! SIGKILL, configuration errors, and bad input that must get a 4xx in the JSON error
//! shape and change nothing.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use anyhow::Result;
use serde_json::{json, Value};
use tillmesh_tests::{binary_path, TerminalProcess};

fn assert_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "body: {body}");
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "body: {body}");
}

#[test]
fn an_entity_survives_a_sigkill_and_restart() -> Result<()> {
    let mut t = TerminalProcess::start(&[])?;
    let id = t.device_id()?;
    t.ok("PUT", "/api/entities/product/p1", Some(&json!({"fields": {"name": "Tea", "price": 2.5}})))?;
    t.ok("POST", "/api/entities/product/p1/counters/stock", Some(&json!({"delta": 7})))?;
    let before = t.ok("GET", "/api/entities/product/p1", None)?;
    assert_eq!(before["fields"], json!({"name": "Tea", "price": 2.5, "stock": 7}));
    t.kill9();
    let t2 = TerminalProcess::start_in(&t.data_dir, &[])?;
    assert_eq!(t2.ok("GET", "/api/entities/product/p1", None)?, before);
    assert_eq!(t2.device_id()?, id, "device id is stable across restarts");
    Ok(())
}

#[test]
fn fields_set_to_null_are_removed_and_others_kept() -> Result<()> {
    let t = TerminalProcess::start(&[])?;
    t.ok("PUT", "/api/entities/customer/c1", Some(&json!({"fields": {"name": "Ann", "note": "x"}})))?;
    let e = t.ok("PUT", "/api/entities/customer/c1", Some(&json!({"fields": {"note": null, "vip": true}})))?;
    assert_eq!(e["fields"], json!({"name": "Ann", "vip": true}));
    let d = t.ok("DELETE", "/api/entities/customer/c1", None)?;
    assert_eq!(d["deleted"], true);
    assert_eq!(t.ok("GET", "/api/entities/customer/c1", None)?["deleted"], true);
    Ok(())
}

#[test]
fn listing_pages_through_entities_in_id_order() -> Result<()> {
    let t = TerminalProcess::start(&[])?;
    let ops: Vec<Value> = (0..25)
        .map(|i| json!({"op": "put", "type": "product", "id": format!("p{i:02}"), "fields": {"n": i}}))
        .collect();
    t.ok("POST", "/api/entities/batch", Some(&json!({ "ops": ops })))?;
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let q = if after.is_empty() {
            "/api/entities/product?limit=10".to_string()
        } else {
            format!("/api/entities/product?limit=10&after={after}")
        };
        let page = t.ok("GET", &q, None)?;
        for e in page["entities"].as_array().unwrap() {
            seen.push(e["id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(n) => after = n.to_string(),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
    assert_eq!(seen, expected);
    Ok(())
}

#[test]
fn bad_input_gets_a_json_4xx_and_changes_nothing() -> Result<()> {
    let t = TerminalProcess::start(&[])?;
    t.ok("PUT", "/api/entities/product/p1", Some(&json!({"fields": {"name": "Tea"}})))?;
    t.ok("POST", "/api/entities/product/p1/counters/stock", Some(&json!({"delta": i64::MAX})))?;
    let digest = t.digest()?;

    let cases: Vec<(&str, String, Option<Value>, u16, &str)> = vec![
        ("PUT", "/api/entities/product/p1".into(), Some(json!({"fields": "nope"})), 400, "invalid_body"),
        ("PUT", "/api/entities/product/p1".into(), Some(json!({"field": {}})), 400, "invalid_body"),
        ("PUT", "/api/entities/bad%20type/p1".into(), Some(json!({"fields": {}})), 400, "invalid_name"),
        ("PUT", format!("/api/entities/product/{}", "x".repeat(129)), Some(json!({"fields": {}})), 400, "invalid_name"),
        ("PUT", "/api/entities/product/p1".into(), Some(json!({"fields": {"bad name": 1}})), 400, "invalid_name"),
        ("PUT", "/api/entities/product/p1".into(), Some(json!({"fields": {"stock": 3}})), 409, "field_kind_mismatch"),
        (
            "POST",
            "/api/entities/product/p1/counters/name".into(),
            Some(json!({"delta": 1})),
            409,
            "field_kind_mismatch",
        ),
        ("POST", "/api/entities/product/p1/counters/stock".into(), Some(json!({"delta": 1})), 422, "counter_overflow"),
        ("POST", "/api/entities/product/p1/counters/stock".into(), Some(json!({"delta": "1"})), 400, "invalid_body"),
        ("POST", "/api/entities/product/p1/counters/stock".into(), Some(json!({"delta": 1e40})), 400, "invalid_body"),
        ("GET", "/api/entities/product/never".into(), None, 404, "not_found"),
        ("DELETE", "/api/entities/product/never".into(), None, 404, "not_found"),
        ("GET", "/api/entities/product?limit=0".into(), None, 400, "invalid_query"),
        ("GET", "/api/entities/product?limit=abc".into(), None, 400, "invalid_query"),
        ("GET", "/api/nothing-here".into(), None, 404, "not_found"),
        ("PATCH", "/api/entities/product/p1".into(), None, 405, "method_not_allowed"),
        (
            "POST",
            "/api/sync/conflicts/resolve".into(),
            Some(json!({"conflict_id": "x", "resolution": "local"})),
            404,
            "not_found",
        ),
        ("POST", "/api/queue".into(), Some(json!({"kind": "ftp", "target": "x", "payload": {}})), 400, "invalid_body"),
        ("GET", "/api/queue?status=weird".into(), None, 400, "invalid_query"),
        ("POST", "/api/network/pair".into(), Some(json!({"address": "not an address"})), 400, "invalid_address"),
    ];
    for (method, path, body, status, code) in cases {
        let (s, b) = t.call(method, &path, body.as_ref())?;
        assert_error(s, &b, status, code);
    }

    // A batch with one bad op applies nothing.
    let (s, b) = t.call(
        "POST",
        "/api/entities/batch",
        Some(&json!({"ops": [
            {"op": "put", "type": "product", "id": "new1", "fields": {"a": 1}},
            {"op": "counter", "type": "product", "id": "p1", "field": "name", "delta": 1},
        ]})),
    )?;
    assert_error(s, &b, 409, "field_kind_mismatch");
    let (s, b) = t.call(
        "POST",
        "/api/entities/batch",
        Some(&json!({"ops": [
            {"op": "put", "type": "product", "id": "new2", "fields": {"a": 1}},
            {"op": "put", "type": "product", "id": "bad id", "fields": {}},
        ]})),
    )?;
    assert_error(s, &b, 400, "invalid_name");
    assert!(b["error"]["message"].as_str().unwrap().starts_with("op 1:"), "{b}");
    // Over 10,000 ops.
    let ops: Vec<Value> = (0..10_001).map(|i| json!({"op": "delete", "type": "p", "id": format!("x{i}")})).collect();
    let (s, b) = t.call("POST", "/api/entities/batch", Some(&json!({ "ops": ops })))?;
    assert_error(s, &b, 413, "batch_too_large");
    assert_eq!(t.digest()?, digest, "no bad request changed anything");
    Ok(())
}

#[test]
fn malformed_json_and_oversized_bodies_get_json_errors() -> Result<()> {
    let t = TerminalProcess::start(&[])?;
    let client = reqwest::blocking::Client::new();
    let send = |body: Vec<u8>| -> Result<(u16, Value)> {
        let r = client
            .put(format!("{}/api/entities/product/p1", t.url))
            .bearer_auth(tillmesh_tests::ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()?;
        let s = r.status().as_u16();
        Ok((s, r.json()?))
    };
    let (s, b) = send(b"{\"fields\": {".to_vec())?;
    assert_error(s, &b, 400, "malformed_json");
    // An over-limit body is refused from its Content-Length, before it is read; a raw
    // socket lets the test read the answer without sending 17 MiB first.
    let (s, b) = oversized_put(&t.address())?;
    assert_error(s, &b, 413, "payload_too_large");
    let deep = format!("{{\"fields\":{{\"x\":{}1{}}}}}", "[".repeat(100), "]".repeat(100));
    let (s, b) = send(deep.into_bytes())?;
    assert!(s == 400, "deep nesting: {s} {b}");
    assert_eq!(t.ok("GET", "/api/entities/product?limit=10", None)?["entities"], json!([]));
    Ok(())
}

fn oversized_put(address: &str) -> Result<(u16, Value)> {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(address)?;
    let head = format!(
        "PUT /api/entities/product/p1 HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{{\"fields\":",
        tillmesh_tests::ADMIN_TOKEN,
        17 << 20
    );
    sock.write_all(head.as_bytes())?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let _ = sock.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1).unwrap_or("0").parse()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    // Chunked or not, the JSON object is the part between the outer braces.
    let json = &body[body.find('{').unwrap_or(0)..=body.rfind('}').unwrap_or(0)];
    Ok((status, serde_json::from_str(json)?))
}

#[test]
fn the_management_api_requires_the_admin_token() -> Result<()> {
    let t = TerminalProcess::start(&[])?;
    let client = reqwest::blocking::Client::new();
    let r = client.get(format!("{}/api/health", t.url)).send()?;
    assert_eq!(r.status().as_u16(), 200, "health is open");
    for (auth, path) in [
        (None, "/api/sync/digest"),
        (Some("Bearer wrong-token-wrong-token"), "/api/sync/digest"),
        (None, "/api/openapi.json"),
    ] {
        let mut req = client.get(format!("{}{path}", t.url));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send()?;
        let s = r.status().as_u16();
        assert_error(s, &r.json()?, 401, "unauthorized");
    }
    Ok(())
}

#[test]
fn the_openapi_document_lists_every_api_path() -> Result<()> {
    let t = TerminalProcess::start(&[])?;
    let doc = t.ok("GET", "/api/openapi.json", None)?;
    let paths: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    for p in [
        "/api/health",
        "/api/entities/{entity_type}/{entity_id}",
        "/api/entities/{entity_type}",
        "/api/entities/{entity_type}/{entity_id}/counters/{field}",
        "/api/entities/batch",
        "/api/network/devices",
        "/api/network/pair",
        "/api/sync/progress",
        "/api/sync/now",
        "/api/sync/conflicts",
        "/api/sync/conflicts/resolve",
        "/api/sync/digest",
        "/api/queue",
        "/api/queue/stats",
        "/api/queue/{id}/retry",
        "/api/queue/{id}",
        "/api/notifications",
        "/api/notifications/{id}/ack",
        "/api/events",
        "/api/openapi.json",
    ] {
        assert!(paths.contains(&p), "{p} missing from the OpenAPI document: {paths:?}");
    }
    Ok(())
}

#[test]
fn bad_configuration_exits_with_code_2_and_one_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x")?;
    let cases: Vec<Vec<String>> = vec![
        vec!["--discovery".into(), "bonjour".into()],
        vec!["--listen".into(), "not-an-address".into()],
        vec![
            "--data-dir".into(),
            file.join("sub").display().to_string(),
            "--discovery".into(),
            "off".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ],
        vec!["--sync-interval".into(), "0".into()],
        vec!["--upstream".into(), "ftp://x".into()],
    ];
    for args in cases {
        let out = Command::new(binary_path()?).args(&args).env("TILLMESH_DATA_DIR", dir.path()).output()?;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
    }
    Ok(())
}

#[test]
fn sigterm_shuts_down_cleanly_and_data_is_kept() -> Result<()> {
    let mut t = TerminalProcess::start(&[])?;
    t.ok("PUT", "/api/entities/setting/tax", Some(&json!({"fields": {"rate": 20}})))?;
    let ops: Vec<Value> = (0..2_000)
        .map(|i| json!({"op": "put", "type": "sale", "id": format!("s{i}"), "fields": {"total": i}}))
        .collect();
    t.ok("POST", "/api/entities/batch", Some(&json!({ "ops": ops })))?;
    assert_eq!(t.terminate()?, Some(0));
    // Everything is in the database file: no WAL is left behind to grow the data dir.
    let wal = std::fs::metadata(t.data_dir.join("tillmesh.db-wal")).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal, 0, "WAL left after a clean shutdown");
    let t2 = TerminalProcess::start_in(&t.data_dir, &[])?;
    assert_eq!(t2.ok("GET", "/api/entities/setting/tax", None)?["fields"]["rate"], 20);
    Ok(())
}

#[test]
fn an_entity_over_the_record_cap_is_refused_with_413_and_nothing_applied() -> Result<()> {
    let t = TerminalProcess::start(&[])?;
    t.ok("PUT", "/api/entities/product/p1", Some(&json!({"fields": {"name": "Tea"}})))?;
    let before = t.digest()?;
    // Two 600 KiB fields: each fits, together the record is over 1 MiB.
    let half = "d".repeat(600 << 10);
    let (status, body) = t.call("PUT", "/api/entities/product/p1", Some(&json!({"fields": {"a": half, "b": half}})))?;
    assert_error(status, &body, 413, "entity_too_large");
    assert!(body["error"]["message"].as_str().unwrap().contains("product/p1"), "{body}");
    let ops = json!({"ops": [
        {"op": "put", "type": "sale", "id": "s1", "fields": {"total": 1}},
        {"op": "put", "type": "product", "id": "p2", "fields": {"desc": "e".repeat(1 << 20)}},
    ]});
    let (status, body) = t.call("POST", "/api/entities/batch", Some(&ops))?;
    assert_error(status, &body, 413, "entity_too_large");
    assert_eq!(t.digest()?, before, "nothing of either write was applied");
    let (status, _) = t.call("GET", "/api/entities/sale/s1", None)?;
    assert_eq!(status, 404);
    // One of the fields alone is fine.
    t.ok("PUT", "/api/entities/product/p1", Some(&json!({"fields": {"a": half}})))?;
    Ok(())
}

fn call_with(t: &TerminalProcess, token: &str, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    let client = reqwest::blocking::Client::builder().no_proxy().build()?;
    tillmesh_tests::process::token_call(&client, &t.url, token, method, path, body)
}

#[test]
fn the_app_token_reads_and_writes_entities_and_gets_403_elsewhere() -> Result<()> {
    let t = TerminalProcess::start(&[])?;
    let app = std::fs::read_to_string(t.data_dir.join("app-token"))?.trim().to_string();
    assert!(app.len() >= 16, "a generated app token is kept in the data dir");
    // A till app's work.
    let (s, e) = call_with(&t, &app, "PUT", "/api/entities/product/p1", Some(&json!({"fields": {"name": "Tea"}})))?;
    assert_eq!((s, e["fields"]["name"].clone()), (200, json!("Tea")));
    let ops = json!({"ops": [{"op": "put", "type": "sale", "id": "s1", "fields": {"total": 5}},
                             {"op": "counter", "type": "product", "id": "p1", "field": "stock", "delta": -1}]});
    assert_eq!(call_with(&t, &app, "POST", "/api/entities/batch", Some(&ops))?.0, 200);
    assert_eq!(
        call_with(&t, &app, "POST", "/api/entities/product/p1/counters/stock", Some(&json!({"delta": 3})))?.0,
        200
    );
    assert_eq!(call_with(&t, &app, "GET", "/api/entities/product/p1", None)?.1["fields"]["stock"], 2);
    assert_eq!(call_with(&t, &app, "GET", "/api/entities/sale?limit=10", None)?.0, 200);
    assert_eq!(call_with(&t, &app, "GET", "/api/openapi.json", None)?.0, 200);
    // Running the terminal is the admin's: 403 in the JSON error shape, nothing done.
    let before = t.ok("GET", "/api/queue/stats", None)?;
    for (method, path, body) in [
        ("GET", "/api/network/pairing-code", None),
        ("POST", "/api/network/pair", Some(json!({"address": "127.0.0.1:9"}))),
        ("GET", "/api/sync/conflicts", None),
        ("POST", "/api/sync/conflicts/resolve", Some(json!({"conflict_id": "x", "resolution": "local"}))),
        ("POST", "/api/queue", Some(json!({"kind": "http_post", "target": "http://127.0.0.1:9/", "payload": {}}))),
        ("GET", "/api/notifications", None),
        ("POST", "/api/sync/now", None),
    ] {
        let (status, body) = call_with(&t, &app, method, path, body.as_ref())?;
        assert_error(status, &body, 403, "forbidden");
    }
    assert_eq!(t.ok("GET", "/api/queue/stats", None)?, before);
    // A wrong token is a 401 on either kind of route; the admin token works everywhere.
    for path in ["/api/entities/product/p1", "/api/sync/conflicts"] {
        let (status, body) = call_with(&t, "not-a-token-at-all", "GET", path, None)?;
        assert_error(status, &body, 401, "unauthorized");
    }
    assert_eq!(t.ok("GET", "/api/entities/product/p1", None)?["fields"]["stock"], 2);
    // The API description names both schemes and which operations take which.
    let doc = t.ok("GET", "/api/openapi.json", None)?;
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert!(schemes.contains_key("admin_token") && schemes.contains_key("app_token"), "{schemes:?}");
    assert_eq!(
        doc["paths"]["/api/entities/batch"]["post"]["security"],
        json!([{"admin_token": []}, {"app_token": []}])
    );
    assert_eq!(doc["paths"]["/api/sync/now"]["post"]["security"], json!([{"admin_token": []}]));
    assert!(doc["paths"]["/api/sync/now"]["post"]["responses"]["403"].is_object());
    Ok(())
}

#[test]
fn an_app_token_equal_to_the_admin_token_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = Command::new(binary_path()?)
        .args(["--data-dir", &dir.path().display().to_string(), "--listen", "127.0.0.1:0", "--discovery", "off"])
        .args(["--admin-token", "same-token-0123456789", "--app-token", "same-token-0123456789"])
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--app-token must differ"));
    Ok(())
}

#[test]
fn the_data_dir_and_database_files_are_private_to_the_terminals_user() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("tillmesh-data");
    let t = TerminalProcess::start_in(&dir, &[])?;
    t.ok("PUT", "/api/entities/sale/s1", Some(&json!({"fields": {"total": 5}})))?;
    let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode(&dir)?, 0o700, "a data dir it creates");
    for f in ["tillmesh.db", "tillmesh.db-wal", "tillmesh.db-shm", "admin-token", "app-token", "store-key"] {
        assert_eq!(mode(&dir.join(f))?, 0o600, "{f}");
    }
    Ok(())
}
