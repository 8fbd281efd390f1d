//! Shutdown answers every parked poll at once and the process exits promptly.

use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{json_of, spawn_app, PROMPTLY};

#[tokio::test]
async fn parked_polls_are_answered_with_the_current_state_on_shutdown() {
    let app = spawn_app().await;
    let polls: Vec<_> = ["101", "101", "102"]
        .iter()
        .map(|id| app.spawn_track(id, "?version=1&timeout=120"))
        .collect();
    let sim = app
        .client
        .post(app.url("/api/v1/orders/103/simulate-workflow"))
        .send()
        .await
        .unwrap();
    assert_eq!(sim.status(), StatusCode::ACCEPTED);
    app.wait_parked(3).await;

    let started = Instant::now();
    app.begin_shutdown();
    for poll in polls {
        let (status, body, _) = tokio::time::timeout(PROMPTLY, poll)
            .await
            .expect("answered")
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["has_update"], json!(false));
        assert!(body["data"]["status"].is_string());
    }
    tokio::time::timeout(PROMPTLY, app.stopped())
        .await
        .expect("the server stops")
        .unwrap();
    assert!(started.elapsed() < PROMPTLY);
}

/// Reads the JSON log lines of a child until the "listening" one, and returns
/// the address it names.
async fn listening_addr(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> String {
    while let Some(line) = lines.next_line().await.expect("stdout readable") {
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if event["message"] == json!("listening") {
            return event["addr"]
                .as_str()
                .expect("the address is logged")
                .to_owned();
        }
    }
    panic!("the server exited before listening");
}

#[tokio::test]
async fn the_binary_answers_parked_polls_and_exits_on_sigterm() {
    // The default store, in a file of its own: the default path would put
    // it in the working directory (the repository) and keep it across runs.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database_url = format!("sqlite:{}", dir.path().join("orders.db").display());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_order-tracker"))
        .args(["--addr", "127.0.0.1:0", "--log-format", "json"])
        .args(["--database-url", &database_url])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(PROMPTLY, listening_addr(&mut lines))
        .await
        .expect("it logs its address");
    // Keep draining the logs so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let client = reqwest::Client::new();
    let url = format!("http://{addr}/api/v1/orders/101/track?version=1&timeout=120");
    let poll = tokio::spawn(async move { json_of(client.get(url).send().await.unwrap()).await });
    let stats_url = format!("http://{addr}/api/v1/orders/system/stats");
    let deadline = Instant::now() + PROMPTLY;
    while reqwest::get(&stats_url)
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["data"]["long_polls"]["parked_now"]
        != json!(1)
    {
        assert!(Instant::now() < deadline, "the poll parks");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let (status, body) = tokio::time::timeout(PROMPTLY, poll)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["has_update"], json!(false));
    let exit = tokio::time::timeout(PROMPTLY, child.wait())
        .await
        .expect("exits within a few seconds")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}
