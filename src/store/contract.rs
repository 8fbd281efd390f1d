//! One contract, three stores: every test here runs against the in-memory
//! store, a SQLite file in a temporary directory, and a fresh PostgreSQL
//! database (when `TEST_DATABASE_URL` names a server; otherwise that run
//! says loudly that it was skipped).

use std::future::Future;
use std::sync::Arc;

use sqlx::{Connection, Executor, PgConnection};

use super::*;
use crate::domain::{Attribution, EventKind, Fix, NewOrder, OrderChange};

/// A store for one test, and what must outlive it.
struct Fixture {
    store: Arc<dyn OrderStore>,
    /// The SQLite file's directory, removed on drop.
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL database to drop afterwards: (server URL, name).
    pg: Option<(String, String)>,
    /// How to open the same database again, to check durability.
    url: String,
}

impl Fixture {
    async fn reopen(&self) -> Arc<dyn OrderStore> {
        open(&self.url, 2).await.expect("the store reopens")
    }

    async fn finish(self) {
        drop(self.store);
        if let Some((server, name)) = self.pg {
            let mut admin = PgConnection::connect(&server).await.unwrap();
            admin
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await
                .unwrap();
        }
    }
}

async fn memory() -> Option<Fixture> {
    Some(Fixture {
        store: Arc::new(MemoryStore::new()),
        _dir: None,
        pg: None,
        url: "memory:".into(),
    })
}

async fn sqlite() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("orders.db").display());
    Some(Fixture {
        store: open(&url, 2).await.unwrap(),
        _dir: Some(dir),
        pg: None,
        url,
    })
}

async fn postgres() -> Option<Fixture> {
    let Ok(server) = std::env::var("TEST_DATABASE_URL") else {
        // Straight to stderr, past the test harness's output capture, so the
        // skip is seen even when the test passes.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"SKIPPED: PostgreSQL contract test (set TEST_DATABASE_URL to run it)\n",
        );
        return None;
    };
    let name = format!("ot_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&server).await.unwrap();
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let url = with_database(&server, &name);
    Some(Fixture {
        store: open(&url, 2).await.unwrap(),
        _dir: None,
        pg: Some((server, name)),
        url,
    })
}

/// `server` (a `postgres://` URL) with its database replaced by `name`.
fn with_database(server: &str, name: &str) -> String {
    let (base, query) = server.split_once('?').unwrap_or((server, ""));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    }
}

