//! Live driver location over HTTP: reports are validated and accepted only
//! while a driver delivers; fixes wake live-location polls and never
//! `/track`'s; the latest fix is saved, throttled, and survives a restart;
//! polls share the caps and the shutdown rule of `/track`; and across
//! instances on one PostgreSQL database a fix reaches every instance.

use std::time::{Duration, Instant};

use order_tracker::domain::fulfillment::{Assignment, DriverDetails};
use order_tracker::domain::{Actor, Attribution, Fulfill, OrderChange, OrderId};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::helpers::{
    assert_error, json_of, new_order, spawn_app, spawn_app_at, spawn_app_with, sqlite_url,
    PgDatabase, TestApp, PROMPTLY,
};

/// Assigns a driver to order `id`, as the fulfillment endpoints will.
async fn assign_driver(app: &TestApp, id: &str) {
    let id: OrderId = id.parse().unwrap();
    let change = OrderChange::Fulfill {
        command: Fulfill::AssignDriver(Box::new(Assignment {
            driver: DriverDetails {
                driver_id: "drv-7".into(),
                name: "Sam Rivera".into(),
                phone: "+1-555-0100".into(),
                vehicle_type: "car".into(),
                vehicle_number: None,
                photo_url: None,
            },
            delivery_tracking_id: None,
            delivery_tracking_url: None,
            estimated_delivery_time: None,
        })),
        actor: Actor::Operator,
        at_store: None,
    };
    app.service
        .apply(&id, change, Attribution::by("test"))
        .await
        .expect("a driver can be assigned");
}

/// An order with a driver: sample 101 on a fresh server.
async fn with_driver(app: &TestApp) -> &'static str {
    assign_driver(app, "101").await;
    "101"
}

/// `PUT /tracking/delivery/{id}/location` with `body`.
async fn report(app: &TestApp, id: &str, body: &Value) -> (StatusCode, Value) {
    report_raw(app, id, body.to_string()).await
}

