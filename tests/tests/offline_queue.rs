//! The offline queue end to end: the real `terminal-server` delivering to a head
//! office simulated inside the test (axum on 127.0.0.1) that refuses, rejects, is
//! down, is slow — and terminals killed with SIGKILL in the middle of it all.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tillmesh_tests::process::wait_until;
use tillmesh_tests::{TerminalProcess, ADMIN_TOKEN};

// ---------------------------------------------------------------------------
// Head office stand-in
// ---------------------------------------------------------------------------

/// One request head office received (recorded on arrival, before answering).
#[derive(Clone, Debug)]
struct Received {
    at: Instant,
    key: Option<String>,
    body: Value,
}

/// Head office's answer to one request.
#[derive(Clone, Copy, Debug)]
struct Reply {
    status: u16,
    delay: Duration,
    body: &'static str,
}

impl Reply {
    fn status(status: u16) -> Self {
        Self { status, delay: Duration::ZERO, body: "" }
    }
}

/// Decides the answer to a request, given it and how many came before it.
type Behaviour = Arc<dyn Fn(&Received, usize) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Office {
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Behaviour,
}

async fn receive(State(office): State<Office>, headers: HeaderMap, body: Bytes) -> (StatusCode, &'static str) {
    let request = Received {
        at: Instant::now(),
        key: headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let reply = {
        let mut all = office.received.lock().unwrap();
        let reply = (office.behaviour)(&request, all.len());
        all.push(request);
        reply
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    (StatusCode::from_u16(reply.status).unwrap(), reply.body)
}

/// A head office on 127.0.0.1 with its own runtime. Its port is reserved first
/// (bound, not listening: connections are refused, as from a head office that is
/// down) and [`HeadOffice::open`] starts answering on that same port.
struct HeadOffice {
    rt: tokio::runtime::Runtime,
    port: u16,
    office: Office,
    reserved: Option<tokio::net::TcpSocket>,
}

impl HeadOffice {
    /// Down: the port refuses connections until [`Self::open`].
    fn down(behaviour: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("head office runtime");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.1:0".parse().unwrap()).expect("reserve a port");
        let port = socket.local_addr().expect("reserved address").port();
        Self {
            rt,
            port,
            office: Office { received: Arc::default(), behaviour: Arc::new(behaviour) },
            reserved: Some(socket),
        }
    }

    /// Up and answering at once.
    fn up(behaviour: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Self {
        let mut h = Self::down(behaviour);
        h.open();
        h
    }

    /// Starts answering on the reserved port.
    fn open(&mut self) {
        let socket = self.reserved.take().expect("head office opened twice");
        let _guard = self.rt.enter();
        let listener = socket.listen(1024).expect("listen");
        let app = Router::new().route("/sales", post(receive)).with_state(self.office.clone());
        self.rt.spawn(async move {
            axum::serve(listener, app).await.expect("head office server");
        });
    }

    /// The URL the terminal posts to.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/sales", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.office.received.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------
// Live events client
// ---------------------------------------------------------------------------

/// A client of `GET /api/events`, connected (and so subscribed) when built, that
/// accumulates the raw stream in the background.
struct EventStream {
    text: Arc<Mutex<String>>,
}

impl EventStream {
    fn connect(rt: &tokio::runtime::Runtime, terminal: &TerminalProcess) -> Self {
        let client = reqwest::Client::builder().no_proxy().build().expect("client");
        let url = format!("{}/api/events", terminal.url);
        let mut resp = rt.block_on(client.get(url).bearer_auth(ADMIN_TOKEN).send()).expect("GET /api/events");
        assert_eq!(resp.status().as_u16(), 200);
        let content_type =
            resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        let text = Arc::new(Mutex::new(String::new()));
        let sink = text.clone();
        rt.spawn(async move {
            while let Ok(Some(chunk)) = resp.chunk().await {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk));
            }
        });
        Self { text }
    }

    /// The complete events received so far, as (event name, data).
    fn events(&self) -> Vec<(String, String)> {
        let text = self.text.lock().unwrap().replace("\r\n", "\n");
        let mut complete: Vec<&str> = text.split("\n\n").collect();
        complete.pop(); // the part after the last blank line is not finished yet
        complete
            .into_iter()
            .filter_map(|block| {
                let mut name = None;
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                    }
                }
                Some((name?, data.join("\n")))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Terminal helpers
// ---------------------------------------------------------------------------

fn enqueue(t: &TerminalProcess, target: &str, payload: Value) -> Value {
    let (status, op) = t
        .call("POST", "/api/queue", Some(&json!({"kind": "http_post", "target": target, "payload": payload})))
        .expect("POST /api/queue");
    assert_eq!(status, 201, "{op}");
    assert_eq!(op["status"], "pending", "{op}");
    assert_eq!(op["attempts"], 0, "{op}");
    op
}

fn operations(t: &TerminalProcess) -> Vec<Value> {
    let list = t.ok("GET", "/api/queue?limit=1000", None).expect("queue");
    list["operations"].as_array().expect("operations").clone()
}

fn operation(t: &TerminalProcess, id: &str) -> Value {
    operations(t).into_iter().find(|o| o["id"] == id).unwrap_or_else(|| panic!("operation {id} is not listed"))
}

fn stats(t: &TerminalProcess) -> Value {
    t.ok("GET", "/api/queue/stats", None).expect("queue stats")
}

fn wait_for_status(t: &TerminalProcess, id: &str, status: &str, timeout: Duration) -> Value {
    wait_until(&format!("operation {id} {status}"), timeout, || Ok(operation(t, id)["status"] == status))
        .expect("operation status");
    operation(t, id)
}

fn notifications(t: &TerminalProcess) -> Vec<Value> {
    let list = t.ok("GET", "/api/notifications", None).expect("notifications");
    list["notifications"].as_array().expect("notifications").clone()
}

/// Asserts the API's error shape and code.
fn assert_error(t: &TerminalProcess, method: &str, path: &str, body: Option<&Value>, status: u16, code: &str) {
    let (got, json) = t.call(method, path, body).expect("request");
    assert_eq!(got, status, "{method} {path}: {json}");
    assert_eq!(json["error"]["code"], code, "{method} {path}: {json}");
    assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{method} {path}: {json}");
}

fn sale_ids(n: usize) -> BTreeSet<String> {
    (0..n).map(|i| format!("sale-{i:03}")).collect()
}

/// Creates sales `sale-000`.. : the first half one PUT each, the rest in one batch.
fn create_sales(t: &TerminalProcess, n: usize) {
    let ids: Vec<String> = sale_ids(n).into_iter().collect();
    let (single, batched) = ids.split_at(n / 2);
    for (i, id) in single.iter().enumerate() {
        t.ok(
            "PUT",
            &format!("/api/entities/sale/{id}"),
            Some(&json!({"fields": {"total": i, "lines": [{"sku": "p-1", "qty": 1}]}})),
        )
        .expect("PUT sale");
    }
    let ops: Vec<Value> = batched
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"op": "put", "type": "sale", "id": id, "fields": {"total": i}}))
        .collect();
    t.ok("POST", "/api/entities/batch", Some(&json!({ "ops": ops }))).expect("batch of sales");
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn an_operation_refused_three_times_is_delivered_after_growing_delays() {
    let office = HeadOffice::up(|_, n| Reply::status(if n < 3 { 503 } else { 200 }));
    let t = TerminalProcess::start(&["--retry-base-ms", "100", "--retry-max-ms", "5000"]).expect("terminal");
    let payload = json!({"receipt": "R-1", "total": 42});
    let op = enqueue(&t, &office.url(), payload.clone());
    let id = op["id"].as_str().unwrap().to_string();
    assert_eq!(op["max_retries"], 8, "the default --max-retries: {op}");

    let done = wait_for_status(&t, &id, "completed", Duration::from_secs(10));
    assert_eq!(done["attempts"], 4, "{done}");

    let got = office.received();
    assert_eq!(got.len(), 4, "three refusals and one delivery");
    for r in &got {
        assert_eq!(r.key.as_deref(), Some(id.as_str()), "Idempotency-Key");
        assert_eq!(r.body, payload);
    }
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    eprintln!("attempt gaps: {gaps:?}");
    let ms = Duration::from_millis;
    for (i, (gap, ceiling)) in gaps.iter().zip([100, 200, 400]).enumerate() {
        let (low, high) = (ms(ceiling / 2 - 20), ms(ceiling + 300));
        assert!(
            *gap >= low && *gap <= high,
            "gap {} is {gap:?}, outside [{low:?}, {high:?}] (ceiling {ceiling} ms)",
            i + 1
        );
    }
    // Equal jitter keeps each delay at or above half its ceiling, so the delays grow
    // (neighbours' windows touch at one point: allow scheduling noise there).
    assert!(gaps[1] + ms(20) >= gaps[0] && gaps[2] + ms(20) >= gaps[1], "{gaps:?}");
    assert!(gaps[2] > gaps[0], "{gaps:?}");
    // The retry comes when it is due, not at the worker's next poll: a worker that
    // looked at the queue only every 200 ms made this first gap ≥ 200 ms.
    assert!(gaps[0] < ms(195), "first retry late: {gaps:?}");
}

#[test]
fn an_undeliverable_operation_fails_notifies_and_can_be_retried_then_cancelled() {
    // Head office is down for good: its port refuses every connection.
    let office = HeadOffice::down(|_, _| Reply::status(200));
    let t = TerminalProcess::start(&["--max-retries", "3", "--retry-base-ms", "50", "--retry-max-ms", "200"])
        .expect("terminal");
    let events = EventStream::connect(&office.rt, &t);

    let op = enqueue(&t, &office.url(), json!({"receipt": "R-2"}));
    let id = op["id"].as_str().unwrap().to_string();
    assert_eq!(op["max_retries"], 3, "{op}");
    let failed = wait_for_status(&t, &id, "failed", Duration::from_secs(10));
    assert_eq!(failed["attempts"], 3, "--max-retries is the total of attempts: {failed}");
    let last_error = failed["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("gave up after 3 attempts"), "{last_error}");
    assert_eq!(stats(&t)["failed"], 1);

    // The notification…
    let failures: Vec<Value> = notifications(&t).into_iter().filter(|n| n["operation_id"] == id.as_str()).collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let note = &failures[0];
    assert_eq!(note["kind"], "operation_failed");
    assert_eq!(note["acknowledged"], false);
    assert!(note["message"].as_str().unwrap().contains(&id), "{note}");
    let note_id = note["id"].as_str().unwrap().to_string();

    // …and the live event.
    wait_until("an operation_failed event", Duration::from_secs(10), || {
        Ok(events.events().iter().any(|(name, data)| {
            let data: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            name == "operation_failed"
                && data["operation_id"] == id.as_str()
                && data["notification_id"] == note_id.as_str()
        }))
    })
    .expect("event");

    // Acknowledging.
    let acked = t.ok("POST", &format!("/api/notifications/{note_id}/ack"), None).expect("ack");
    assert_eq!(acked["acknowledged"], true, "{acked}");
    let listed =
        notifications(&t).into_iter().find(|n| n["id"] == note_id.as_str()).expect("notification still listed");
    assert_eq!(listed["acknowledged"], true);

    // Retrying puts it back with its attempts reset; it fails again after 3 more.
    let retried = t.ok("POST", &format!("/api/queue/{id}/retry"), None).expect("retry");
    assert_eq!(retried["status"], "pending", "{retried}");
    assert_eq!(retried["attempts"], 0, "{retried}");
    wait_until("a second failure notification", Duration::from_secs(10), || {
        Ok(notifications(&t).iter().filter(|n| n["operation_id"] == id.as_str()).count() == 2)
    })
    .expect("second failure");
    let failed_again = operation(&t, &id);
    assert_eq!(failed_again["status"], "failed", "{failed_again}");
    assert_eq!(failed_again["attempts"], 3, "{failed_again}");

    // Cancelling.
    let cancelled = t.ok("DELETE", &format!("/api/queue/{id}"), None).expect("cancel");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let listed = t.ok("GET", "/api/queue?status=cancelled", None).expect("cancelled list");
    assert_eq!(listed["operations"][0]["id"], id.as_str(), "{listed}");
    assert_eq!(stats(&t)["failed"], 0);
    assert_error(&t, "POST", &format!("/api/queue/{id}/retry"), None, 409, "invalid_state");
    assert_error(&t, "DELETE", &format!("/api/queue/{id}"), None, 409, "invalid_state");
}

#[test]
fn a_rejection_by_head_office_fails_the_operation_after_one_attempt() {
    let office = HeadOffice::up(|r, _| Reply {
        status: r.body["answer"].as_u64().and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
        delay: Duration::ZERO,
        body: "total is missing",
    });
    // Default policy: 8 attempts, 1 s base — a retry would be visible.
    let t = TerminalProcess::start(&[]).expect("terminal");
    for answer in [400, 422] {
        let op = enqueue(&t, &office.url(), json!({"answer": answer}));
        let id = op["id"].as_str().unwrap().to_string();
        let failed = wait_for_status(&t, &id, "failed", Duration::from_secs(10));
        assert_eq!(failed["attempts"], 1, "{failed}");
        let last_error = failed["last_error"].as_str().unwrap_or_default();
        assert!(last_error.contains("retrying cannot help"), "{last_error}");
        assert!(last_error.contains(&answer.to_string()), "{last_error}");
        assert!(last_error.contains("total is missing"), "{last_error}");
        assert!(
            notifications(&t).iter().any(|n| n["operation_id"] == id.as_str() && n["kind"] == "operation_failed"),
            "a notification for {id}"
        );
    }
    assert_eq!(office.received().len(), 2, "one attempt each");
}

#[test]
fn new_sales_are_forwarded_to_head_office_exactly_once() {
    let office = HeadOffice::up(|_, _| Reply::status(201));
    let t = TerminalProcess::start(&["--upstream", &office.url()]).expect("terminal");
    let device = t.device_id().expect("device id");

    t.ok("PUT", "/api/entities/sale/s-1", Some(&json!({"fields": {"total": 12.5, "items": 2}}))).expect("new sale");
    t.ok("PUT", "/api/entities/sale/s-1", Some(&json!({"fields": {"paid": true}}))).expect("sale update");
    t.ok(
        "POST",
        "/api/entities/batch",
        Some(&json!({"ops": [
            {"op": "put", "type": "sale", "id": "s-2", "fields": {"total": 3}},
            {"op": "put", "type": "sale", "id": "s-3", "fields": {"total": 4}},
            {"op": "put", "type": "sale", "id": "s-1", "fields": {"note": "updated in a batch"}},
            {"op": "put", "type": "product", "id": "p-1", "fields": {"price": 1}},
            {"op": "put", "type": "sale", "id": "s-2", "fields": {"cashier": "ann"}},
        ]})),
    )
    .expect("batch");
    t.ok("DELETE", "/api/entities/sale/s-3", None).expect("delete");

    wait_until("3 deliveries", Duration::from_secs(10), || Ok(stats(&t)["completed"] == 3)).expect("deliveries");
    let ops = operations(&t);
    assert_eq!(ops.len(), 3, "one operation per new sale: {ops:?}");

    let got = office.received();
    assert_eq!(got.len(), 3, "{got:?}");
    let by_id: HashMap<String, &Received> =
        got.iter().map(|r| (r.body["id"].as_str().unwrap_or_default().to_string(), r)).collect();
    assert_eq!(by_id.keys().cloned().collect::<BTreeSet<_>>(), ["s-1", "s-2", "s-3"].map(String::from).into(),);
    for r in &got {
        eprintln!("head office received: {}", r.body);
        assert_eq!(r.body["type"], "sale");
        assert_eq!(r.body["terminal"], device.as_str());
        let key = r.key.as_deref().expect("Idempotency-Key");
        assert!(ops.iter().any(|o| o["id"] == key), "{key} is an operation id");
    }
    assert_eq!(by_id["s-1"].body["fields"], json!({"total": 12.5, "items": 2}));
    assert_eq!(by_id["s-2"].body["fields"]["total"], 3);
    assert_eq!(by_id["s-3"].body["fields"], json!({"total": 4}));
}

/// Every sale reached head office, each under one key of its own.
fn assert_each_sale_under_one_key(t: &TerminalProcess, got: &[Received], sales: &BTreeSet<String>) {
    let mut sale_of_key: HashMap<&str, &str> = HashMap::new();
    for r in got {
        let key = r.key.as_deref().expect("Idempotency-Key");
        let sale = r.body["id"].as_str().expect("sale id");
        let previous = sale_of_key.insert(key, sale);
        assert!(previous.is_none_or(|p| p == sale), "key {key} was used for {previous:?} and {sale}");
    }
    let delivered: BTreeSet<String> = sale_of_key.values().map(|s| s.to_string()).collect();
    assert_eq!(&delivered, sales, "every sale delivered");
    assert_eq!(sale_of_key.len(), sales.len(), "one key per sale");
    let op_ids: BTreeSet<String> = operations(t).iter().map(|o| o["id"].as_str().unwrap().to_string()).collect();
    let keys: BTreeSet<String> = sale_of_key.keys().map(|k| k.to_string()).collect();
    assert_eq!(keys, op_ids, "the keys are the operations' ids");
}

#[test]
fn sales_created_while_head_office_is_down_are_delivered_once_after_a_crash() {
    let mut office = HeadOffice::down(|_, _| Reply::status(200));
    let url = office.url();
    let args = ["--upstream", url.as_str(), "--max-retries", "1000", "--retry-base-ms", "100", "--retry-max-ms", "400"];
    let mut t = TerminalProcess::start(&args).expect("terminal");
    create_sales(&t, 50);
    let s = stats(&t);
    assert_eq!(s["completed"], 0, "{s}");
    assert_eq!(s["pending"].as_u64().unwrap() + s["processing"].as_u64().unwrap(), 50, "{s}");
    wait_until("every sale tried at least once", Duration::from_secs(10), || {
        Ok(operations(&t).iter().all(|o| o["attempts"].as_u64() >= Some(1)))
    })
    .expect("attempts");

    t.kill9();
    office.open();
    let t2 = TerminalProcess::start_in(&t.data_dir, &args).expect("restarted terminal");
    let started = Instant::now();
    wait_until("50 deliveries", Duration::from_secs(30), || Ok(stats(&t2)["completed"] == 50)).expect("deliveries");
    eprintln!("all 50 delivered {:?} after the restart", started.elapsed());

    let got = office.received();
    assert_eq!(got.len(), 50, "no sale sent twice");
    assert_each_sale_under_one_key(&t2, &got, &sale_ids(50));
    let s = stats(&t2);
    assert_eq!(
        (s["pending"].clone(), s["processing"].clone(), s["failed"].clone()),
        (json!(0), json!(0), json!(0)),
        "{s}"
    );
}

#[test]
fn sales_in_flight_when_the_terminal_crashes_reach_head_office_under_one_key_each() {
    let office = HeadOffice::up(|_, _| Reply { status: 200, delay: Duration::from_millis(200), body: "" });
    let url = office.url();
    let args = ["--upstream", url.as_str(), "--retry-base-ms", "100", "--retry-max-ms", "400"];
    let mut t = TerminalProcess::start(&args).expect("terminal");
    create_sales(&t, 50);
    wait_until("some deliveries under way", Duration::from_secs(10), || Ok(office.received().len() >= 6))
        .expect("deliveries started");
    t.kill9();
    let before = office.received().len();

    let t2 = TerminalProcess::start_in(&t.data_dir, &args).expect("restarted terminal");
    wait_until("50 deliveries", Duration::from_secs(30), || Ok(stats(&t2)["completed"] == 50)).expect("deliveries");

    let got = office.received();
    assert_each_sale_under_one_key(&t2, &got, &sale_ids(50));
    let distinct: BTreeSet<&str> = got.iter().filter_map(|r| r.key.as_deref()).collect();
    let duplicates = got.len() - distinct.len();
    eprintln!(
        "received {before} requests before the kill; {} in all, {duplicates} raw duplicates (same key)",
        got.len()
    );
    // Duplicates come only from attempts in flight at the kill: at most a handful.
    assert!(duplicates <= 8, "{duplicates} duplicates");
}

#[test]
fn the_queue_api_answers_bad_requests_with_json_errors() {
    let office = HeadOffice::down(|_, _| Reply::status(200));
    // Retries a minute apart: an operation stays pending once its first attempt failed.
    let t = TerminalProcess::start(&["--retry-base-ms", "60000", "--retry-max-ms", "60000"]).expect("terminal");

    assert_error(&t, "GET", "/api/queue?status=stuck", None, 400, "invalid_query");
    assert_error(&t, "GET", "/api/queue?limit=0", None, 400, "invalid_query");
    assert_error(&t, "GET", "/api/queue?limit=many", None, 400, "invalid_query");
    let bad_bodies = [
        json!({"kind": "ftp_put", "target": office.url(), "payload": {}}),
        json!({"kind": "http_post", "target": "not a url", "payload": {}}),
        json!({"kind": "http_post", "target": "ftp://example.com/x", "payload": {}}),
        json!({"kind": "http_post", "target": office.url()}),
        json!({"kind": "http_post", "target": 7, "payload": {}}),
    ];
    for body in &bad_bodies {
        assert_error(&t, "POST", "/api/queue", Some(body), 400, "invalid_body");
    }
    assert_error(&t, "POST", "/api/queue/no-such-op/retry", None, 404, "not_found");
    assert_error(&t, "DELETE", "/api/queue/no-such-op", None, 404, "not_found");
    assert_error(&t, "POST", "/api/notifications/no-such-note/ack", None, 404, "not_found");
    assert!(operations(&t).is_empty(), "nothing was queued by bad requests");

    // A pending operation can be cancelled, not retried; a cancelled one neither.
    let op = enqueue(&t, &office.url(), json!({"receipt": "R-3"}));
    let id = op["id"].as_str().unwrap().to_string();
    wait_until("the first attempt", Duration::from_secs(10), || Ok(operation(&t, &id)["attempts"] == 1))
        .expect("first attempt");
    let pending = operation(&t, &id);
    assert_eq!(pending["status"], "pending", "{pending}");
    assert!(pending["last_error"].as_str().unwrap_or_default().contains("could not reach"), "{pending}");
    assert_error(&t, "POST", &format!("/api/queue/{id}/retry"), None, 409, "invalid_state");
    let cancelled = t.ok("DELETE", &format!("/api/queue/{id}"), None).expect("cancel");
    assert_eq!(cancelled["status"], "cancelled");
    assert_error(&t, "DELETE", &format!("/api/queue/{id}"), None, 409, "invalid_state");
    let s = stats(&t);
    assert_eq!((s["pending"].clone(), s["failed"].clone()), (json!(0), json!(0)), "{s}");

    // The event stream needs the admin token like the rest of the API.
    let client = reqwest::blocking::Client::builder().no_proxy().build().unwrap();
    let resp = client.get(format!("{}/api/events", t.url)).send().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}
