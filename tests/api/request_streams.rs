//! Order requests, processing side (seeds 000–002 joined to customer
//! tracking): every way a processing stream ends leaves it inactive, several
//! requests run independently, customers follow a request through `/track`,
//! and only the processor confirms or expires a requested order.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, spawn_app_with, PROMPTLY};
use crate::requests::{
    details, follow_up_body, initiate, processor_record, request_stats, start, wait_inactive,
    watch_until,
};

fn status_is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |order: &Value| order["status"] == json!(status)
}

#[tokio::test]
async fn completion_confirms_the_order_with_the_accepted_seller_and_ends_the_stream() {
    let app = spawn_app().await;
    start(&app, "END-OK", "?speed=100000").await;
    let order = watch_until(&app, "END-OK", status_is("confirmed")).await;
    wait_inactive(&app, "END-OK").await;

    let record = processor_record(&app, "END-OK").await;
    assert_eq!(record["state"], json!("accepted"));
    assert_eq!(record["seller_dict_arr"].as_array().unwrap().len(), 3);
    let proposals = record["proposal_dict_arr"].as_array().unwrap();
    assert_eq!(proposals.len(), 3);
    let accepted: Vec<&Value> = proposals
        .iter()
        .filter(|p| p["accepted"] == json!(true))
        .collect();
    assert_eq!(accepted.len(), 1, "{record}");
    let quickest = proposals
        .iter()
        .map(|p| p["prep_minutes"].as_u64().unwrap())
        .min();
    assert_eq!(accepted[0]["prep_minutes"].as_u64(), quickest);
    assert_eq!(order["restaurant_name"], accepted[0]["seller_name"]);
    assert_eq!(
        order["seller_search"],
        json!({"attempt": 1, "sellers_contacted": 3, "proposals_received": 3})
    );
    assert!(order["estimated_delivery"].is_string(), "{order}");
    assert_eq!(
        request_stats(&app).await["stream_endings"]["accepted"],
        json!(1)
    );
}

#[tokio::test]
async fn expiry_ends_the_order_in_a_final_state_and_ends_the_stream() {
    let app = spawn_app().await;
    start(&app, "END-EXP", "?speed=100000&scenario=expire").await;
    watch_until(&app, "END-EXP", status_is("expired")).await;
    wait_inactive(&app, "END-EXP").await;
    let (_, body) = app.track("END-EXP", "?version=1&timeout=30").await;
    assert_eq!(body["data"]["status"], json!("expired"));
    assert_eq!(body["next_poll_interval"], json!(0), "final: stop polling");
    assert_eq!(body["data"]["estimated_delivery"], Value::Null);
    assert_eq!(
        body["data"]["seller_search"]["proposals_received"],
        json!(0)
    );
    assert_eq!(
        processor_record(&app, "END-EXP").await["state"],
        json!("expired")
    );
    assert_eq!(
        request_stats(&app).await["stream_endings"]["expired"],
        json!(1)
    );
}

#[tokio::test]
async fn a_processor_error_ends_the_stream_and_leaves_the_order_requested() {
    let app = spawn_app().await;
    start(&app, "END-ERR", "?speed=100000&scenario=fail").await;
    // Sellers are selected before the failure, so the customer sees that much.
    watch_until(&app, "END-ERR", |o| {
        o["seller_search"]["sellers_contacted"] == json!(3)
    })
    .await;
    wait_inactive(&app, "END-ERR").await;
    let order = app.order("END-ERR").await;
    assert_eq!(order["status"], json!("requested"));
    assert_eq!(
        processor_record(&app, "END-ERR").await["state"],
        json!("failed")
    );
    let endings = &request_stats(&app).await["stream_endings"];
    assert_eq!(endings["processor_error"], json!(1), "{endings}");
    // The request may be tried again.
    start(&app, "END-ERR", "").await;
    assert_eq!(
        app.order("END-ERR").await["seller_search"]["attempt"],
        json!(2)
    );
}