async fn run<F, Fut>(fixture: Option<Fixture>, test: F)
where
    F: FnOnce(Arc<dyn OrderStore>, Fixture) -> Fut,
    Fut: Future<Output = Fixture>,
{
    if let Some(fixture) = fixture {
        let store = Arc::clone(&fixture.store);
        test(store, fixture).await.finish().await;
    }
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(#[tokio::test] async fn $name() { super::run(super::memory().await, super::$name).await })*
        }
        mod sqlite_store {
            $(#[tokio::test] async fn $name() { super::run(super::sqlite().await, super::$name).await })*
        }
        mod postgres_store {
            $(#[tokio::test] async fn $name() { super::run(super::postgres().await, super::$name).await })*
        }
    };
}

contract!(
    creates_reads_and_refuses_a_taken_id,
    updates_only_from_the_expected_version,
    a_batch_chains_changes_and_isolates_failures,
    idempotency_keys_are_stored_with_their_change,
    history_pages_in_version_order,
    everything_survives_reopening,
    background_runs_are_recorded_until_they_end,
    request_records_are_replaced_and_keep_their_place,
    whole_answers_are_stored_alone_or_with_a_request_record,
    a_stores_feed_numbers_its_orders_changes_in_commit_order,
    an_order_is_found_by_its_partners_delivery_id,
    driver_locations_keep_the_newest_fix_and_survive_reopening,
    driver_locations_are_announced_to_listeners,
);

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn new_order(id: &str) -> Order {
    let input = serde_json::json!({
        "id": id,
        "customer_id": "c1",
        "restaurant_name": "Luigi's",
        "delivery_address": "1 Main St",
        "items": [{"name": "Pizza", "quantity": 1, "unit_price": 9.5}]
    });
    let draft = NewOrder::parse(serde_json::from_value(input).unwrap()).unwrap();
    Order::create(id.parse().unwrap(), draft, t("2025-01-12T20:30:00Z"))
}

fn create(order: &Order) -> Commit {
    Commit {
        snapshot: Arc::new(OrderSnapshot::new(order.clone())),
        expected: None,
        event: Event::for_order(order, EventKind::Created, Attribution::default(), None),
        idempotency: None,
    }
}

/// `order` moved to `status`, as a commit expecting its current version.
fn change(order: &Order, status: OrderStatus, by: &str) -> (Order, Commit) {
    let next = order
        .apply(&OrderChange::SetStatus(status), order.updated_at)
        .unwrap()
        .unwrap();
    let commit = Commit {
        snapshot: Arc::new(OrderSnapshot::new(next.clone())),
        expected: Some(order.version),
        event: Event::for_order(&next, EventKind::StatusChanged, Attribution::by(by), None),
        idempotency: None,
    };
    (next, commit)
}

fn keyed(mut commit: Commit, key: &str, created_at: Timestamp) -> Commit {
    let order = commit.order().clone();
    commit.event.idempotency_key = Some(key.into());
    commit.idempotency = Some(IdempotencyRecord {
        scope: format!("PUT /api/v1/orders/{}/status", order.id),
        key: key.into(),
        fingerprint: "f1".into(),
        answer: StoredAnswer::Order {
            order_id: order.id.clone(),
            version: order.version,
            json: commit.snapshot.json().get().to_owned(),
        },
        created_at,
    });
    commit
}

async fn creates_reads_and_refuses_a_taken_id(store: Arc<dyn OrderStore>, f: Fixture) -> Fixture {
    let order = new_order("o1");
    assert_eq!(store.get(&order.id).await.unwrap(), None);
    assert!(!store.exists(&order.id).await.unwrap());
    assert_eq!(
        store.commit(&[create(&order)]).await.unwrap(),
        [CommitOutcome::Committed]
    );
    assert_eq!(store.get(&order.id).await.unwrap().as_ref(), Some(&order));
    assert!(store.exists(&order.id).await.unwrap());
    let mut other = order.clone();
    other.delivery_address = "elsewhere".into();
    assert_eq!(
        store.commit(&[create(&other)]).await.unwrap(),
        [CommitOutcome::Exists]
    );
    assert_eq!(store.get(&order.id).await.unwrap(), Some(order.clone()));
    assert_eq!(
        store
            .history(&order.id, Version(0), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.count_by_status().await.unwrap(),
        BTreeMap::from([(OrderStatus::Confirmed, 1)])
    );
    f
}

async fn updates_only_from_the_expected_version(store: Arc<dyn OrderStore>, f: Fixture) -> Fixture {
    let v1 = new_order("o1");
    store.commit(&[create(&v1)]).await.unwrap();
    let (v2, to_preparing) = change(&v1, OrderStatus::Preparing, "kitchen");
    assert_eq!(
        store
            .commit(std::slice::from_ref(&to_preparing))
            .await
            .unwrap(),
        [CommitOutcome::Committed]
    );
    // The same change again expects version 1, which is gone.
    assert_eq!(
        store.commit(&[to_preparing]).await.unwrap(),
        [CommitOutcome::Conflict]
    );
    // So does a change to an order that does not exist.
    let (_, ghost) = change(&new_order("ghost"), OrderStatus::Preparing, "x");
    assert_eq!(
        store.commit(&[ghost]).await.unwrap(),
        [CommitOutcome::Conflict]
    );
    assert_eq!(store.get(&v1.id).await.unwrap(), Some(v2));
    let history = store.history(&v1.id, Version(0), 10).await.unwrap();
    assert_eq!(
        history.iter().map(|e| e.version.0).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(history[1].kind, EventKind::StatusChanged);
    assert_eq!(history[1].status, OrderStatus::Preparing);
    assert_eq!(
        history[1].tracking_status,
        Some(crate::domain::TrackingStatus::PickingInProgress),
        "the fine status is kept with the event"
    );
    assert_eq!(
        history[1].attribution.updated_by.as_deref(),
        Some("kitchen")
    );
    f
}

async fn a_batch_chains_changes_and_isolates_failures(
    store: Arc<dyn OrderStore>,
    f: Fixture,
) -> Fixture {
    let a1 = new_order("a");
    let (a2, a_prep) = change(&a1, OrderStatus::Preparing, "k");
    let (a3, a_ready) = change(&a2, OrderStatus::Ready, "k");
    let b1 = new_order("b");
    assert_eq!(
        store
            .commit(&[create(&a1), a_prep, a_ready, create(&b1)])
            .await
            .unwrap(),
        [CommitOutcome::Committed; 4]
    );
    assert_eq!(store.get(&a1.id).await.unwrap(), Some(a3.clone()));

    // b's first change conflicts, so its second (computed from the first)
    // must fail too, while a's change in the same batch commits.
    let (b2, b_stale) = change(&a1, OrderStatus::Preparing, "k");
    let mut b_stale = b_stale;
    let mut stale_order = b2.clone();
    stale_order.id = b1.id.clone();
    stale_order.version = Version(5);
    b_stale.snapshot = Arc::new(OrderSnapshot::new(stale_order.clone()));
    b_stale.expected = Some(Version(4));
    b_stale.event.order_id = b1.id.clone();
    let (_, b_after) = change(&stale_order, OrderStatus::Ready, "k");
    let (a4, a_pick) = change(&a3, OrderStatus::PickedUp, "driver");
    assert_eq!(
        store.commit(&[b_stale, a_pick, b_after]).await.unwrap(),
        [
            CommitOutcome::Conflict,
            CommitOutcome::Committed,
            CommitOutcome::Conflict
        ]
    );
    assert_eq!(store.get(&b1.id).await.unwrap(), Some(b1.clone()));
    assert_eq!(store.get(&a1.id).await.unwrap(), Some(a4));
    assert_eq!(
        store.history(&b1.id, Version(0), 10).await.unwrap().len(),
        1
    );

    // A create of a taken id poisons later changes of that id too.
    let (_, after_dup) = change(&b1, OrderStatus::Preparing, "k");
    assert_eq!(
        store.commit(&[create(&b1), after_dup]).await.unwrap(),
        [CommitOutcome::Exists, CommitOutcome::Conflict]
    );
    assert_eq!(store.get(&b1.id).await.unwrap(), Some(b1));
    f
}

async fn idempotency_keys_are_stored_with_their_change(
    store: Arc<dyn OrderStore>,
    f: Fixture,
) -> Fixture {
    let now = t("2025-01-12T20:31:00Z");
    let v1 = new_order("o1");
    store.commit(&[create(&v1)]).await.unwrap();
    let (v2, first) = change(&v1, OrderStatus::Preparing, "k");
    let first = keyed(first, "key-1", now);
    let record = first.idempotency.clone().unwrap();
    assert_eq!(
        store.commit(&[first]).await.unwrap(),
        [CommitOutcome::Committed]
    );
    let since = now.plus(-idempotency_ttl(""));
    assert_eq!(
        store
            .idempotency(&record.scope, "key-1", since)
            .await
            .unwrap(),
        Some(record.clone())
    );
    assert_eq!(
        store
            .idempotency(&record.scope, "key-2", since)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .idempotency("POST /elsewhere", "key-1", since)
            .await
            .unwrap(),
        None,
        "keys are scoped"
    );
    let history = store.history(&v1.id, Version(1), 10).await.unwrap();
    assert_eq!(history[0].idempotency_key.as_deref(), Some("key-1"));

    // Reusing the key changes nothing; a change of the same order computed
    // after it fails too, while other orders in the batch commit.
    let (v3, second) = change(&v2, OrderStatus::Ready, "k");
    let second = keyed(second, "key-1", now);
    let (_, after) = change(&v3, OrderStatus::PickedUp, "k");
    let c1 = new_order("c");
    let (c2, other) = change(&c1, OrderStatus::Cancelled, "k");
    let mut other = keyed(other, "key-1", now);
    other.idempotency.as_mut().unwrap().scope = "PUT other".into();
    assert_eq!(
        store
            .commit(&[create(&c1), second, after, other])
            .await
            .unwrap(),
        [
            CommitOutcome::Committed,
            CommitOutcome::KeyTaken,
            CommitOutcome::Conflict,
            CommitOutcome::Committed
        ]
    );
    assert_eq!(store.get(&v1.id).await.unwrap(), Some(v2.clone()));
    assert_eq!(store.get(&c1.id).await.unwrap(), Some(c2));

    // A conflict undoes the key it would have stored.
    let (_, stale) = change(&v1, OrderStatus::Cancelled, "k");
    let stale = keyed(stale, "key-4", now);
    assert_eq!(
        store.commit(&[stale]).await.unwrap(),
        [CommitOutcome::Conflict]
    );
    assert_eq!(
        store
            .idempotency(&record.scope, "key-4", since)
            .await
            .unwrap(),
        None
    );

    // After 24 hours the key is forgotten and may be used again.
    let tomorrow = now.plus(idempotency_ttl("") + chrono::TimeDelta::seconds(1));
    let since_tomorrow = tomorrow.plus(-idempotency_ttl(""));
    assert_eq!(
        store
            .idempotency(&record.scope, "key-1", since_tomorrow)
            .await
            .unwrap(),
        None
    );
    let b1 = new_order("b");
    store.commit(&[create(&b1)]).await.unwrap();
    let (_, reuse) = change(&b1, OrderStatus::Preparing, "k");
    let mut reuse = keyed(reuse, "key-1", tomorrow);
    reuse.idempotency.as_mut().unwrap().scope = record.scope.clone();
    assert_eq!(
        store.commit(&[reuse]).await.unwrap(),
        [CommitOutcome::Committed]
    );
    let stored = store
        .idempotency(&record.scope, "key-1", since_tomorrow)
        .await
        .unwrap()
        .map(|r| r.answer);
    assert!(
        matches!(&stored, Some(StoredAnswer::Order { order_id, version: Version(2), .. }) if *order_id == b1.id),
        "{stored:?}"
    );
    // Purging removes what has expired, and only that: a partner's event
    // id outlives a day.
    let webhook = IdempotencyRecord {
        scope: format!("{WEBHOOK_SCOPE_PREFIX}uber"),
        key: "evt-1".into(),
        fingerprint: "f".into(),
        answer: StoredAnswer::Response {
            status: 200,
            body: b"{}".to_vec(),
        },
        created_at: record.created_at,
    };
    assert!(store.save_idempotency(&webhook).await.unwrap());
    let tomorrow = since_tomorrow.plus(idempotency_ttl(""));
    assert_eq!(store.purge_idempotency(tomorrow).await.unwrap(), 1);
    assert_eq!(store.purge_idempotency(tomorrow).await.unwrap(), 0);
    let kept = store
        .idempotency(&webhook.scope, "evt-1", webhook.created_at)
        .await
        .unwrap();
    assert_eq!(
        kept,
        Some(webhook.clone()),
        "a partner's event outlives a day"
    );
    // A week on, it goes too (with the key reused the day after).
    let next_week = record
        .created_at
        .plus(chrono::TimeDelta::days(WEBHOOK_EVENT_TTL_DAYS + 1));
    assert_eq!(store.purge_idempotency(next_week).await.unwrap(), 2);
    f
}

async fn history_pages_in_version_order(store: Arc<dyn OrderStore>, f: Fixture) -> Fixture {
    let mut order = new_order("o1");
    store.commit(&[create(&order)]).await.unwrap();
    for status in [
        OrderStatus::Preparing,
        OrderStatus::Ready,
        OrderStatus::PickedUp,
        OrderStatus::Delivered,
    ] {
        let (next, mut commit) = change(&order, status, "someone");
        let mut metadata = serde_json::Map::new();
        metadata.insert("step".into(), serde_json::json!(status.as_str()));
        commit.event.attribution.notes = Some(format!("now {status}"));
        commit.event.attribution.metadata = Some(metadata);
        store.commit(&[commit]).await.unwrap();
        order = next;
    }
    let page = store.history(&order.id, Version(1), 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.version.0).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(page[0].attribution.notes.as_deref(), Some("now preparing"));
    assert_eq!(
        page[1].attribution.metadata.as_ref().unwrap()["step"],
        serde_json::json!("ready")
    );
    assert_eq!(page[1].at, order_at(&store, &order.id, 3).await);
    let rest = store.history(&order.id, Version(3), 100).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.version.0).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(rest[1].status, OrderStatus::Delivered);
    assert!(store
        .history(&order.id, Version(5), 100)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .history(&"nobody".parse().unwrap(), Version(0), 100)
        .await
        .unwrap()
        .is_empty());
    f
}

/// The time of the order's event at `version`.
async fn order_at(store: &Arc<dyn OrderStore>, id: &OrderId, version: u64) -> Timestamp {
    store.history(id, Version(version - 1), 1).await.unwrap()[0].at
}

async fn everything_survives_reopening(store: Arc<dyn OrderStore>, f: Fixture) -> Fixture {
    if store.backend() == "memory" {
        return f; // keeps nothing, by design
    }
    let v1 = new_order("o1");
    let (v2, commit) = change(&v1, OrderStatus::Preparing, "k");
    let commit = keyed(commit, "k1", t("2025-01-12T20:31:00Z"));
    store.commit(&[create(&v1), commit]).await.unwrap();
    let again = f.reopen().await;
    assert_eq!(again.get(&v1.id).await.unwrap(), Some(v2));
    assert_eq!(
        again.history(&v1.id, Version(0), 10).await.unwrap().len(),
        2
    );
    assert!(again
        .idempotency(
            &format!("PUT /api/v1/orders/{}/status", v1.id),
            "k1",
            t("2025-01-12T00:00:00Z")
        )
        .await
        .unwrap()
        .is_some());
    f
}

async fn background_runs_are_recorded_until_they_end(
    store: Arc<dyn OrderStore>,
    f: Fixture,
) -> Fixture {
    let now = t("2025-01-12T20:31:00Z");
    let run = |id: &str, speed: f64, owner: &str, until: &str| BackgroundRun {
        kind: "simulation".into(),
        order_id: id.parse().unwrap(),
        params: serde_json::json!({ "speed": speed }),
        started_at: now,
        owner: owner.into(),
        lease_until: t(until),
    };
    let lease = "2025-01-12T20:31:15Z";
    let claimed = |previous| RunClaim::Claimed { previous };
    assert!(store.runs("simulation").await.unwrap().is_empty());
    let b = run("b", 60.0, "node-a", lease);
    assert_eq!(store.claim_run(&b, now).await.unwrap(), claimed(None));
    let a = run("a", 10.0, "node-a", lease);
    assert_eq!(store.claim_run(&a, now).await.unwrap(), claimed(None));
    // The owner may record it again (new settings).
    let a2 = run("a", 20.0, "node-a", lease);
    assert_eq!(
        store.claim_run(&a2, now).await.unwrap(),
        claimed(Some(a.clone()))
    );
    // Another instance may not while the lease holds, and writes nothing.
    let theirs = run("a", 99.0, "node-b", "2025-01-12T20:32:00Z");
    assert_eq!(
        store.claim_run(&theirs, now).await.unwrap(),
        RunClaim::Held(a2.clone())
    );
    assert_eq!(
        store.runs("simulation").await.unwrap(),
        [a2.clone(), b.clone()]
    );
    assert!(store.runs("other").await.unwrap().is_empty());

    // The heartbeat extends the owner's leases only.
    let later = "2025-01-12T20:31:30Z";
    let mut renewed = store.renew_runs("node-a", t(later)).await.unwrap();
    renewed.sort();
    assert_eq!(
        renewed,
        [
            ("simulation".to_owned(), "a".parse().unwrap()),
            ("simulation".to_owned(), "b".parse().unwrap())
        ]
    );
    assert!(store
        .renew_runs("node-b", t(later))
        .await
        .unwrap()
        .is_empty());
    let a3 = run("a", 20.0, "node-a", later);
    assert_eq!(store.runs("simulation").await.unwrap()[0], a3);

    // Once the lease has expired, another instance takes the run over.
    let after = t("2025-01-12T20:31:31Z");
    assert_eq!(
        store.claim_run(&theirs, after).await.unwrap(),
        claimed(Some(a3))
    );
    // Only the owner ends a run: the old owner's late end changes nothing.
    let a_id: OrderId = "a".parse().unwrap();
    store.end_run("simulation", &a_id, "node-a").await.unwrap();
    assert_eq!(
        store.runs("simulation").await.unwrap(),
        [theirs.clone(), run("b", 60.0, "node-a", later)]
    );
    store.end_run("simulation", &a_id, "node-b").await.unwrap();
    store
        .end_run("simulation", &"zz".parse().unwrap(), "node-b")
        .await
        .unwrap();
    // Anyone may cancel a run, whoever owns it; the owner's heartbeat no
    // longer finds it.
    assert!(!store
        .cancel_run("simulation", &"c".parse().unwrap())
        .await
        .unwrap());
    store
        .claim_run(&run("c", 1.0, "node-a", later), now)
        .await
        .unwrap();
    assert!(store
        .cancel_run("simulation", &"c".parse().unwrap())
        .await
        .unwrap());
    assert_eq!(
        store.renew_runs("node-a", t(later)).await.unwrap(),
        [("simulation".to_owned(), "b".parse().unwrap())]
    );
    let remaining = [run("b", 60.0, "node-a", later)];
    assert_eq!(store.runs("simulation").await.unwrap(), remaining);
    if store.backend() != "memory" {
        assert_eq!(
            f.reopen().await.runs("simulation").await.unwrap(),
            remaining
        );
    }
    f
}

async fn request_records_are_replaced_and_keep_their_place(
    store: Arc<dyn OrderStore>,
    f: Fixture,
) -> Fixture {
    let record = |id: &str, notes: u32| RequestRecord {
        order_req_id: id.parse().unwrap(),
        record: serde_json::json!({ "order_req_id": id, "notes": notes, "at": "2025-01-12T20:31:00.000000Z" }),
    };
    let save = |side: &'static str, r: RequestRecord| {
        let store = Arc::clone(&store);
        async move {
            store
                .save_request_record(side, &r.order_req_id, &r.record, None)
                .await
                .unwrap()
        }
    };
    assert!(store.request_records("requestor").await.unwrap().is_empty());
    save("requestor", record("zeta", 0)).await;
    save("requestor", record("alpha", 0)).await;
    save("processor", record("alpha", 7)).await;
    // A new version replaces the old one and keeps its listing place.
    save("requestor", record("zeta", 2)).await;
    let expected = [record("zeta", 2), record("alpha", 0)];
    assert_eq!(store.request_records("requestor").await.unwrap(), expected);
    assert_eq!(
        store.request_records("processor").await.unwrap(),
        [record("alpha", 7)]
    );
    assert!(store.request_records("other").await.unwrap().is_empty());
    // One record alone, by side and id.
    let zeta: OrderId = "zeta".parse().unwrap();
    assert_eq!(
        store.request_record("requestor", &zeta).await.unwrap(),
        Some(record("zeta", 2).record)
    );
    assert_eq!(
        store.request_record("processor", &zeta).await.unwrap(),
        None
    );
    if store.backend() != "memory" {
        let reopened = f.reopen().await;
        assert_eq!(
            reopened.request_records("requestor").await.unwrap(),
            expected
        );
        assert_eq!(
            reopened.request_records("processor").await.unwrap(),
            [record("alpha", 7)]
        );
    }
    f
}

#[test]
fn test_database_urls_keep_their_options() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://127.0.0.1?sslmode=disable", "x"),
        "postgres://127.0.0.1/x?sslmode=disable"
    );
}