/// `PUT /tracking/delivery/{id}/location` with a body sent as written.
async fn report_raw(app: &TestApp, id: &str, body: String) -> (StatusCode, Value) {
    let response = app
        .client
        .put(app.url(&format!("/tracking/delivery/{id}/location")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent");
    json_of(response).await
}

/// A fix taken `ago` seconds before now.
fn fix(latitude: f64, ago: i64) -> Value {
    let at = chrono::Utc::now() - chrono::TimeDelta::seconds(ago);
    json!({
        "latitude": latitude,
        "longitude": -74.006,
        "accuracy": 8.5,
        "timestamp": at.to_rfc3339(),
    })
}

/// `GET /tracking/orders/{id}/live-location{query}`.
async fn live(app: &TestApp, id: &str, query: &str) -> (StatusCode, Value) {
    app.get_json(&format!("/tracking/orders/{id}/live-location{query}"))
        .await
}

/// Starts a live-location poll in the background.
fn spawn_live(app: &TestApp, id: &str, query: &str) -> JoinHandle<(StatusCode, Value, Duration)> {
    let client = app.client.clone();
    let url = app.url(&format!("/tracking/orders/{id}/live-location{query}"));
    tokio::spawn(async move {
        let started = Instant::now();
        let (status, body) = json_of(client.get(url).send().await.expect("request sent")).await;
        (status, body, started.elapsed())
    })
}

#[tokio::test]
async fn bad_reports_get_400_and_change_nothing() {
    let app = spawn_app().await;
    let id = with_driver(&app).await;
    let far_future = (chrono::Utc::now() + chrono::TimeDelta::minutes(10)).to_rfc3339();
    let invalid = [
        json!({"latitude": 90.5, "longitude": 0}),
        json!({"latitude": -91, "longitude": 0}),
        json!({"latitude": 0, "longitude": 180.01}),
        json!({"latitude": 0, "longitude": -181}),
        json!({"latitude": 0, "longitude": 0, "accuracy": -1}),
        json!({"latitude": 0, "longitude": 0, "timestamp": "yesterday"}),
        json!({"latitude": 0, "longitude": 0, "timestamp": far_future}),
    ];
    for body in invalid {
        let (status, answer) = report(&app, id, &body).await;
        assert_error(
            status,
            &answer,
            StatusCode::BAD_REQUEST,
            "validation_failed",
        );
    }
    let shapes = [
        // JSON has no NaN or infinity: these are strings, or numbers too
        // large for a double.
        json!({"latitude": "NaN", "longitude": 0}),
        json!({"latitude": 0, "longitude": "Infinity"}),
        json!({"latitude": null, "longitude": 0}),
        json!({"longitude": 0}),
        json!({"latitude": 0}),
        json!({"latitude": 0, "longitude": 0, "speed": 12}),
        json!("45,-73"),
    ];
    for body in shapes {
        let (status, answer) = report(&app, id, &body).await;
        assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_body");
    }
    for body in [
        r#"{"latitude": 1e999, "longitude": 0}"#,
        r#"{"latitude": 45, "longitude": -73"#,
        "",
    ] {
        let (status, answer) = report_raw(&app, id, body.to_owned()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["success"], json!(false), "{answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Nothing was taken.
    let (status, answer) = live(&app, id, "?timeout=0").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["data"], Value::Null);
    assert_eq!(answer["seq"], json!(0));
}

#[tokio::test]
async fn only_an_existing_order_with_a_driver_that_is_not_final_takes_a_fix() {
    let app = spawn_app().await;
    let (status, body) = report(&app, "999", &fix(40.7, 0)).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "order_not_found");
    let (status, body) = live(&app, "999", "?timeout=0").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "order_not_found");

    // Sample 102 has no driver.
    let (status, body) = report(&app, "102", &fix(40.7, 0)).await;
    assert_error(status, &body, StatusCode::CONFLICT, "no_driver_assigned");
    assert!(body["message"].as_str().unwrap().contains("no driver"));

    // A final order takes none, driver or not.
    let (status, _) = app.create_order(&new_order("done-1")).await;
    assert_eq!(status, StatusCode::CREATED);
    assign_driver(&app, "done-1").await;
    let (status, body) = report(&app, "done-1", &fix(40.7, 0)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = app.put_status("done-1", "cancelled").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = report(&app, "done-1", &fix(40.8, 0)).await;
    assert_error(status, &body, StatusCode::CONFLICT, "order_final");
    // Its poll answers at once with the last fix, and does not park.
    let (status, body) =
        tokio::time::timeout(PROMPTLY, live(&app, "done-1", "?after=1&timeout=60"))
            .await
            .expect("a final order's poll answers at once");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["has_update"], json!(false));
    assert_eq!(body["data"]["latitude"], json!(40.7));

    for query in ["?after=x", "?after=-1", "?timeout=soon"] {
        let (status, body) = live(&app, "101", query).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_parameter");
    }
}

#[tokio::test]
async fn a_fix_wakes_live_location_polls_but_not_track_and_keeps_the_version() {
    let app = spawn_app().await;
    let id = with_driver(&app).await;
    let version = app.version(id).await;
    let track = app.spawn_track(id, &format!("?version={version}&timeout=3"));
    // No fix yet: the poll waits for the first.
    let first = spawn_live(&app, id, "?timeout=60");
    app.wait_parked(2).await;

    let (status, body) = report(&app, id, &fix(40.7128, 5)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], json!(true));
    assert_eq!(body["applied"], json!(true));
    assert_eq!(body["data"]["seq"], json!(1));
    assert_eq!(body["data"]["latitude"], json!(40.7128));
    assert_eq!(body["data"]["accuracy"], json!(8.5));

    let (status, answer, waited) = tokio::time::timeout(PROMPTLY, first)
        .await
        .expect("the live-location poll wakes")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(waited < PROMPTLY);
    assert_eq!(answer["has_update"], json!(true));
    assert_eq!(answer["seq"], json!(1));
    assert_eq!(answer["data"], body["data"]);
    assert_eq!(answer["timeout"], json!(60));

    let (status, tracked, waited) = track.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        tracked["has_update"],
        json!(false),
        "a fix does not wake /track"
    );
    assert!(waited >= Duration::from_secs(2), "it ran to its timeout");
    assert_eq!(
        app.version(id).await,
        version,
        "a fix is not an order change"
    );
    let (_, history) = app.history(id, "").await;
    assert_eq!(history["data"].as_array().unwrap().len() as u64, version);

    // The next fix: seq 2, after a parked poll with after=1.
    let next = spawn_live(&app, id, "?after=1&timeout=60");
    app.wait_parked(1).await;
    let (_, body) = report(&app, id, &fix(40.72, 1)).await;
    assert_eq!(body["data"]["seq"], json!(2));
    let (_, answer, _) = tokio::time::timeout(PROMPTLY, next).await.unwrap().unwrap();
    assert_eq!(answer["seq"], json!(2));
    assert_eq!(answer["data"]["latitude"], json!(40.72));

    // An older fix (or the same one again) is ignored, and wakes nobody.
    let quiet = spawn_live(&app, id, "?after=2&timeout=2");
    app.wait_parked(1).await;
    for body in [fix(50.0, 3), fix(50.0, 30)] {
        let (status, answer) = report(&app, id, &body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["applied"], json!(false));
        assert_eq!(
            answer["data"]["seq"],
            json!(2),
            "the latest fix is answered"
        );
        assert_eq!(answer["data"]["latitude"], json!(40.72));
    }
    let (_, answer, _) = quiet.await.unwrap();
    assert_eq!(answer["has_update"], json!(false));
    assert_eq!(answer["seq"], json!(2));

    // Without `after`, the latest fix at once; a fix without a timestamp
    // is taken now.
    let (_, answer) = live(&app, id, "?timeout=30").await;
    assert_eq!(
        (answer["has_update"].clone(), answer["seq"].clone()),
        (json!(true), json!(2))
    );
    let (_, body) = report(&app, id, &json!({"latitude": 1.5, "longitude": 2.5})).await;
    assert_eq!(body["applied"], json!(true));
    assert_eq!(body["data"]["accuracy"], Value::Null);
    assert_eq!(body["data"]["seq"], json!(3));
}

