//! Several instances on one PostgreSQL database: a change made on one wakes
//! polls parked on the others, and nothing is lost when the notifications
//! break. Each instance is a full application on its own listener and pool.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{new_order, spawn_app_at, PgDatabase, TestApp};

/// Starts `n` instances on `db`, with safety sweeps every `sweep`.
async fn cluster(db: &PgDatabase, n: usize, sweep: Duration) -> Vec<TestApp> {
    let mut apps = Vec::new();
    for i in 0..n {
        apps.push(
            spawn_app_at(&db.url, |config| {
                config.no_sample_orders = true;
                config.instance_id = Some(format!("node-{i}"));
                config.sweep_interval = sweep;
            })
            .await,
        );
    }
    apps
}

/// A fresh database for `test` with `n` instances on it, or `None` (the
/// test is skipped, loudly) without PostgreSQL.
async fn pg_cluster(test: &str, n: usize, sweep: Duration) -> Option<(PgDatabase, Vec<TestApp>)> {
    let db = PgDatabase::create(test).await?;
    let apps = cluster(&db, n, sweep).await;
    Some((db, apps))
}

/// Terminates every backend of `db` that is listening for changes; returns
/// how many there were.
async fn kill_listeners(db: &PgDatabase) -> i64 {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM (
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()
         ) AS killed",
    )
    .bind(&db.name)
    .fetch_one(&mut admin)
    .await
    .unwrap()
}

/// Moves order `id` from version 1 (confirmed) to 2 (preparing) behind every
/// instance's back: as a writer whose notification was lost.
async fn move_unannounced(db: &PgDatabase, id: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let moved = sqlx::query(
        "UPDATE orders SET version = 2, status = 'preparing',
             data = jsonb_set(jsonb_set(data, '{version}', '2'), '{status}', '\"preparing\"')
         WHERE id = $1 AND version = 1",
    )
    .bind(id)
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(moved.rows_affected(), 1);
}

/// Waits (up to 20 s) until `app` runs `simulations` simulations and
/// `streams` processing streams, as its stats say; `what` names the wait.
async fn wait_running(app: &TestApp, simulations: u64, streams: u64, what: &str) {
    let settled = async {
        loop {
            let stats = app.stats().await;
            if stats["simulations_running"] == simulations
                && stats["order_requests"]["active_streams"] == streams
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), settled)
        .await
        .expect(what);
}

/// What a finished poll answered: its status, body and how long it took.
async fn answered(
    poll: tokio::task::JoinHandle<(StatusCode, Value, Duration)>,
) -> (StatusCode, Value, Duration) {
    tokio::time::timeout(Duration::from_secs(30), poll)
        .await
        .expect("the poll answers")
        .unwrap()
}

#[tokio::test]
async fn a_change_on_one_instance_wakes_polls_parked_on_the_others() {
    // Sweeps far apart: only the notifications can wake the polls in time.
    let Some((_db, apps)) = pg_cluster(
        "a_change_on_one_instance_wakes_polls_parked_on_the_others",
        3,
        Duration::from_secs(600),
    )
    .await
    else {
        return;
    };
    let (a, b, c) = (&apps[0], &apps[1], &apps[2]);
    assert_eq!(
        a.create_order(&new_order("x1")).await.0,
        StatusCode::CREATED
    );

    let on_b = b.spawn_track("x1", "?version=1&timeout=60");
    let on_c = c.spawn_track("x1", "?version=1&timeout=60");
    b.wait_parked(1).await;
    c.wait_parked(1).await;
    assert_eq!(a.put_status("x1", "preparing").await.0, StatusCode::OK);

    for poll in [on_b, on_c] {
        let (status, body, took) = answered(poll).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["has_update"], true);
        assert_eq!(body["data"]["version"], 2);
        assert_eq!(body["data"]["status"], "preparing");
        assert!(
            took < Duration::from_secs(20),
            "woken, not timed out: {took:?}"
        );
    }
    let stats = b.stats().await;
    assert_eq!(stats["instance_id"], "node-1");
    assert_eq!(stats["change_feed"]["shared_store"], true);
    assert!(stats["change_feed"]["versions_published"].as_u64() >= Some(1));
    let (status, health) = c.get_json("/api/v1/health").await;
    assert_eq!(
        (status, health["instance_id"].clone()),
        (StatusCode::OK, json!("node-2"))
    );
}

