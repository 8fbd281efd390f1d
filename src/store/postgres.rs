//! The PostgreSQL store, for production: several instances can share one
//! database. Same contract as the SQLite store. Schema: `migrations/postgres/`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::postgres::{PgArguments, PgListener, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::{
    counts_by_status, feed_page, limit_to_db, location_seq_from_db, location_seq_to_db,
    parse_stored, seq_from_db, seq_to_db, store_counts, version_from_db, version_to_db,
    BackgroundRun, ChangeListener, Commit, CommitOutcome, Hint, IdempotencyRecord, LocationNotice,
    Notices, OrderStore, Poisoned, RequestRecord, RunClaim, StoreError, StoreFeedPage, StoreSeqs,
    StoredAnswer, FINAL_STATUSES_SQL,
};
use crate::domain::{
    Attribution, Event, Fix, Location, Order, OrderId, OrderStatus, StoreId, Timestamp, Version,
};

/// How long to wait for a pooled connection before failing a request.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The channel every instance announces its commits on ([`Hint`]s).
pub const CHANGES_CHANNEL: &str = "order_tracker_changes";
/// The channel every instance announces the driver locations it accepts on
/// ([`LocationNotice`]s), sent outside any transaction.
pub const LOCATIONS_CHANNEL: &str = "order_tracker_locations";
/// The listening connection's `application_name`, for `pg_stat_activity`.
pub const LISTENER_NAME: &str = "order-tracker-listen";
/// Orders compared per query by [`OrderStore::newer`].
const NEWER_CHUNK: usize = 5_000;

/// Orders in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// A pool of one connection for the change listener, apart from the
    /// queries' pool so that it never waits behind them or takes one of
    /// theirs.
    listen_pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://…`) and runs the migrations.
    pub async fn open(url: &str, pool_size: u32) -> Result<PostgresStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(|err| StoreError::Open(format!("{}: {err}", redact(url))))?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(
                pool.connect_options()
                    .as_ref()
                    .clone()
                    .application_name(LISTENER_NAME),
            );
        Ok(PostgresStore { pool, listen_pool })
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn at(timestamp: Timestamp) -> DateTime<Utc> {
    timestamp.as_datetime()
}

/// Stores an idempotency record unless a live record of its key is stored
/// (an expired one is replaced); returns whether it was stored.
async fn save_key<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    record: &IdempotencyRecord,
) -> Result<bool, StoreError> {
    let answer = record.answer.columns();
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys
             (scope, key, fingerprint, order_id, version, response, status, body, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (scope, key) DO UPDATE SET
             fingerprint = excluded.fingerprint, order_id = excluded.order_id,
             version = excluded.version, response = excluded.response,
             status = excluded.status, body = excluded.body,
             created_at = excluded.created_at
         WHERE idempotency_keys.created_at < $10",
    )
    .bind(&record.scope)
    .bind(&record.key)
    .bind(&record.fingerprint)
    .bind(answer.order_id)
    .bind(answer.version)
    .bind(answer.response)
    .bind(answer.status)
    .bind(answer.body)
    .bind(at(record.created_at))
    .bind(at(record.expires_before()))
    .execute(executor)
    .await?;
    Ok(inserted.rows_affected() > 0)
}