/// A whole answer (status code and body bytes) kept for `key`.
fn answered(key: &str, status: u16, body: &[u8], created_at: Timestamp) -> IdempotencyRecord {
    IdempotencyRecord {
        scope: "POST /api/v1/orders/followup".into(),
        key: key.into(),
        fingerprint: "f1".into(),
        answer: StoredAnswer::Response {
            status,
            body: body.to_vec(),
        },
        created_at,
    }
}

async fn whole_answers_are_stored_alone_or_with_a_request_record(
    store: Arc<dyn OrderStore>,
    f: Fixture,
) -> Fixture {
    let now = t("2025-01-12T20:31:00Z");
    let since = now.plus(-idempotency_ttl(""));
    // Bytes as they were, even ones that are not UTF-8.
    let first = answered("a", 202, b"{\"success\": true}\xff", now);
    assert!(store.save_idempotency(&first).await.unwrap());
    let scope = first.scope.clone();
    assert_eq!(
        store.idempotency(&scope, "a", since).await.unwrap(),
        Some(first.clone())
    );
    // A live key is not overwritten.
    assert!(!store
        .save_idempotency(&answered("a", 200, b"{}", now))
        .await
        .unwrap());
    assert_eq!(
        store.idempotency(&scope, "a", since).await.unwrap(),
        Some(first.clone())
    );

    // With a request record: both in one write, or neither.
    let id: OrderId = "R1".parse().unwrap();
    let note = |n: u32| serde_json::json!({ "order_req_id": "R1", "notes": n });
    let with_key = answered("b", 200, b"{\"follow_up_id\":\"FU001\"}", now);
    assert!(store
        .save_request_record("requestor", &id, &note(1), Some(&with_key))
        .await
        .unwrap());
    assert_eq!(
        store.idempotency(&scope, "b", since).await.unwrap(),
        Some(with_key.clone())
    );
    let taken = answered("b", 200, b"{\"follow_up_id\":\"FU002\"}", now);
    assert!(!store
        .save_request_record("requestor", &id, &note(2), Some(&taken))
        .await
        .unwrap());
    let records = store.request_records("requestor").await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].record, note(1), "a taken key writes nothing");
    assert_eq!(
        store.idempotency(&scope, "b", since).await.unwrap(),
        Some(with_key.clone())
    );

    // Expired answers are forgotten, replaced and purged like the others.
    let tomorrow = now.plus(idempotency_ttl("") + chrono::TimeDelta::seconds(1));
    let since_tomorrow = tomorrow.plus(-idempotency_ttl(""));
    assert_eq!(
        store
            .idempotency(&scope, "a", since_tomorrow)
            .await
            .unwrap(),
        None
    );
    let again = answered("a", 200, b"[]", tomorrow);
    assert!(store.save_idempotency(&again).await.unwrap());
    assert_eq!(
        store
            .idempotency(&scope, "a", since_tomorrow)
            .await
            .unwrap(),
        Some(again.clone())
    );
    if store.backend() != "memory" {
        let reopened = f.reopen().await;
        assert_eq!(
            reopened
                .idempotency(&scope, "a", since_tomorrow)
                .await
                .unwrap(),
            Some(again)
        );
        assert_eq!(
            reopened.idempotency(&scope, "b", since).await.unwrap(),
            Some(with_key)
        );
    }
    assert_eq!(
        store
            .purge_idempotency(since_tomorrow.plus(idempotency_ttl("")))
            .await
            .unwrap(),
        1
    );
    f
}