#[tokio::test]
async fn a_change_made_while_the_listeners_were_cut_off_still_arrives() {
    // No sweep in time: the catch-up after reconnecting must deliver it.
    let Some((db, apps)) = pg_cluster(
        "a_change_made_while_the_listeners_were_cut_off_still_arrives",
        3,
        Duration::from_secs(600),
    )
    .await
    else {
        return;
    };
    let (a, b) = (&apps[0], &apps[1]);
    a.create_order(&new_order("x1")).await;
    let on_b = b.spawn_track("x1", "?version=1&timeout=60");
    b.wait_parked(1).await;

    assert_eq!(kill_listeners(&db).await, 3, "one listener per instance");
    // At once, while B is still reopening its listener.
    assert_eq!(a.put_status("x1", "preparing").await.0, StatusCode::OK);

    let (status, body, _) = answered(on_b).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["version"], 2);
    // The listeners are back: the next change is announced again.
    let reconnected = async {
        loop {
            let stats = b.stats().await;
            if stats["change_feed"]["reconnects"].as_u64() >= Some(1)
                && b.get("/api/v1/ready").await.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), reconnected)
        .await
        .expect("B reopens its listener and is ready again");
    let on_b = b.spawn_track("x1", "?version=2&timeout=60");
    b.wait_parked(1).await;
    assert_eq!(a.put_status("x1", "ready").await.0, StatusCode::OK);
    let (_, body, took) = answered(on_b).await;
    assert_eq!(body["data"]["version"], 3);
    assert!(took < Duration::from_secs(20), "woken: {took:?}");
}

#[tokio::test]
async fn the_safety_sweep_delivers_a_change_whose_notification_was_lost() {
    let Some((db, apps)) = pg_cluster(
        "the_safety_sweep_delivers_a_change_whose_notification_was_lost",
        1,
        Duration::from_secs(1),
    )
    .await
    else {
        return;
    };
    let b = &apps[0];
    b.create_order(&new_order("x1")).await;
    let on_b = b.spawn_track("x1", "?version=1&timeout=60");
    b.wait_parked(1).await;
    // Another writer whose notification never arrives: the row moves, and
    // nobody says so.
    move_unannounced(&db, "x1").await;
    let (status, body, took) = answered(on_b).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["version"], 2);
    assert_eq!(body["data"]["status"], "preparing");
    assert!(took < Duration::from_secs(20), "found by a sweep: {took:?}");
}