#[tokio::test]
async fn stop_ends_the_stream_and_the_processors_round() {
    let app = spawn_app().await;
    start(&app, "END-STOP", "").await;
    let (status, body) = app.post("/api/v1/orders/END-STOP/stop").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["is_stream_active"], json!(false));
    assert_eq!(
        details(&app, "END-STOP").await["is_stream_active"],
        json!(false)
    );
    assert_eq!(app.order("END-STOP").await["status"], json!("requested"));
    // The processor sees its stream dropped and abandons the round.
    let deadline = std::time::Instant::now() + PROMPTLY;
    while processor_record(&app, "END-STOP").await["state"] != json!("abandoned") {
        assert!(std::time::Instant::now() < deadline, "round abandoned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, processor) = app.get_json("/api/v1/processor/tracking/status").await;
    assert_eq!(processor["processing_streams"], json!(0));
    assert_eq!(
        request_stats(&app).await["stream_endings"]["stopped"],
        json!(1)
    );
}

#[tokio::test]
async fn cancelling_a_requested_order_ends_its_stream() {
    let app = spawn_app().await;
    start(&app, "END-CXL", "").await;
    let (status, body) = app.put_status("END-CXL", "cancelled").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_inactive(&app, "END-CXL").await;
    assert_eq!(
        request_stats(&app).await["stream_endings"]["order_closed"],
        json!(1)
    );
    let (status, body) = initiate(&app, "END-CXL", "").await;
    assert_error(status, &body, StatusCode::CONFLICT, "request_settled");
}

#[tokio::test]
async fn shutdown_ends_active_streams_and_marks_them_inactive() {
    let app = spawn_app().await;
    start(&app, "END-SHUT1", "").await;
    start(&app, "END-SHUT2", "").await;
    let requestor = app.requestor.clone();
    let ids = ["END-SHUT1".parse().unwrap(), "END-SHUT2".parse().unwrap()];
    assert!(ids.iter().all(|id| requestor.is_stream_active(id)));

    app.begin_shutdown();
    tokio::time::timeout(PROMPTLY, app.stopped())
        .await
        .expect("the server stops; stream tasks do not hold it")
        .unwrap();
    // HTTP is gone; the requestor itself says how its streams ended.
    assert!(ids.iter().all(|id| !requestor.is_stream_active(id)));
    let stats = requestor.stats();
    assert_eq!(stats.active_streams, 0);
    assert_eq!(stats.stream_endings.shutdown, 2);
}

#[tokio::test]
async fn several_requests_are_tracked_independently() {
    let app = spawn_app().await;
    let ((a, _), (b, _), (c, _)) = tokio::join!(
        initiate(&app, "MULTI-A", "?speed=100000"),
        initiate(&app, "MULTI-B", "?speed=100000&scenario=expire"),
        initiate(&app, "MULTI-C", ""),
    );
    assert!([a, b, c].iter().all(|s| *s == StatusCode::OK));
    let (status, _) = app
        .post_json(
            "/api/v1/orders/followup",
            &follow_up_body("MULTI-C", &["seller4"], "Ring twice"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    watch_until(&app, "MULTI-A", status_is("confirmed")).await;
    watch_until(&app, "MULTI-B", status_is("expired")).await;
    wait_inactive(&app, "MULTI-A").await;
    wait_inactive(&app, "MULTI-B").await;

    let (_, tracking) = app.get_json("/api/v1/orders/tracking/status").await;
    assert_eq!(tracking["total_orders"], json!(3));
    assert_eq!(tracking["active_streams"], json!(1));
    let mut ids: Vec<&str> = tracking["tracked_order_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["MULTI-A", "MULTI-B", "MULTI-C"]);
    for (id, active, notes) in [
        ("MULTI-A", false, 0),
        ("MULTI-B", false, 0),
        ("MULTI-C", true, 1),
    ] {
        let body = details(&app, id).await;
        assert_eq!(body["is_stream_active"], json!(active), "{id}: {body}");
        assert_eq!(body["notes_count"], json!(notes), "{id}: {body}");
        assert_eq!(body["session"], json!(format!("sess_{id}")));
    }
    for (id, state, proposals, notes) in [
        ("MULTI-A", "accepted", 3, 0),
        ("MULTI-B", "expired", 0, 0),
        ("MULTI-C", "processing", 0, 1),
    ] {
        let record = processor_record(&app, id).await;
        assert_eq!(record["state"], json!(state), "{id}: {record}");
        assert_eq!(
            record["proposal_dict_arr"].as_array().unwrap().len(),
            proposals
        );
        assert_eq!(record["notes_dict_arr"].as_array().unwrap().len(), notes);
    }
    assert_eq!(app.order("MULTI-C").await["status"], json!("requested"));
}

#[tokio::test]
async fn a_customer_long_poll_wakes_on_progress_and_on_confirmation() {
    let app = spawn_app().await;
    // At 60x: sellers at 2 s, proposals at 3, 4 and 5 s, decision at 6 s.
    start(&app, "WATCH1", "?speed=60").await;
    let (status, first) = app.track("WATCH1", "").await;
    assert_eq!(status, StatusCode::OK);
    let order = &first["data"];
    assert_eq!(order["status"], json!("requested"));
    assert_eq!(order["restaurant_name"], json!(""));
    assert_eq!(order["estimated_delivery"], Value::Null);
    assert_eq!(
        order["seller_search"],
        json!({"attempt": 1, "sellers_contacted": 0, "proposals_received": 0})
    );
    assert_eq!(first["next_poll_interval"], json!(30));

    // Parked before any progress; woken by the sellers being contacted.
    let poll = app.spawn_track("WATCH1", "?version=1&timeout=30");
    app.wait_parked(1).await;
    let (_, body, _) = poll.await.unwrap();
    assert_eq!(body["has_update"], json!(true));
    assert_eq!(body["data"]["seller_search"]["sellers_contacted"], json!(3));
    assert_eq!(body["data"]["status"], json!("requested"));
    assert_eq!(
        app.stats().await["long_polls"]["polls"]["woken_by_change"],
        json!(1)
    );

    // Every proposal is its own version.
    let mut version = body["data"]["version"].as_u64().unwrap();
    for received in 1..=3 {
        let (_, body) = app
            .track("WATCH1", &format!("?version={version}&timeout=30"))
            .await;
        assert_eq!(body["has_update"], json!(true));
        assert_eq!(
            body["data"]["seller_search"]["proposals_received"],
            json!(received)
        );
        version = body["data"]["version"].as_u64().unwrap();
    }

    // Parked after the last proposal; woken by the confirmation.
    let woken_before = app.stats().await["long_polls"]["polls"]["woken_by_change"]
        .as_u64()
        .unwrap();
    let poll = app.spawn_track("WATCH1", &format!("?version={version}&timeout=30"));
    app.wait_parked(1).await;
    let (_, body, _) = poll.await.unwrap();
    assert_eq!(body["has_update"], json!(true));
    let confirmed = &body["data"];
    assert_eq!(confirmed["status"], json!("confirmed"));
    assert_eq!(confirmed["version"], json!(version + 1));
    assert_eq!(body["next_poll_interval"], json!(120));
    let record = processor_record(&app, "WATCH1").await;
    let accepted = record["proposal_dict_arr"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["accepted"] == json!(true))
        .expect("one accepted")
        .clone();
    assert_eq!(confirmed["restaurant_name"], accepted["seller_name"]);
    assert_eq!(
        app.stats().await["long_polls"]["polls"]["woken_by_change"],
        json!(woken_before + 1)
    );

    // From here the normal lifecycle: a status change, then the simulator.
    let (status, body) = app.put_status("WATCH1", "preparing").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post("/api/v1/orders/WATCH1/simulate-workflow?speed=100000")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    watch_until(&app, "WATCH1", status_is("delivered")).await;
}

#[tokio::test]
async fn only_the_processor_confirms_or_expires_a_requested_order() {
    let app = spawn_app().await;
    start(&app, "PUTS1", "").await;
    for to in ["confirmed", "requested", "expired", "preparing"] {
        let (status, body) = app.put_status("PUTS1", to).await;
        assert_error(status, &body, StatusCode::CONFLICT, "invalid_transition");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .ends_with("allowed next statuses: cancelled"),
            "{to}: {body}"
        );
    }
    let (_, body) = app.put_status("PUTS1", "confirmed").await;
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("only the order-request processor moves it to confirmed"));
    // Not on ordinary orders either, not even as a no-op.
    for to in ["requested", "expired"] {
        let (status, body) = app.put_status("101", to).await;
        assert_error(status, &body, StatusCode::CONFLICT, "invalid_transition");
    }
    assert_eq!(app.version("PUTS1").await, 1, "nothing changed");
    assert_eq!(app.version("101").await, 1, "nothing changed");

    let (status, body) = app
        .post("/api/v1/orders/PUTS1/simulate-workflow?speed=100")
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "order_not_confirmed");
}

#[tokio::test]
async fn the_requested_poll_interval_is_configurable() {
    let app = spawn_app_with(|config| {
        config.poll_intervals = vec![("requested".parse().unwrap(), 5)];
    })
    .await;
    start(&app, "TUNED1", "").await;
    let (_, body) = app.track("TUNED1", "").await;
    assert_eq!(body["next_poll_interval"], json!(5));
    assert_eq!(body["battery_tip"], json!("Next poll in 5 seconds"));
}