/// An order of `store`, created through seed 003's init.
fn store_order(id: &str, store: &str) -> Order {
    let input: crate::domain::fulfillment::InitInput = serde_json::from_value(serde_json::json!({
        "store_id": store,
        "customer_id": "c1",
        "delivery_provider": "internal"
    }))
    .unwrap();
    let draft = input.parse(id.parse().unwrap()).unwrap();
    Order::create(id.parse().unwrap(), draft, t("2025-01-12T20:30:00Z"))
}

async fn a_stores_feed_numbers_its_orders_changes_in_commit_order(
    store: Arc<dyn OrderStore>,
    f: Fixture,
) -> Fixture {
    let s1: StoreId = "s1".parse().unwrap();
    let empty = store.store_feed(&s1, Some(0), 10).await.unwrap();
    assert_eq!(empty, StoreFeedPage::default());
    let (a, b, c) = (
        store_order("a", "s1"),
        store_order("b", "s1"),
        store_order("c", "s2"),
    );
    // One batch: two orders of s1, one of s2, one without a store.
    let plain = new_order("plain");
    store
        .commit(&[create(&a), create(&c), create(&b), create(&plain)])
        .await
        .unwrap();
    let page = store.store_feed(&s1, Some(0), 10).await.unwrap();
    let seqs: Vec<(u64, &str)> = page
        .orders
        .iter()
        .map(|(n, o)| (*n, o.id.as_str()))
        .collect();
    assert_eq!(seqs, [(1, "a"), (2, "b")]);
    assert_eq!(page.head, 2);
    // A change moves the order to the end of its store's feed.
    let (a2, commit) = change(&a, OrderStatus::Cancelled, "store");
    store.commit(&[commit]).await.unwrap();
    let page = store.store_feed(&s1, Some(2), 10).await.unwrap();
    assert_eq!(page.orders, [(3, a2.clone())]);
    assert_eq!(page.head, 3);
    let page = store.store_feed(&s1, Some(0), 1).await.unwrap();
    assert_eq!(page.orders.len(), 1, "limited");
    assert_eq!(page.orders[0].1.id.as_str(), "b");
    // Without a cursor: the live orders only (a is cancelled).
    let live = store.store_feed(&s1, None, 10).await.unwrap();
    assert_eq!(live.orders, [(2, b.clone())]);
    assert_eq!(live.head, 3);
    // A failed commit takes no number that anyone sees.
    let (_, stale) = change(&a, OrderStatus::Preparing, "late");
    assert_eq!(
        store.commit(&[stale]).await.unwrap(),
        [CommitOutcome::Conflict]
    );
    let after = store.store_feed(&s1, Some(3), 10).await.unwrap();
    assert!(after.orders.is_empty());
    let other = store
        .store_feed(&"s2".parse().unwrap(), Some(0), 10)
        .await
        .unwrap();
    assert_eq!(other.orders, [(1, c)]);
    f
}