#[tokio::test]
async fn a_cursor_from_another_instance_never_goes_backwards() {
    let Some((_db, apps)) = pg_cluster(
        "a_cursor_from_another_instance_never_goes_backwards",
        2,
        Duration::from_secs(600),
    )
    .await
    else {
        return;
    };
    let (a, b) = (&apps[0], &apps[1]);
    a.create_order(&new_order("x1")).await;
    // B caches version 1 now.
    assert_eq!(b.version("x1").await, 1);
    for status in ["preparing", "ready"] {
        assert_eq!(a.put_status("x1", status).await.0, StatusCode::OK);
    }
    // The phone learnt version 3 from A and now asks B, however far B's
    // cache is behind: it parks on 3 (nothing newer), never answers 1 or 2.
    let (status, body) = b.track("x1", "?version=3&timeout=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["has_update"], false);
    assert_eq!(body["data"]["version"], 3);
    // If-Match with the version learnt from A holds on B too.
    let (status, _) = b
        .put_status_with(
            "x1",
            &json!({"status": "picked_up"}),
            &[("If-Match", "\"3\"")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(a.version("x1").await, 4);
}

#[tokio::test]
async fn an_instance_whose_database_is_gone_stops_being_ready() {
    let Some((db, apps)) = pg_cluster(
        "an_instance_whose_database_is_gone_stops_being_ready",
        1,
        Duration::from_secs(1),
    )
    .await
    else {
        return;
    };
    let app = &apps[0];
    let (status, body) = app.get_json("/api/v1/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["backend"], "postgres");
    app.create_order(&new_order("x1")).await;
    let parked = app.spawn_track("x1", "?version=1&timeout=5");
    app.wait_parked(1).await;

    db.admin(&format!("DROP DATABASE {} WITH (FORCE)", db.name))
        .await;
    let not_ready = async {
        loop {
            let (status, body) = app.get_json("/api/v1/ready").await;
            if status == StatusCode::SERVICE_UNAVAILABLE {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let body = tokio::time::timeout(Duration::from_secs(20), not_ready)
        .await
        .expect("readiness fails once the database is gone");
    assert_eq!(body["error"], "not_ready");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("node-0 is not ready")),
        "{body}"
    );
    // A change cannot be acknowledged: 503, retryable, nothing claimed.
    let (status, body) = app.put_status("x1", "preparing").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "storage_unavailable");
    // The parked poll keeps what it knew: at its timeout it answers the
    // state it holds, not an error and not something invented.
    let (status, body, _) = answered(parked).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["has_update"].clone(), body["data"]["version"].clone()),
        (json!(false), json!(1))
    );
}

/// `POST` `path` with `body` on `addr`: the status and the JSON answer.
async fn post_at(addr: std::net::SocketAddr, path: &str, body: &Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn work_that_must_run_once_runs_on_one_instance_and_moves_when_its_owner_dies() {
    let Some(db) = PgDatabase::create(
        "work_that_must_run_once_runs_on_one_instance_and_moves_when_its_owner_dies",
    )
    .await
    else {
        return;
    };
    let lease = ["--lease-ttl", "2", "--instance-id", "node-a"];
    let a = crate::crash::Server::start_with(&db.url, &lease).await;
    let b = spawn_app_at(&db.url, |config| {
        config.no_sample_orders = true;
        config.instance_id = Some("node-b".into());
        config.lease_ttl = Duration::from_secs(2);
    })
    .await;
    let initiate =
        json!({"order_req_id": "LEASE1", "session_id": "s1", "notification_type": "sms"});
    let (status, first) = post_at(a.addr, "/api/v1/orders/initiate", &initiate).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["message"], "Order initiated successfully");
    // A duplicate is refused alike by the owner and by another instance.
    let (_, on_a) = post_at(a.addr, "/api/v1/orders/initiate", &initiate).await;
    let (status, on_b) = post_at(b.addr, "/api/v1/orders/initiate", &initiate).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(on_a["message"], "Order already being processed");
    assert_eq!(on_b, on_a);

    // The same for a simulation (at real time: it outlives the test).
    let (status, _) = post_at(a.addr, "/api/v1/orders", &new_order("SIM1")).await;
    assert_eq!(status, StatusCode::CREATED);
    let simulate = "/api/v1/orders/SIM1/simulate-workflow?speed=1";
    let (status, body) = post_at(a.addr, simulate, &Value::Null).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status_a, again_a) = post_at(a.addr, simulate, &Value::Null).await;
    let (status_b, again_b) = post_at(b.addr, simulate, &Value::Null).await;
    assert_eq!(
        (status_a, status_b),
        (StatusCode::CONFLICT, StatusCode::CONFLICT)
    );
    assert_eq!(again_a, again_b);
    assert_eq!(b.stats().await["simulations_running"], 0, "B runs nothing");

    // The owner dies; once its lease has expired, B takes both over.
    a.kill().await;
    wait_running(&b, 1, 1, "B takes the stream and the simulation over").await;
    let (_, history) = b.history("LEASE1", "").await;
    let last = history["data"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "search_restarted", "{history}");
    assert_eq!(last["metadata"]["reason"], "lease_expired");
    assert_eq!(last["metadata"]["previous_owner"], "node-a");
    // And B is now the one that refuses duplicates.
    let (_, on_b) = post_at(b.addr, "/api/v1/orders/initiate", &initiate).await;
    assert_eq!(on_b["message"], "Order already being processed");
}

#[tokio::test]
async fn work_running_on_one_instance_is_stopped_from_another() {
    let Some(db) = PgDatabase::create("work_running_on_one_instance_is_stopped_from_another").await
    else {
        return;
    };
    let mut apps = Vec::new();
    for name in ["node-a", "node-b"] {
        apps.push(
            spawn_app_at(&db.url, |config| {
                config.no_sample_orders = true;
                config.instance_id = Some(name.into());
                config.lease_ttl = Duration::from_millis(1500);
            })
            .await,
        );
    }
    let (a, b) = (&apps[0], &apps[1]);
    a.create_order(&new_order("SIM1")).await;
    let (status, _) = a
        .post("/api/v1/orders/SIM1/simulate-workflow?speed=1")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = a
        .post_json(
            "/api/v1/orders/initiate",
            &json!({"order_req_id": "REQ1", "session_id": "s1", "notification_type": "sms"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(a.stats().await["simulations_running"], 1);

    // Both are stopped through B, which runs neither.
    let url = b.url("/api/v1/orders/SIM1/simulate-workflow");
    let response = b.client.delete(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, body) = b.post("/api/v1/orders/REQ1/stop").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_running(a, 0, 0, "A stops both at its next heartbeat").await;
    // Nobody takes them over: they were stopped, not orphaned.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for app in [a, b] {
        let stats = app.stats().await;
        assert_eq!(stats["simulations_running"], 0);
        assert_eq!(stats["order_requests"]["active_streams"], 0);
    }
    // A second stop finds nothing running anywhere.
    let url = b.url("/api/v1/orders/SIM1/simulate-workflow");
    let response = b.client.delete(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_rolling_restart_loses_no_update() {
    let Some((_db, mut apps)) = pg_cluster(
        "a_rolling_restart_loses_no_update",
        3,
        Duration::from_secs(600),
    )
    .await
    else {
        return;
    };
    let c = apps.pop().unwrap();
    let b = apps.pop().unwrap();
    let a = apps.pop().unwrap();
    a.create_order(&new_order("x1")).await;
    let on_a = a.spawn_track("x1", "?version=1&timeout=60");
    a.wait_parked(1).await;
    // SIGTERM on A: its parked poll answers at once with the current state.
    a.begin_shutdown();
    let (status, body, took) = answered(on_a).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["has_update"].clone(), body["data"]["version"].clone()),
        (json!(false), json!(1))
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    a.stopped().await.unwrap();
    // The phone reconnects to B with its cursor; a change made on C wakes it.
    let on_b = b.spawn_track("x1", "?version=1&timeout=60");
    b.wait_parked(1).await;
    assert_eq!(c.put_status("x1", "preparing").await.0, StatusCode::OK);
    let (_, body, _) = answered(on_b).await;
    assert_eq!(body["data"]["version"], 2);
}

#[tokio::test]
async fn a_change_is_judged_against_the_database_not_a_stale_copy() {
    let Some((db, apps)) = pg_cluster(
        "a_change_is_judged_against_the_database_not_a_stale_copy",
        1,
        Duration::from_secs(600),
    )
    .await
    else {
        return;
    };
    let b = &apps[0];
    b.create_order(&new_order("x1")).await;
    // B's copy says confirmed; the database says preparing.
    move_unannounced(&db, "x1").await;
    // confirmed -> ready is illegal, preparing -> ready is not.
    let (status, body) = b.put_status("x1", "ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["version"], 3);
    // And a no-op is judged against the database too: not "already
    // confirmed" from the stale copy.
    move_unannounced_again(&db).await;
    let (status, body) = b.put_status("x1", "picked_up").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["version"], 4, "{body}");
}

/// Moves x1 from version 3 (ready) to 4 (picked_up) unannounced.
async fn move_unannounced_again(db: &PgDatabase) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query(
        "UPDATE orders SET version = 4, status = 'picked_up',
             data = jsonb_set(jsonb_set(data, '{version}', '4'), '{status}', '\"picked_up\"')
         WHERE id = 'x1' AND version = 3",
    )
    .execute(&mut conn)
    .await
    .unwrap();
}

#[tokio::test]
async fn an_order_request_is_followed_through_any_instance() {
    let Some((db, apps)) = pg_cluster(
        "an_order_request_is_followed_through_any_instance",
        2,
        Duration::from_secs(600),
    )
    .await
    else {
        return;
    };
    let (a, b) = (&apps[0], &apps[1]);
    let (status, _) = a
        .post_json(
            "/api/v1/orders/initiate",
            &json!({"order_req_id": "REQ1", "session_id": "s1", "notification_type": "sms"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // B, which runs nothing, tells the truth about it.
    let (_, tracking) = b.get_json("/api/v1/orders/tracking/status").await;
    assert_eq!(
        tracking,
        json!({"total_orders": 1, "active_streams": 1, "tracked_order_ids": ["REQ1"]})
    );
    let (status, details) = b.get_json("/api/v1/orders/tracking/REQ1").await;
    assert_eq!(status, StatusCode::OK, "{details}");
    assert_eq!(details["is_stream_active"], true);
    // A follow-up through B, then one through A: both kept, numbered in turn.
    for (app, expected) in [(b, "FU001"), (a, "FU002")] {
        let (status, body) = app
            .post_json(
                "/api/v1/orders/followup",
                &json!({"order_req_id": "REQ1", "audience": ["seller1"],
                        "message": {"urls": [], "message_type": "text", "message": expected}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["follow_up_id"], expected);
    }
    for app in [a, b] {
        let (_, details) = app.get_json("/api/v1/orders/tracking/REQ1").await;
        assert_eq!(details["notes_count"], 2, "{details}");
        let (_, processor) = app.get_json("/api/v1/processor/tracking/REQ1").await;
        let ids: Vec<&Value> = processor["notes_dict_arr"]
            .as_array()
            .unwrap()
            .iter()
            .map(|note| &note["follow_up_id"])
            .collect();
        assert_eq!(ids, [&json!("FU001"), &json!("FU002")], "{processor}");
    }
    // An instance that starts now leaves A's round alone: it is not a
    // leftover of a crash.
    let c = spawn_app_at(&db.url, |config| config.no_sample_orders = true).await;
    let (_, processor) = c.get_json("/api/v1/processor/tracking/REQ1").await;
    assert_eq!(processor["state"], "processing", "{processor}");
}

#[tokio::test]
async fn a_store_tablet_on_one_instance_wakes_for_an_order_created_on_another() {
    let Some((_db, apps)) = pg_cluster("store_feed_cluster", 2, Duration::from_secs(60)).await
    else {
        return;
    };
    let (_, first) = apps[0].get_json("/tracking/store/s-9/orders").await;
    let cursor = first["cursor"].as_u64().unwrap();
    let client = apps[0].client.clone();
    let url = apps[0].url(&format!(
        "/tracking/store/s-9/orders?after={cursor}&timeout=60"
    ));
    let parked = tokio::spawn(async move {
        crate::helpers::json_of(client.get(url).send().await.unwrap()).await
    });
    apps[0].wait_parked(1).await;
    let (status, _) = apps[1]
        .post_json(
            "/tracking/orders/x-1/init",
            &json!({"store_id": "s-9", "customer_id": "c", "delivery_provider": "doordash"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // The sweep is a minute away: only the notification can wake it.
    let (status, woken) = tokio::time::timeout(Duration::from_secs(10), parked)
        .await
        .expect("the tablet on the other instance wakes")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(woken["orders"][0]["id"], json!("x-1"));
    assert_eq!(
        woken["orders"][0]["tracking_status"],
        json!("store_notified")
    );
}