#[tokio::test]
async fn live_location_polls_share_the_caps_and_answer_on_shutdown() {
    let app = spawn_app_with(|config| {
        config.max_pollers_per_order = 1;
        config.max_parked_polls = 2;
        config.retry_after = 7;
    })
    .await;
    let id = with_driver(&app).await;
    let parked = spawn_live(&app, id, "?timeout=60");
    app.wait_parked(1).await;
    let response = app
        .get(&format!("/tracking/orders/{id}/live-location?timeout=60"))
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
    let (status, body) = json_of(response).await;
    assert_error(
        status,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_pollers",
    );
    // A status poll of the same order has a cap of its own...
    let track = app.spawn_track(id, "?version=2&timeout=60");
    app.wait_parked(2).await;
    // ...but the global cap counts both kinds.
    let response = app
        .get("/tracking/orders/102/live-location?timeout=60")
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "7");

    let stats = app.stats().await;
    let polls = &stats["live_locations"]["polls"];
    assert_eq!(polls["rejected_per_order_cap"], json!(1), "{stats}");
    assert_eq!(polls["rejected_global_cap"], json!(1), "{stats}");
    assert_eq!(
        stats["long_polls"]["polls"]["rejections"],
        json!(0),
        "status polls count their own"
    );

    app.begin_shutdown();
    let (status, body, _) = tokio::time::timeout(PROMPTLY, parked)
        .await
        .expect("a parked live-location poll answers on shutdown")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["has_update"], json!(false));
    assert_eq!(body["data"], Value::Null);
    tokio::time::timeout(PROMPTLY, track)
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(PROMPTLY, app.stopped())
        .await
        .expect("the server stops")
        .unwrap();
}

