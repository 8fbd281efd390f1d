//! The SQLite store, the embedded default: one file beside the server, in WAL
//! mode with `synchronous=FULL`, so a committed change survives `kill -9` and
//! a power cut. Schema: `migrations/sqlite/`.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::{
    counts_by_status, feed_page, limit_to_db, location_seq_from_db, location_seq_to_db,
    metadata_from_json, order_from_json, parse_stored, seq_from_db, seq_to_db, store_counts,
    version_from_db, version_to_db, BackgroundRun, Commit, CommitOutcome, IdempotencyRecord,
    OrderStore, Poisoned, RequestRecord, RunClaim, StoreError, StoreFeedPage, StoreSeqs,
    StoredAnswer, FINAL_STATUSES_SQL,
};
use crate::domain::{
    Attribution, Event, Fix, Location, Order, OrderId, OrderStatus, StoreId, Timestamp, Version,
};

/// How long a statement waits for the file's write lock (another process,
/// a backup) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Orders in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database `url` names, e.g.
    /// `sqlite:order-tracker.db`, and runs the migrations.
    pub async fn open(url: &str, pool_size: u32) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|err| StoreError::Open(format!("{url}: {err}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(pool_size.max(1))
            .connect_with(options)
            .await
            .map_err(|err| StoreError::Open(format!("{url}: {err}")))?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }
}

/// Stores an idempotency record unless a live record of its key is stored
/// (an expired one is replaced); returns whether it was stored.
async fn save_key<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    record: &IdempotencyRecord,
) -> Result<bool, StoreError> {
    let answer = record.answer.columns();
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys
             (scope, key, fingerprint, order_id, version, response, status, body, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (scope, key) DO UPDATE SET
             fingerprint = excluded.fingerprint, order_id = excluded.order_id,
             version = excluded.version, response = excluded.response,
             status = excluded.status, body = excluded.body,
             created_at = excluded.created_at
         WHERE idempotency_keys.created_at < ?",
    )
    .bind(&record.scope)
    .bind(&record.key)
    .bind(&record.fingerprint)
    .bind(answer.order_id)
    .bind(answer.version)
    .bind(answer.response)
    .bind(answer.status)
    .bind(answer.body)
    .bind(record.created_at.to_string())
    .bind(record.expires_before().to_string())
    .execute(executor)
    .await?;
    Ok(inserted.rows_affected() > 0)
}