fn location(at: &str, seq: u64, accuracy: Option<f64>) -> Location {
    Location {
        fix: Fix {
            latitude: 40.712_776,
            longitude: -74.005_974,
            accuracy,
            at: t(at),
        },
        seq: Seq(seq),
    }
}

async fn driver_locations_keep_the_newest_fix_and_survive_reopening(
    store: Arc<dyn OrderStore>,
    f: Fixture,
) -> Fixture {
    let (a, b) = (new_order("a"), new_order("b"));
    store.commit(&[create(&a), create(&b)]).await.unwrap();
    assert_eq!(store.location(&a.id).await.unwrap(), None);
    let a1 = location("2025-01-12T20:40:00.123456Z", 1, Some(8.5));
    let b5 = location("2025-01-12T20:40:00Z", 5, None);
    store
        .save_locations(&[(a.id.clone(), a1), (b.id.clone(), b5)])
        .await
        .unwrap();
    assert_eq!(store.location(&a.id).await.unwrap(), Some(a1));
    assert_eq!(store.location(&b.id).await.unwrap(), Some(b5));

    // Older or as old: skipped, whatever its seq.
    let stale = [
        (a.id.clone(), location("2025-01-12T20:39:00Z", 9, None)),
        (
            a.id.clone(),
            location("2025-01-12T20:40:00.123456Z", 2, None),
        ),
    ];
    for write in stale {
        store.save_locations(&[write]).await.unwrap();
    }
    assert_eq!(store.location(&a.id).await.unwrap(), Some(a1));

    // Several fixes of one order in one write: the newest is kept.
    let a3 = location("2025-01-12T20:40:30Z", 3, Some(0.0));
    store
        .save_locations(&[
            (a.id.clone(), a3),
            (a.id.clone(), location("2025-01-12T20:40:20Z", 2, None)),
        ])
        .await
        .unwrap();
    assert_eq!(store.location(&a.id).await.unwrap(), Some(a3));
    store.save_locations(&[]).await.unwrap();

    let reopened = f.reopen().await;
    if store.backend() != "memory" {
        assert_eq!(reopened.location(&a.id).await.unwrap(), Some(a3));
        assert_eq!(reopened.location(&b.id).await.unwrap(), Some(b5));
    }
    drop(reopened);
    f
}