/// Writes one commit inside the batch's transaction.
async fn commit_one(
    tx: &mut Transaction<'_, Postgres>,
    commit: &Commit,
    store_seq: Option<u64>,
) -> Result<CommitOutcome, StoreError> {
    let order = commit.order();
    // With a key, a savepoint lets a taken key or a conflict undo this
    // commit alone, leaving the rest of the batch.
    if let Some(record) = &commit.idempotency {
        sqlx::query("SAVEPOINT cmd").execute(&mut **tx).await?;
        if !save_key(&mut **tx, record).await? {
            sqlx::query("RELEASE SAVEPOINT cmd")
                .execute(&mut **tx)
                .await?;
            return Ok(CommitOutcome::KeyTaken);
        }
    }
    let data = Json(commit.snapshot.json());
    let written = match commit.expected {
        None => sqlx::query(
            "INSERT INTO orders
                 (id, customer_id, status, version, created_at, updated_at, data, store_id, store_seq,
                  delivery_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(order.id.as_str())
        .bind(String::from(order.customer_id.clone()))
        .bind(order.status.as_str())
        .bind(version_to_db(order.version))
        .bind(at(order.created_at))
        .bind(at(order.updated_at))
        .bind(data)
        .bind(order.store_id().map(StoreId::as_str))
        .bind(store_seq.map(seq_to_db))
        .bind(order.delivery_id())
        .execute(&mut **tx)
        .await?
        .rows_affected(),
        Some(expected) => sqlx::query(
            "UPDATE orders SET status = $1, version = $2, updated_at = $3, data = $4,
                 store_id = $7, store_seq = $8, delivery_id = $9
             WHERE id = $5 AND version = $6",
        )
        .bind(order.status.as_str())
        .bind(version_to_db(order.version))
        .bind(at(order.updated_at))
        .bind(data)
        .bind(order.id.as_str())
        .bind(version_to_db(expected))
        .bind(order.store_id().map(StoreId::as_str))
        .bind(store_seq.map(seq_to_db))
        .bind(order.delivery_id())
        .execute(&mut **tx)
        .await?
        .rows_affected(),
    };
    if written == 0 {
        if commit.idempotency.is_some() {
            sqlx::query("ROLLBACK TO SAVEPOINT cmd")
                .execute(&mut **tx)
                .await?;
            sqlx::query("RELEASE SAVEPOINT cmd")
                .execute(&mut **tx)
                .await?;
        }
        return Ok(match commit.expected {
            None => CommitOutcome::Exists,
            Some(_) => CommitOutcome::Conflict,
        });
    }
    let event = &commit.event;
    sqlx::query(
        "INSERT INTO order_events
             (order_id, version, at, kind, status, updated_by, notes, metadata, idempotency_key,
              tracking_status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(event.order_id.as_str())
    .bind(version_to_db(event.version))
    .bind(at(event.at))
    .bind(event.kind.as_str())
    .bind(event.status.as_str())
    .bind(event.attribution.updated_by.as_deref())
    .bind(event.attribution.notes.as_deref())
    .bind(event.attribution.metadata.as_ref().map(Json))
    .bind(event.idempotency_key.as_deref())
    .bind(event.tracking_status.map(<&str>::from))
    .execute(&mut **tx)
    .await?;
    if commit.idempotency.is_some() {
        sqlx::query("RELEASE SAVEPOINT cmd")
            .execute(&mut **tx)
            .await?;
    }
    Ok(CommitOutcome::Committed)
}

/// `sql` with `run`'s columns bound as `$1`..`$6`: kind, order id, params,
/// start, owner, lease end.
fn bind_run<'q>(sql: &'q str, run: &'q BackgroundRun) -> Query<'q, Postgres, PgArguments> {
    sqlx::query(sql)
        .bind(&run.kind)
        .bind(run.order_id.as_str())
        .bind(Json(&run.params))
        .bind(at(run.started_at))
        .bind(&run.owner)
        .bind(at(run.lease_until))
}

fn run_from_row(kind: &str, row: &PgRow) -> Result<BackgroundRun, StoreError> {
    let Json(params): Json<Value> = row.try_get("params")?;
    Ok(BackgroundRun {
        kind: kind.to_owned(),
        order_id: parse_stored("order id", row.try_get::<&str, _>("order_id")?)?,
        params,
        started_at: Timestamp::new(row.try_get("started_at")?),
        owner: row.try_get("owner")?,
        lease_until: Timestamp::new(row.try_get("lease_until")?),
    })
}

fn event_from_row(row: &PgRow) -> Result<Event, StoreError> {
    let metadata: Option<Json<Map<String, Value>>> = row.try_get("metadata")?;
    Ok(Event {
        order_id: parse_stored("order id", row.try_get::<&str, _>("order_id")?)?,
        version: version_from_db(row.try_get("version")?)?,
        at: Timestamp::new(row.try_get("at")?),
        kind: parse_stored("event kind", row.try_get::<&str, _>("kind")?)?,
        status: parse_stored("status", row.try_get::<&str, _>("status")?)?,
        tracking_status: row
            .try_get::<Option<&str>, _>("tracking_status")?
            .map(|status| parse_stored("tracking status", status))
            .transpose()?,
        attribution: Attribution {
            updated_by: row.try_get("updated_by")?,
            notes: row.try_get("notes")?,
            metadata: metadata.map(|Json(map)| map),
        },
        idempotency_key: row.try_get("idempotency_key")?,
    })
}

#[async_trait]
impl OrderStore for PostgresStore {
    async fn commit(&self, batch: &[Commit]) -> Result<Vec<CommitOutcome>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut seqs = StoreSeqs::default();
        for (store, count) in store_counts(batch) {
            let last: i64 = sqlx::query_scalar(
                "INSERT INTO store_feeds (store_id, seq) VALUES ($1, $2)
                 ON CONFLICT (store_id) DO UPDATE SET seq = store_feeds.seq + excluded.seq
                 RETURNING seq",
            )
            .bind(store.as_str())
            .bind(seq_to_db(count))
            .fetch_one(&mut *tx)
            .await?;
            seqs.reserved(store, seq_from_db(last)?, count);
        }
        let mut poisoned = Poisoned::default();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut hints = Vec::with_capacity(batch.len());
        for commit in batch {
            let seq = seqs.take(commit);
            let outcome = poisoned
                .outcome_of(commit, commit_one(&mut tx, commit, seq))
                .await?;
            if outcome == CommitOutcome::Committed {
                hints.push(Hint::of(commit.order()).payload());
            }
            outcomes.push(outcome);
        }
        if !hints.is_empty() {
            // Sent by PostgreSQL when, and only if, the transaction commits.
            sqlx::query("SELECT pg_notify($1, hint) FROM UNNEST($2::text[]) AS hint")
                .bind(CHANGES_CHANNEL)
                .bind(&hints)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn get(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let data: Option<Json<Order>> = sqlx::query_scalar("SELECT data FROM orders WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|err| match err {
                sqlx::Error::ColumnDecode { source, .. } => {
                    StoreError::Corrupt(format!("order snapshot: {source}"))
                }
                other => other.into(),
            })?;
        Ok(data.map(|Json(order)| order))
    }

    async fn exists(&self, id: &OrderId) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM orders WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    async fn history(
        &self,
        id: &OrderId,
        after: Version,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        sqlx::query(
            "SELECT order_id, version, at, kind, status, updated_by, notes, metadata, idempotency_key,
                    tracking_status
             FROM order_events WHERE order_id = $1 AND version > $2
             ORDER BY version LIMIT $3",
        )
        .bind(id.as_str())
        .bind(version_to_db(after))
        .bind(limit_to_db(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(event_from_row)
        .collect()
    }

    async fn store_feed(
        &self,
        store: &StoreId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<StoreFeedPage, StoreError> {
        let head: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM store_feeds WHERE store_id = $1")
                .bind(store.as_str())
                .fetch_optional(&self.pool)
                .await?;
        let rows: Vec<(i64, Json<Order>)> = match after {
            Some(after) => {
                sqlx::query_as(
                    "SELECT store_seq, data FROM orders WHERE store_id = $1 AND store_seq > $2
                     ORDER BY store_seq LIMIT $3",
                )
                .bind(store.as_str())
                .bind(seq_to_db(after))
                .bind(limit_to_db(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query_as(&format!(
                    "SELECT store_seq, data FROM orders
                     WHERE store_id = $1 AND status NOT IN ({FINAL_STATUSES_SQL})
                     ORDER BY store_seq LIMIT $2"
                ))
                .bind(store.as_str())
                .bind(limit_to_db(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        feed_page(
            head,
            rows.into_iter()
                .map(|(seq, Json(order))| (seq, order))
                .collect(),
        )
    }

    async fn order_by_delivery_id(&self, delivery_id: &str) -> Result<Option<OrderId>, StoreError> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM orders WHERE delivery_id = $1 ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(delivery_id)
        .fetch_optional(&self.pool)
        .await?;
        id.map(|id| parse_stored("order id", &id)).transpose()
    }

    async fn count_by_status(&self) -> Result<BTreeMap<OrderStatus, u64>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM orders GROUP BY status")
                .fetch_all(&self.pool)
                .await?;
        counts_by_status(rows)
    }

    async fn idempotency(
        &self,
        scope: &str,
        key: &str,
        since: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT fingerprint, order_id, version, response, status, body, created_at
             FROM idempotency_keys WHERE scope = $1 AND key = $2 AND created_at >= $3",
        )
        .bind(scope)
        .bind(key)
        .bind(at(since))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(IdempotencyRecord {
                scope: scope.to_owned(),
                key: key.to_owned(),
                fingerprint: row.try_get("fingerprint")?,
                answer: StoredAnswer::from_columns(
                    row.try_get("order_id")?,
                    row.try_get("version")?,
                    row.try_get("response")?,
                    row.try_get("status")?,
                    row.try_get("body")?,
                )?,
                created_at: Timestamp::new(row.try_get("created_at")?),
            })
        })
        .transpose()
    }

    async fn save_idempotency(&self, record: &IdempotencyRecord) -> Result<bool, StoreError> {
        save_key(&self.pool, record).await
    }

    async fn purge_idempotency(&self, now: Timestamp) -> Result<u64, StoreError> {
        let sql = format!(
            "DELETE FROM idempotency_keys WHERE {}",
            super::expired_sql("$1", "$2")
        );
        Ok(sqlx::query(&sql)
            .bind(at(super::idempotency_cutoff(now, "")))
            .bind(at(super::idempotency_cutoff(
                now,
                super::WEBHOOK_SCOPE_PREFIX,
            )))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn claim_run(
        &self,
        run: &BackgroundRun,
        expired_before: Timestamp,
    ) -> Result<RunClaim, StoreError> {
        let mut tx = self.pool.begin().await?;
        let select = "SELECT order_id, params, started_at, owner, lease_until FROM background_runs
                      WHERE kind = $1 AND order_id = $2 FOR UPDATE";
        let read = |row: Option<PgRow>| row.map(|row| run_from_row(&run.kind, &row)).transpose();
        let mut previous = read(
            sqlx::query(select)
                .bind(&run.kind)
                .bind(run.order_id.as_str())
                .fetch_optional(&mut *tx)
                .await?,
        )?;
        if previous.is_none() {
            let inserted = bind_run(
                "INSERT INTO background_runs (kind, order_id, params, started_at, owner, lease_until)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (kind, order_id) DO NOTHING",
                run,
            )
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 1 {
                tx.commit().await?;
                return Ok(RunClaim::Claimed { previous: None });
            }
            // Another instance inserted it meanwhile: read what it wrote.
            previous = read(
                sqlx::query(select)
                    .bind(&run.kind)
                    .bind(run.order_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?,
            )?;
        }
        if let Some(held) = RunClaim::held(previous.as_ref(), run, expired_before) {
            return Ok(held);
        }
        bind_run(
            "INSERT INTO background_runs (kind, order_id, params, started_at, owner, lease_until)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (kind, order_id) DO UPDATE SET params = excluded.params,
                 started_at = excluded.started_at, owner = excluded.owner,
                 lease_until = excluded.lease_until",
            run,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RunClaim::Claimed { previous })
    }

    async fn renew_runs(
        &self,
        owner: &str,
        until: Timestamp,
    ) -> Result<Vec<(String, OrderId)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "UPDATE background_runs SET lease_until = $2 WHERE owner = $1
             RETURNING kind, order_id",
        )
        .bind(owner)
        .bind(at(until))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(kind, id)| Ok((kind, parse_stored("order id", &id)?)))
            .collect()
    }

    async fn end_run(&self, kind: &str, order_id: &OrderId, owner: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM background_runs WHERE kind = $1 AND order_id = $2 AND owner = $3")
            .bind(kind)
            .bind(order_id.as_str())
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn cancel_run(&self, kind: &str, order_id: &OrderId) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("DELETE FROM background_runs WHERE kind = $1 AND order_id = $2")
                .bind(kind)
                .bind(order_id.as_str())
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    async fn runs(&self, kind: &str) -> Result<Vec<BackgroundRun>, StoreError> {
        sqlx::query(
            "SELECT order_id, params, started_at, owner, lease_until FROM background_runs
             WHERE kind = $1 ORDER BY order_id",
        )
        .bind(kind)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| run_from_row(kind, row))
        .collect()
    }

    async fn save_request_record(
        &self,
        side: &str,
        order_req_id: &OrderId,
        record: &serde_json::Value,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(key) = idempotency {
            if !save_key(&mut *tx, key).await? {
                // Dropping the transaction rolls it back; nothing was written.
                return Ok(false);
            }
        }
        sqlx::query(
            "INSERT INTO order_request_records (side, order_req_id, record) VALUES ($1, $2, $3)
             ON CONFLICT (side, order_req_id) DO UPDATE SET record = excluded.record",
        )
        .bind(side)
        .bind(order_req_id.as_str())
        .bind(Json(record))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn request_records(&self, side: &str) -> Result<Vec<RequestRecord>, StoreError> {
        let rows: Vec<(String, Json<Value>)> = sqlx::query_as(
            "SELECT order_req_id, record FROM order_request_records WHERE side = $1 ORDER BY seq",
        )
        .bind(side)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(order_req_id, Json(record))| {
                Ok(RequestRecord {
                    order_req_id: parse_stored("order request id", &order_req_id)?,
                    record,
                })
            })
            .collect()
    }

    async fn request_record(
        &self,
        side: &str,
        order_req_id: &OrderId,
    ) -> Result<Option<Value>, StoreError> {
        let record: Option<Json<Value>> = sqlx::query_scalar(
            "SELECT record FROM order_request_records WHERE side = $1 AND order_req_id = $2",
        )
        .bind(side)
        .bind(order_req_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(record.map(|Json(record)| record))
    }

    async fn newer(&self, known: &[(OrderId, Version)]) -> Result<Vec<Order>, StoreError> {
        let mut newer = Vec::new();
        for chunk in known.chunks(NEWER_CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
            let versions: Vec<i64> = chunk.iter().map(|(_, v)| version_to_db(*v)).collect();
            let rows: Vec<Json<Order>> = sqlx::query_scalar(
                "SELECT o.data FROM orders o
                 JOIN UNNEST($1::text[], $2::bigint[]) AS known (id, version) ON o.id = known.id
                 WHERE o.version > known.version",
            )
            .bind(&ids)
            .bind(&versions)
            .fetch_all(&self.pool)
            .await?;
            newer.extend(rows.into_iter().map(|Json(order)| order));
        }
        Ok(newer)
    }

    async fn listen(&self) -> Result<Option<Box<dyn ChangeListener>>, StoreError> {
        let mut listener = PgListener::connect_with(&self.listen_pool).await?;
        // A lost connection is reported, not mended behind our back: the
        // caller must catch up on what it missed (see `ChangeListener`).
        listener.eager_reconnect(false);
        // One connection per instance for both: locations ride along.
        listener
            .listen_all([CHANGES_CHANNEL, LOCATIONS_CHANNEL])
            .await?;
        Ok(Some(Box::new(PgChanges(listener))))
    }

    async fn save_locations(&self, locations: &[(OrderId, Location)]) -> Result<(), StoreError> {
        // One row per order: `ON CONFLICT DO UPDATE` may not touch a row
        // twice in one statement. The newest fix of each order is kept.
        let mut newest: std::collections::HashMap<&str, &Location> =
            std::collections::HashMap::with_capacity(locations.len());
        for (id, location) in locations {
            newest
                .entry(id.as_str())
                .and_modify(|held| {
                    if !held.supersedes(&location.fix) {
                        *held = location;
                    }
                })
                .or_insert(location);
        }
        if newest.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = newest.keys().copied().collect();
        let fixes: Vec<&Location> = ids.iter().map(|id| newest[id]).collect();
        sqlx::query(
            "INSERT INTO driver_locations (order_id, latitude, longitude, accuracy, at, seq)
             SELECT * FROM UNNEST($1::text[], $2::float8[], $3::float8[], $4::float8[],
                                  $5::timestamptz[], $6::bigint[])
             ON CONFLICT (order_id) DO UPDATE SET latitude = excluded.latitude,
                 longitude = excluded.longitude, accuracy = excluded.accuracy,
                 at = excluded.at, seq = excluded.seq
             WHERE driver_locations.at < excluded.at",
        )
        .bind(&ids)
        .bind(fixes.iter().map(|l| l.fix.latitude).collect::<Vec<f64>>())
        .bind(fixes.iter().map(|l| l.fix.longitude).collect::<Vec<f64>>())
        .bind(
            fixes
                .iter()
                .map(|l| l.fix.accuracy)
                .collect::<Vec<Option<f64>>>(),
        )
        .bind(
            fixes
                .iter()
                .map(|l| at(l.fix.at))
                .collect::<Vec<DateTime<Utc>>>(),
        )
        .bind(
            fixes
                .iter()
                .map(|l| location_seq_to_db(l.seq))
                .collect::<Vec<i64>>(),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn location(&self, id: &OrderId) -> Result<Option<Location>, StoreError> {
        let row: Option<(f64, f64, Option<f64>, DateTime<Utc>, i64)> = sqlx::query_as(
            "SELECT latitude, longitude, accuracy, at, seq FROM driver_locations
             WHERE order_id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(latitude, longitude, accuracy, at, seq)| {
            Ok(Location {
                fix: Fix {
                    latitude,
                    longitude,
                    accuracy,
                    at: Timestamp::new(at),
                },
                seq: location_seq_from_db(seq)?,
            })
        })
        .transpose()
    }

    async fn announce_locations(
        &self,
        locations: &[(OrderId, Location)],
    ) -> Result<(), StoreError> {
        if locations.is_empty() {
            return Ok(());
        }
        let payloads: Vec<String> = locations
            .iter()
            .map(|(order_id, location)| {
                LocationNotice {
                    order_id: order_id.clone(),
                    location: *location,
                }
                .payload()
            })
            .collect();
        // Outside a transaction: sent at once, and nothing is written.
        sqlx::query("SELECT pg_notify($1, payload) FROM UNNEST($2::text[]) AS payload")
            .bind(LOCATIONS_CHANNEL)
            .bind(&payloads)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

/// The notices on [`CHANGES_CHANNEL`] and [`LOCATIONS_CHANNEL`].
struct PgChanges(PgListener);

#[async_trait]
impl ChangeListener for PgChanges {
    async fn next(&mut self) -> Result<Notices, StoreError> {
        let first = self
            .0
            .try_recv()
            .await?
            .ok_or_else(|| StoreError::Backend("the listening connection was lost".into()))?;
        let mut notices = Notices::default();
        for notification in
            std::iter::once(first).chain(std::iter::from_fn(|| self.0.next_buffered()))
        {
            let payload = notification.payload();
            let read = if notification.channel() == LOCATIONS_CHANNEL {
                LocationNotice::parse(payload).map(|notice| notices.locations.push(notice))
            } else {
                Hint::parse(payload).map(|hint| notices.hints.push(hint))
            };
            if read.is_none() {
                tracing::warn!(
                    channel = notification.channel(),
                    payload,
                    "unreadable notification ignored"
                );
            }
        }
        Ok(notices)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            super::redact("postgres://app:s3cret@db:5432/orders"),
            "postgres://app:***@db:5432/orders"
        );
        assert_eq!(
            super::redact("postgres://127.0.0.1/orders"),
            "postgres://127.0.0.1/orders"
        );
    }
}