#[tokio::test]
async fn fixes_are_saved_throttled_and_the_last_one_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let interval = Duration::from_millis(1500);
    let app = spawn_app_at(&url, |config| config.location_write_interval = interval).await;
    let id = with_driver(&app).await;
    let order_id: OrderId = id.parse().unwrap();
    // Reads the database file as another process would.
    let db = order_tracker::store::open(&url, 1).await.unwrap();
    let saved_seq = || async { db.location(&order_id).await.unwrap().map(|l| l.seq.0) };

    // The first fix is written at once.
    let (status, body) = report(&app, id, &fix(40.0, 10)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline = Instant::now() + PROMPTLY;
    while saved_seq().await != Some(1) {
        assert!(Instant::now() < deadline, "the first fix is written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written = Instant::now();
    // The next four wait for the window to end; only the last is written.
    for n in 1..5 {
        let (status, body) = report(&app, id, &fix(40.0 + f64::from(n), 10 - i64::from(n))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    if written.elapsed() < interval - Duration::from_millis(300) {
        assert_eq!(
            saved_seq().await,
            Some(1),
            "no second write within the window"
        );
    }
    let deadline = Instant::now() + interval + PROMPTLY;
    while saved_seq().await != Some(5) {
        assert!(
            Instant::now() < deadline,
            "the last fix is written when the window ends"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let saved = db.location(&order_id).await.unwrap().unwrap();
    assert_eq!(saved.fix.latitude, 44.0);

    // A fix pending at shutdown is written before the server stops.
    let (_, body) = report(&app, id, &fix(46.0, 1)).await;
    assert_eq!(body["data"]["seq"], json!(6));
    app.begin_shutdown();
    app.stopped().await.unwrap();
    assert_eq!(saved_seq().await, Some(6));

    let app = spawn_app_at(&url, |_| {}).await;
    let (status, body) = live(&app, id, "?timeout=0").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["has_update"], json!(true));
    assert_eq!(body["seq"], json!(6));
    assert_eq!(body["data"]["latitude"], json!(46.0));
    // An older fix than the saved one is still refused; the next continues.
    let (_, body) = report(&app, id, &fix(47.0, 3600)).await;
    assert_eq!(body["applied"], json!(false));
    let (_, body) = report(&app, id, &fix(47.0, 0)).await;
    assert_eq!(body["applied"], json!(true));
    assert_eq!(body["data"]["seq"], json!(7));
}

#[tokio::test]
async fn a_fix_accepted_on_one_instance_wakes_polls_on_another() {
    let Some(db) = PgDatabase::create("live location across instances").await else {
        return;
    };
    let mut apps = Vec::new();
    for i in 0..2 {
        apps.push(
            spawn_app_at(&db.url, |config| {
                config.no_sample_orders = true;
                config.instance_id = Some(format!("node-{i}"));
            })
            .await,
        );
    }
    let (a, b) = (&apps[0], &apps[1]);
    let (status, _) = a.create_order(&new_order("o1")).await;
    assert_eq!(status, StatusCode::CREATED);
    assign_driver(a, "o1").await;

    let parked = spawn_live(b, "o1", "?timeout=60");
    b.wait_parked(1).await;
    let (status, body) = report(a, "o1", &fix(40.7, 2)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, answer, _) = tokio::time::timeout(PROMPTLY, parked)
        .await
        .expect("the fix reaches the other instance")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["has_update"], json!(true));
    assert_eq!(answer["data"], body["data"]);

    // The next fix, sent to B, continues the sequence A started.
    let parked = spawn_live(a, "o1", "?after=1&timeout=60");
    a.wait_parked(1).await;
    let (_, body) = report(b, "o1", &fix(40.8, 1)).await;
    assert_eq!(body["data"]["seq"], json!(2));
    let (_, answer, _) = tokio::time::timeout(PROMPTLY, parked)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer["seq"], json!(2));
    assert_eq!(answer["data"]["latitude"], json!(40.8));
}