/// Writes one commit inside the batch's transaction.
async fn commit_one(
    tx: &mut Transaction<'_, Sqlite>,
    commit: &Commit,
    store_seq: Option<u64>,
) -> Result<CommitOutcome, StoreError> {
    let order = commit.order();
    // With a key, a savepoint lets a taken key or a conflict undo this
    // commit alone, leaving the rest of the batch.
    if let Some(record) = &commit.idempotency {
        sqlx::query("SAVEPOINT cmd").execute(&mut **tx).await?;
        if !save_key(&mut **tx, record).await? {
            sqlx::query("RELEASE cmd").execute(&mut **tx).await?;
            return Ok(CommitOutcome::KeyTaken);
        }
    }
    let written = match commit.expected {
        None => sqlx::query(
            "INSERT INTO orders
                 (id, customer_id, status, version, created_at, updated_at, data, store_id, store_seq,
                  delivery_id)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(order.id.as_str())
        .bind(String::from(order.customer_id.clone()))
        .bind(order.status.as_str())
        .bind(version_to_db(order.version))
        .bind(order.created_at.to_string())
        .bind(order.updated_at.to_string())
        .bind(commit.snapshot.json().get())
        .bind(order.store_id().map(StoreId::as_str))
        .bind(store_seq.map(seq_to_db))
        .bind(order.delivery_id())
        .execute(&mut **tx)
        .await?
        .rows_affected(),
        Some(expected) => sqlx::query(
            "UPDATE orders SET status = ?, version = ?, updated_at = ?, data = ?,
                 store_id = ?, store_seq = ?, delivery_id = ?
             WHERE id = ? AND version = ?",
        )
        .bind(order.status.as_str())
        .bind(version_to_db(order.version))
        .bind(order.updated_at.to_string())
        .bind(commit.snapshot.json().get())
        .bind(order.store_id().map(StoreId::as_str))
        .bind(store_seq.map(seq_to_db))
        .bind(order.delivery_id())
        .bind(order.id.as_str())
        .bind(version_to_db(expected))
        .execute(&mut **tx)
        .await?
        .rows_affected(),
    };
    if written == 0 {
        if commit.idempotency.is_some() {
            sqlx::query("ROLLBACK TO cmd").execute(&mut **tx).await?;
            sqlx::query("RELEASE cmd").execute(&mut **tx).await?;
        }
        return Ok(match commit.expected {
            None => CommitOutcome::Exists,
            Some(_) => CommitOutcome::Conflict,
        });
    }
    let event = &commit.event;
    let metadata = event
        .attribution
        .metadata
        .as_ref()
        .map(|m| serde_json::Value::Object(m.clone()).to_string());
    sqlx::query(
        "INSERT INTO order_events
             (order_id, version, at, kind, status, updated_by, notes, metadata, idempotency_key,
              tracking_status)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(event.order_id.as_str())
    .bind(version_to_db(event.version))
    .bind(event.at.to_string())
    .bind(event.kind.as_str())
    .bind(event.status.as_str())
    .bind(event.attribution.updated_by.as_deref())
    .bind(event.attribution.notes.as_deref())
    .bind(metadata)
    .bind(event.idempotency_key.as_deref())
    .bind(event.tracking_status.map(<&str>::from))
    .execute(&mut **tx)
    .await?;
    if commit.idempotency.is_some() {
        sqlx::query("RELEASE cmd").execute(&mut **tx).await?;
    }
    Ok(CommitOutcome::Committed)
}

fn event_from_row(row: &SqliteRow) -> Result<Event, StoreError> {
    Ok(Event {
        order_id: parse_stored("order id", row.try_get::<&str, _>("order_id")?)?,
        version: version_from_db(row.try_get("version")?)?,
        at: parse_stored("event time", row.try_get::<&str, _>("at")?)?,
        kind: parse_stored("event kind", row.try_get::<&str, _>("kind")?)?,
        status: parse_stored("status", row.try_get::<&str, _>("status")?)?,
        tracking_status: row
            .try_get::<Option<&str>, _>("tracking_status")?
            .map(|status| parse_stored("tracking status", status))
            .transpose()?,
        attribution: Attribution {
            updated_by: row.try_get("updated_by")?,
            notes: row.try_get("notes")?,
            metadata: metadata_from_json(row.try_get("metadata")?)?,
        },
        idempotency_key: row.try_get("idempotency_key")?,
    })
}

/// A `background_runs` row: order id, params, start, owner, lease end.
#[derive(sqlx::FromRow)]
struct RunRow {
    order_id: String,
    params: String,
    started_at: String,
    owner: String,
    lease_until: String,
}

impl RunRow {
    fn into_run(self, kind: &str) -> Result<BackgroundRun, StoreError> {
        Ok(BackgroundRun {
            kind: kind.to_owned(),
            order_id: parse_stored("order id", &self.order_id)?,
            params: serde_json::from_str(&self.params)
                .map_err(|err| StoreError::Corrupt(format!("run params: {err}")))?,
            started_at: parse_stored("run start", &self.started_at)?,
            owner: self.owner,
            lease_until: parse_stored("run lease", &self.lease_until)?,
        })
    }
}

#[async_trait]
impl OrderStore for SqliteStore {
    async fn commit(&self, batch: &[Commit]) -> Result<Vec<CommitOutcome>, StoreError> {
        // IMMEDIATE takes the write lock up front, so the transaction never
        // has to upgrade a read lock (which can fail with SQLITE_BUSY).
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut seqs = StoreSeqs::default();
        for (store, count) in store_counts(batch) {
            let last: i64 = sqlx::query_scalar(
                "INSERT INTO store_feeds (store_id, seq) VALUES (?, ?)
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
        for commit in batch {
            let seq = seqs.take(commit);
            outcomes.push(
                poisoned
                    .outcome_of(commit, commit_one(&mut tx, commit, seq))
                    .await?,
            );
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn get(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let data: Option<String> = sqlx::query_scalar("SELECT data FROM orders WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        data.as_deref().map(order_from_json).transpose()
    }

    async fn exists(&self, id: &OrderId) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM orders WHERE id = ?")
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
             FROM order_events WHERE order_id = ? AND version > ?
             ORDER BY version LIMIT ?",
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
            sqlx::query_scalar("SELECT seq FROM store_feeds WHERE store_id = ?")
                .bind(store.as_str())
                .fetch_optional(&self.pool)
                .await?;
        let rows: Vec<(i64, String)> = match after {
            Some(after) => {
                sqlx::query_as(
                    "SELECT store_seq, data FROM orders WHERE store_id = ? AND store_seq > ?
                     ORDER BY store_seq LIMIT ?",
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
                     WHERE store_id = ? AND status NOT IN ({FINAL_STATUSES_SQL})
                     ORDER BY store_seq LIMIT ?"
                ))
                .bind(store.as_str())
                .bind(limit_to_db(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        let rows = rows
            .into_iter()
            .map(|(seq, data)| Ok((seq, order_from_json(&data)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        feed_page(head, rows)
    }

    async fn order_by_delivery_id(&self, delivery_id: &str) -> Result<Option<OrderId>, StoreError> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM orders WHERE delivery_id = ? ORDER BY updated_at DESC LIMIT 1",
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
             FROM idempotency_keys WHERE scope = ? AND key = ? AND created_at >= ?",
        )
        .bind(scope)
        .bind(key)
        .bind(since.to_string())
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
                created_at: parse_stored("key time", row.try_get::<&str, _>("created_at")?)?,
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
            super::expired_sql("?1", "?2")
        );
        Ok(sqlx::query(&sql)
            .bind(super::idempotency_cutoff(now, "").to_string())
            .bind(super::idempotency_cutoff(now, super::WEBHOOK_SCOPE_PREFIX).to_string())
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn claim_run(
        &self,
        run: &BackgroundRun,
        expired_before: Timestamp,
    ) -> Result<RunClaim, StoreError> {
        // IMMEDIATE: the read and the write below see no other writer between.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let previous = sqlx::query_as::<_, RunRow>(
            "SELECT order_id, params, started_at, owner, lease_until FROM background_runs
             WHERE kind = ? AND order_id = ?",
        )
        .bind(&run.kind)
        .bind(run.order_id.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| row.into_run(&run.kind))
        .transpose()?;
        if let Some(held) = RunClaim::held(previous.as_ref(), run, expired_before) {
            return Ok(held);
        }
        sqlx::query(
            "INSERT INTO background_runs (kind, order_id, params, started_at, owner, lease_until)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (kind, order_id) DO UPDATE SET params = excluded.params,
                 started_at = excluded.started_at, owner = excluded.owner,
                 lease_until = excluded.lease_until",
        )
        .bind(&run.kind)
        .bind(run.order_id.as_str())
        .bind(run.params.to_string())
        .bind(run.started_at.to_string())
        .bind(&run.owner)
        .bind(run.lease_until.to_string())
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
            "UPDATE background_runs SET lease_until = ? WHERE owner = ? RETURNING kind, order_id",
        )
        .bind(until.to_string())
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(kind, id)| Ok((kind, parse_stored("order id", &id)?)))
            .collect()
    }

    async fn end_run(&self, kind: &str, order_id: &OrderId, owner: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM background_runs WHERE kind = ? AND order_id = ? AND owner = ?")
            .bind(kind)
            .bind(order_id.as_str())
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn cancel_run(&self, kind: &str, order_id: &OrderId) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("DELETE FROM background_runs WHERE kind = ? AND order_id = ?")
                .bind(kind)
                .bind(order_id.as_str())
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    async fn runs(&self, kind: &str) -> Result<Vec<BackgroundRun>, StoreError> {
        sqlx::query_as::<_, RunRow>(
            "SELECT order_id, params, started_at, owner, lease_until FROM background_runs
             WHERE kind = ? ORDER BY order_id",
        )
        .bind(kind)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| row.into_run(kind))
        .collect()
    }

    async fn save_request_record(
        &self,
        side: &str,
        order_req_id: &OrderId,
        record: &serde_json::Value,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(key) = idempotency {
            if !save_key(&mut *tx, key).await? {
                // Dropping the transaction rolls it back; nothing was written.
                return Ok(false);
            }
        }
        sqlx::query(
            "INSERT INTO order_request_records (side, order_req_id, record) VALUES (?, ?, ?)
             ON CONFLICT (side, order_req_id) DO UPDATE SET record = excluded.record",
        )
        .bind(side)
        .bind(order_req_id.as_str())
        .bind(record.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn request_records(&self, side: &str) -> Result<Vec<RequestRecord>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT order_req_id, record FROM order_request_records WHERE side = ? ORDER BY seq",
        )
        .bind(side)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(order_req_id, record)| {
                Ok(RequestRecord {
                    order_req_id: parse_stored("order request id", &order_req_id)?,
                    record: serde_json::from_str(&record)
                        .map_err(|err| StoreError::Corrupt(format!("request record: {err}")))?,
                })
            })
            .collect()
    }

    async fn request_record(
        &self,
        side: &str,
        order_req_id: &OrderId,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let record: Option<String> = sqlx::query_scalar(
            "SELECT record FROM order_request_records WHERE side = ? AND order_req_id = ?",
        )
        .bind(side)
        .bind(order_req_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        record
            .map(|json| {
                serde_json::from_str(&json)
                    .map_err(|err| StoreError::Corrupt(format!("request record: {err}")))
            })
            .transpose()
    }

    async fn save_locations(&self, locations: &[(OrderId, Location)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for (id, Location { fix, seq }) in locations {
            sqlx::query(
                "INSERT INTO driver_locations (order_id, latitude, longitude, accuracy, at, seq)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (order_id) DO UPDATE SET latitude = excluded.latitude,
                     longitude = excluded.longitude, accuracy = excluded.accuracy,
                     at = excluded.at, seq = excluded.seq
                 WHERE driver_locations.at < excluded.at",
            )
            .bind(id.as_str())
            .bind(fix.latitude)
            .bind(fix.longitude)
            .bind(fix.accuracy)
            .bind(fix.at.to_string())
            .bind(location_seq_to_db(*seq))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn location(&self, id: &OrderId) -> Result<Option<Location>, StoreError> {
        let row: Option<(f64, f64, Option<f64>, String, i64)> = sqlx::query_as(
            "SELECT latitude, longitude, accuracy, at, seq FROM driver_locations
             WHERE order_id = ?",
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
                    at: parse_stored("location time", &at)?,
                },
                seq: location_seq_from_db(seq)?,
            })
        })
        .transpose()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