async fn driver_locations_are_announced_to_listeners(
    store: Arc<dyn OrderStore>,
    f: Fixture,
) -> Fixture {
    let order = new_order("a");
    store.commit(&[create(&order)]).await.unwrap();
    let fix = location("2025-01-12T20:40:00.5Z", 4, Some(3.0));
    let Some(mut listener) = store.listen().await.unwrap() else {
        // One process owns the store: announcing is a no-op.
        store
            .announce_locations(&[(order.id.clone(), fix)])
            .await
            .unwrap();
        return f;
    };
    store
        .announce_locations(&[(order.id.clone(), fix)])
        .await
        .unwrap();
    let (_, next) = order
        .apply(
            &OrderChange::SetStatus(OrderStatus::Preparing),
            order.updated_at,
        )
        .map(|next| {
            let next = next.unwrap();
            let commit = Commit {
                snapshot: Arc::new(OrderSnapshot::new(next.clone())),
                expected: Some(order.version),
                event: Event::for_order(
                    &next,
                    EventKind::StatusChanged,
                    Attribution::default(),
                    None,
                ),
                idempotency: None,
            };
            (next, commit)
        })
        .unwrap();
    store.commit(&[next]).await.unwrap();
    let mut notices = Notices::default();
    while notices.locations.is_empty() || notices.hints.is_empty() {
        let more = tokio::time::timeout(std::time::Duration::from_secs(10), listener.next())
            .await
            .expect("notices arrive")
            .unwrap();
        notices.locations.extend(more.locations);
        notices.hints.extend(more.hints);
    }
    assert_eq!(
        notices.locations,
        [LocationNotice {
            order_id: order.id.clone(),
            location: fix,
        }]
    );
    assert_eq!(notices.hints[0].version, Version(2));
    // Nothing was written: a location is saved only by `save_locations`.
    assert_eq!(store.location(&order.id).await.unwrap(), None);
    f
}

