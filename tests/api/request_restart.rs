//! Order requests survive a restart: both sides' records and notes come back
//! as they were, and a processing stream that was running resumes with a
//! new seller-search round that the order's history explains; a stopped one
//! stays stopped. Each test restarts the server on the same SQLite file
//! (one also with `kill -9`).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::crash::Server;
use crate::helpers::{spawn_app_at, sqlite_url, TestApp, PROMPTLY};
use crate::requests::{details, follow_up_body, processor_record, start, watch_until};

/// What the requestor's and the processor's diagnostics show about `ids`.
async fn diagnostics(app: &TestApp, ids: &[&str]) -> Value {
    let (_, tracking) = app.get_json("/api/v1/orders/tracking/status").await;
    let (_, processor) = app.get_json("/api/v1/processor/tracking/status").await;
    let mut requests = serde_json::Map::new();
    for id in ids {
        requests.insert(
            (*id).to_owned(),
            json!({
                "details": details(app, id).await,
                "processor": processor_record(app, id).await,
            }),
        );
    }
    json!({
        "tracking": tracking,
        "processor_ids": processor["tracked_order_ids"],
        "processor_total": processor["total_orders"],
        "requests": requests,
    })
}

async fn follow_up(app: &TestApp, id: &str, text: &str) {
    let (status, body) = app
        .post_json(
            "/api/v1/orders/followup",
            &follow_up_body(id, &["seller1", "seller2"], text),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn restart(app: TestApp, url: &str) -> TestApp {
    app.begin_shutdown();
    app.stopped().await.unwrap();
    spawn_app_at(url, |_| {}).await
}

/// Waits until the processor's record of `id` is in `state`.
async fn wait_processor_state(app: &TestApp, id: &str, state: &str) {
    let deadline = Instant::now() + PROMPTLY;
    while processor_record(app, id).await["state"] != json!(state) {
        assert!(Instant::now() < deadline, "{id} never became {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn settled_and_stopped_requests_come_back_exactly_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let app = spawn_app_at(&url, |_| {}).await;
    // Settled: decided in 0.6 s, with a note on both sides.
    start(&app, "KEEP-DONE", "?speed=600").await;
    follow_up(&app, "KEEP-DONE", "Ring twice").await;
    watch_until(&app, "KEEP-DONE", |o| o["status"] == json!("confirmed")).await;
    // Stopped mid-search, with two notes.
    start(&app, "KEEP-STOP", "").await;
    follow_up(&app, "KEEP-STOP", "Please expedite this order").await;
    follow_up(&app, "KEEP-STOP", "No onions").await;
    let (status, _) = app.post("/api/v1/orders/KEEP-STOP/stop").await;
    assert_eq!(status, StatusCode::OK);
    wait_processor_state(&app, "KEEP-STOP", "abandoned").await;
    let ids = ["KEEP-DONE", "KEEP-STOP"];
    let before = diagnostics(&app, &ids).await;
    let stop_version = app.version("KEEP-STOP").await;
    assert_eq!(before["tracking"]["total_orders"], json!(2), "{before}");
    assert_eq!(
        before["requests"]["KEEP-STOP"]["details"]["notes_count"],
        json!(2)
    );
    assert_eq!(
        before["requests"]["KEEP-DONE"]["processor"]["state"],
        json!("accepted")
    );

    let app = restart(app, &url).await;
    // Ids, order, counts, notes (ids, audiences, times), sellers, proposals:
    // all as before. Nothing is active: neither stream was running.
    assert_eq!(diagnostics(&app, &ids).await, before);
    assert_eq!(before["tracking"]["active_streams"], json!(0));
    // The stopped request was not resumed: its order did not change.
    assert_eq!(app.version("KEEP-STOP").await, stop_version);
    // Follow-up ids go on where they stopped, on both sides.
    follow_up(&app, "KEEP-STOP", "Third note").await;
    let notes = details(&app, "KEEP-STOP").await["notes"].clone();
    assert_eq!(notes[2]["follow_up_id"], json!("FU003"), "{notes}");
    let processor = processor_record(&app, "KEEP-STOP").await;
    assert_eq!(processor["notes_dict_arr"].as_array().unwrap().len(), 3);
    // A stopped request may still be initiated again after the restart.
    start(&app, "KEEP-STOP", "").await;
    assert_eq!(details(&app, "KEEP-STOP").await["notes_count"], json!(3));
}

#[tokio::test]
async fn a_stream_running_at_shutdown_resumes_with_its_speed_and_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let app = spawn_app_at(&url, |_| {}).await;
    // At 200 times, sellers are selected after 0.6 s and a proposal is
    // accepted after 1.8 s; an `expire` round expires after 4.5 s. The
    // server stops long before.
    start(&app, "RESUME-OK", "?speed=200").await;
    start(&app, "RESUME-EXP", "?speed=200&scenario=expire").await;
    follow_up(&app, "RESUME-OK", "Extra napkins").await;
    let before = details(&app, "RESUME-OK").await;
    assert_eq!(before["is_stream_active"], json!(true));

    let app = restart(app, &url).await;
    // Running again, in this process, with the notes it had.
    let after = details(&app, "RESUME-OK").await;
    assert_eq!(after["is_stream_active"], json!(true), "{after}");
    assert_eq!(after["notes"], before["notes"]);
    let (_, tracking) = app.get_json("/api/v1/orders/tracking/status").await;
    assert_eq!(tracking["active_streams"], json!(2), "{tracking}");
    // The customer sees why the search started over.
    let (_, history) = app.history("RESUME-OK", "").await;
    let last = history["data"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], json!("search_restarted"), "{history}");
    assert_eq!(last["updated_by"], json!("order-request processor"));
    assert!(
        last["notes"]
            .as_str()
            .is_some_and(|n| n.contains("server restart")),
        "{last}"
    );
    assert_eq!(
        app.order("RESUME-OK").await["seller_search"]["attempt"],
        json!(2)
    );
    // The processor's new round carries the note over.
    let processor = processor_record(&app, "RESUME-OK").await;
    assert_eq!(processor["state"], json!("processing"), "{processor}");
    assert_eq!(
        processor["notes_dict_arr"][0]["follow_up_id"],
        json!("FU001")
    );

    // Same speed and scenario as initiated: one confirms, one expires, both
    // within seconds.
    let confirmed = watch_until(&app, "RESUME-OK", |o| o["status"] == json!("confirmed")).await;
    assert!(!confirmed["restaurant_name"].as_str().unwrap().is_empty());
    watch_until(&app, "RESUME-EXP", |o| o["status"] == json!("expired")).await;
    let deadline = Instant::now() + PROMPTLY;
    while details(&app, "RESUME-OK").await["is_stream_active"] != json!(false)
        || details(&app, "RESUME-EXP").await["is_stream_active"] != json!(false)
    {
        assert!(Instant::now() < deadline, "streams end with their outcome");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Ended streams are not resumed again by the next restart.
    let version = app.version("RESUME-OK").await;
    let app = restart(app, &url).await;
    assert_eq!(app.version("RESUME-OK").await, version);
    let (_, tracking) = app.get_json("/api/v1/orders/tracking/status").await;
    assert_eq!(tracking["active_streams"], json!(0), "{tracking}");
}

#[tokio::test]
async fn requests_and_a_running_stream_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let server = Server::start(&url).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}/api/v1/orders", server.addr);
    let response = client
        .post(format!("{base}/initiate"))
        .json(&json!({"order_req_id": "KILL1", "session_id": "sess_kill", "notification_type": "sms"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = client
        .post(format!("{base}/followup"))
        .json(&follow_up_body("KILL1", &["seller3"], "Leave at the door"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.kill().await;

    let server = Server::start(&url).await;
    let base = format!("http://{}/api/v1", server.addr);
    let get = |path: String| {
        let client = client.clone();
        async move {
            client
                .get(path)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let tracked = get(format!("{base}/orders/tracking/KILL1")).await;
    assert_eq!(tracked["session"], json!("sess_kill"), "{tracked}");
    assert_eq!(tracked["notes_count"], json!(1));
    assert_eq!(tracked["notes"][0]["audience"], json!(["seller3"]));
    assert_eq!(tracked["is_stream_active"], json!(true), "resumed");
    let processor = get(format!("{base}/processor/tracking/KILL1")).await;
    assert_eq!(processor["notification_type"], json!("sms"), "{processor}");
    assert_eq!(
        processor["notes_dict_arr"][0]["content"]["message"],
        json!("Leave at the door")
    );
    let history = get(format!("{base}/orders/KILL1/history")).await;
    let kinds: Vec<&Value> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["kind"])
        .collect();
    assert_eq!(kinds, [&json!("created"), &json!("search_restarted")]);
    server.kill().await;
}
