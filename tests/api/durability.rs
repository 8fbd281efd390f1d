//! What survives a restart, and cursors that stay honest across one.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{new_order, spawn_app_at, sqlite_url, PROMPTLY};

#[tokio::test]
async fn orders_versions_and_history_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let app = spawn_app_at(&url, |_| {}).await;
    app.create_order(&new_order("d1")).await;
    app.put_status("d1", "preparing").await;
    let before = app.order("d1").await;
    let (_, history_before) = app.history("d1", "").await;
    app.begin_shutdown();
    app.stopped().await.unwrap();

    let app = spawn_app_at(&url, |_| {}).await;
    assert_eq!(app.order("d1").await, before);
    assert_eq!(app.history("d1", "").await.1, history_before);
    // Versions go on from where they were, never starting again at 1.
    let (_, body) = app.put_status("d1", "ready").await;
    assert_eq!(body["data"]["version"], json!(3));
    // The sample orders were not created a second time.
    assert_eq!(app.stats().await["orders_total"], json!(4));
}

#[tokio::test]
async fn cursors_mean_after_a_restart_what_they_meant_before() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let app = spawn_app_at(&url, |_| {}).await;
    app.put_status("101", "preparing").await; // version 2
    app.begin_shutdown();
    app.stopped().await.unwrap();

    let app = spawn_app_at(&url, |_| {}).await;
    // The phone's ETag is still current: it waits, and hears "not modified".
    let response = app
        .client
        .get(app.url("/api/v1/orders/101/track?timeout=1"))
        .header("If-None-Match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    // A phone one version behind is answered at once with the change.
    let (status, body) = app.track("101", "?version=1&timeout=30").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["has_update"], json!(true));
    assert_eq!(body["data"]["version"], json!(2));
    // A current cursor parks until the next change, which wakes it.
    let parked = app.spawn_track("101", "?version=2&timeout=30");
    app.wait_parked(1).await;
    app.put_status("101", "ready").await;
    let (status, body, _) = tokio::time::timeout(PROMPTLY, parked)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["version"], json!(3));
}

#[tokio::test]
async fn a_cursor_ahead_of_the_store_is_answered_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_at(&sqlite_url(&dir), |_| {}).await;
    // Version 9 never existed here (say, the database was restored from a
    // backup): the phone is told the stored state rather than left waiting.
    let (status, body) = app.track("101", "?version=9&timeout=30").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["has_update"], json!(true));
    assert_eq!(body["data"]["version"], json!(1));
    let response = app
        .client
        .get(app.url("/api/v1/orders/101/track?timeout=30"))
        .header("If-None-Match", "\"9\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_cursor_ahead_of_the_cache_is_checked_against_the_store() {
    // Two servers on one SQLite file: a change made through A is in the
    // store but not in B's cache. A phone that saw it (through A) and then
    // polls B must wait for the next change, not be told about an old one.
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let a = spawn_app_at(&url, |_| {}).await;
    let b = spawn_app_at(&url, |_| {}).await;
    assert_eq!(b.version("101").await, 1); // cached by B at version 1
    let (_, body) = a.put_status("101", "preparing").await;
    assert_eq!(body["data"]["version"], json!(2));

    let started = std::time::Instant::now();
    let (status, body) = b.track("101", "?version=2&timeout=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["has_update"], json!(false), "{body}");
    assert_eq!(body["data"]["version"], json!(2));
    assert!(started.elapsed() >= Duration::from_millis(800), "it waited");
    // B's cache caught up from the store.
    assert_eq!(b.version("101").await, 2);
}