async fn an_order_is_found_by_its_partners_delivery_id(
    store: Arc<dyn OrderStore>,
    f: Fixture,
) -> Fixture {
    use crate::domain::fulfillment::{Partner, PartnerUpdate};
    use crate::domain::{Actor, Fulfill};
    let order = store_order("p1", "s1");
    store.commit(&[create(&order)]).await.unwrap();
    assert_eq!(store.order_by_delivery_id("del-1").await.unwrap(), None);
    let change = OrderChange::Fulfill {
        command: Fulfill::Partner(Box::new(PartnerUpdate {
            partner: Partner::Uber,
            event: "pending".into(),
            target: None,
            driver: None,
            estimated_delivery_time: None,
            delivery_tracking_id: Some("del-1".into()),
            delivery_tracking_url: None,
        })),
        actor: Actor::Partner,
        at_store: None,
    };
    let next = order.apply(&change, order.updated_at).unwrap().unwrap();
    let commit = Commit {
        snapshot: Arc::new(OrderSnapshot::new(next.clone())),
        expected: Some(order.version),
        event: Event::for_order(
            &next,
            EventKind::PartnerEvent,
            Attribution::by("uber"),
            None,
        ),
        idempotency: None,
    };
    store.commit(&[commit]).await.unwrap();
    assert_eq!(
        store.order_by_delivery_id("del-1").await.unwrap(),
        Some(order.id.clone())
    );
    assert_eq!(store.order_by_delivery_id("del-2").await.unwrap(), None);
    f
}
