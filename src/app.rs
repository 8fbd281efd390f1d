//! Building the application, serving it, and shutting it down in bounded time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, App, AppState};
use crate::config::{Config, ConfigError};
use crate::location::LocationService;
use crate::orders::{Clock, Instance, OrderService, ServiceError};
use crate::partners::{Credentials, Webhooks};
use crate::requests::{InProcessLink, Processor, Requestor};
use crate::serve;
use crate::sim::Simulator;
use crate::store::StoreError;
use crate::ticks::Ticks;
use crate::tracking::Hub;

/// How often idempotency keys past their 24 hours are deleted.
const KEY_PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot resolve address {addr}: {source}")]
    Resolve {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot create the sample orders: {0}")]
    Service(#[from] ServiceError),
}

/// Every part of the application but the socket: what [`Application::build`]
/// serves, and what a simulation drives directly (`tower::ServiceExt::oneshot`
/// on [`Parts::app`]) in virtual time, where real sockets cannot follow.
pub struct Parts {
    /// Every route, inside the layers every request passes through.
    pub app: App,
    /// The one write path and the reads.
    pub service: OrderService,
    /// The order-request requestor, whose state outlives HTTP on shutdown.
    pub requestor: Requestor,
    /// Cancelled to stop: parked polls answer, simulations and processing
    /// streams stop, serving ends.
    pub shutdown: CancellationToken,
    /// Background tasks (simulations, processing streams) to wait for on
    /// shutdown.
    pub tracker: TaskTracker,
}

impl Parts {
    /// Builds the store, hub, service, simulator, requestor, processor and
    /// routes from `config`,
    /// stamping orders with `clock`, and seeds the sample orders unless told
    /// not to.
    pub async fn build(config: &Config, clock: Clock) -> Result<Parts, StartupError> {
        let timeouts = config.timeouts()?;
        let policy = config.policy()?;
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();

        let store = crate::store::open(&config.database_url, config.db_pool_size).await?;
        tracing::info!(backend = store.backend(), "store open");
        let hub = Hub::new(config.limits(), shutdown.clone());
        let instance = Instance {
            id: config.instance_id(),
            lease_ttl: config.lease_ttl,
        };
        let service = OrderService::new(Arc::clone(&store), hub, policy, timeouts, clock, instance);
        // Before the feed starts: it hands other instances' fixes to it.
        let locations = LocationService::start(
            service.clone(),
            store,
            config.location_write_interval,
            config.idle_eviction(),
            &tracker,
            shutdown.clone(),
        );
        service
            .start_feed(config.sweep_interval, shutdown.clone())
            .await?;
        tracker.spawn(maintain(
            service.clone(),
            config.idle_eviction(),
            shutdown.clone(),
        ));
        if !config.no_sample_orders {
            service.seed_samples().await?;
        }
        let simulator = Simulator::new(
            service.clone(),
            locations.clone(),
            tracker.clone(),
            shutdown.clone(),
        );
        match simulator.resume().await {
            Ok(0) => {}
            Ok(resumed) => tracing::info!(resumed, "workflow simulations resumed"),
            Err(err) => tracing::error!(error = %err, "cannot resume workflow simulations"),
        }
        // Both sides' order-request records are loaded whole (one query
        // each): they are diagnostics lists the API shows in full anyway.
        let processor = Processor::load(service.clone(), tracker.clone(), shutdown.clone()).await?;
        let requestor = Requestor::load(
            service.clone(),
            Arc::new(InProcessLink::new(processor.clone())),
            tracker.clone(),
            shutdown.clone(),
            config.processing_speed,
        )
        .await?;
        match requestor.resume().await {
            Ok(0) => {}
            Ok(resumed) => tracing::info!(resumed, "order-request processing streams resumed"),
            Err(err) => {
                tracing::error!(error = %err, "cannot resume order-request processing streams")
            }
        }

        tracker.spawn(heartbeat(
            service.clone(),
            simulator.clone(),
            requestor.clone(),
            shutdown.clone(),
        ));

        let app = api::app(AppState {
            service: service.clone(),
            locations,
            simulator,
            requestor: requestor.clone(),
            processor,
            started: Instant::now(),
            started_at: service.now(),
            retry_after: config.retry_after,
            stats_top_orders: config.stats_top_orders,
            webhooks: Arc::new(Webhooks::new(Credentials {
                uber_secret: config.uber_webhook_secret.clone(),
                doordash_auth: config.doordash_webhook_auth.clone(),
            })),
        });
        Ok(Parts {
            app,
            service,
            requestor,
            shutdown,
            tracker,
        })
    }
}

/// A built application, bound and ready to serve.
pub struct Application {
    /// The bound listening socket.
    listener: TcpListener,
    /// Every route, inside the layers every request passes through.
    app: App,
    /// The address actually bound (port 0 resolved).
    local_addr: SocketAddr,
    /// Cancelled to stop: parked polls answer, simulations stop, serving ends.
    shutdown: CancellationToken,
    /// Background tasks (simulations, processing streams) to wait for on
    /// shutdown.
    tracker: TaskTracker,
    /// Longest wait for connections and tasks to finish on shutdown.
    grace: Duration,
    /// The order service, for callers that embed the application.
    service: OrderService,
    /// The order-request requestor, for callers that embed the application
    /// (tests read its state after shutdown, when HTTP is gone).
    requestor: Requestor,
}

impl Application {
    /// Builds every part on the system clock ([`Parts::build`]) and binds the
    /// listener.
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        let Parts {
            app,
            service,
            requestor,
            shutdown,
            tracker,
        } = Parts::build(&config, Clock::System).await?;
        let listener = bind(&config.addr, config.listen_backlog).await?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartupError::Resolve {
                addr: config.addr.clone(),
                source,
            })?;
        tracing::info!(addr = %local_addr, instance_id = service.instance_id(), backend = service.backend(), "listening");
        Ok(Application {
            listener,
            app,
            local_addr,
            shutdown,
            tracker,
            grace: config.shutdown_grace(),
            service,
            requestor,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Cancel this token to stop the application.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn service(&self) -> &OrderService {
        &self.service
    }

    pub fn requestor(&self) -> &Requestor {
        &self.requestor
    }

    /// Serves until the shutdown token is cancelled, then answers every parked
    /// poll, stops the simulations and processing streams, and waits at most
    /// the grace period for connections and tasks to finish.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let stopping = self.shutdown.clone();
        // The accept loop runs as a task, on a worker thread, rather than
        // wherever this future is polled (the main thread under
        // `#[tokio::main]`): a task spawned from a worker goes to its local
        // queue, while one spawned from outside goes through the runtime's
        // shared queue and wakes a worker each time. That matters when
        // thousands of phones reconnect at once.
        let mut serving =
            tokio::spawn(serve::serve(self.listener, self.app, self.shutdown.clone()));
        let grace = self.grace;
        tokio::select! {
            served = &mut serving => served.map_err(std::io::Error::other)?,
            () = async { stopping.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_secs = grace.as_secs(), "connections still open after the grace period; closing them");
                serving.abort();
            }
        }
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks still running after the grace period; leaving them");
        }
        // What is left recorded as running is for another instance (or the
        // next start) to take over at once, not after the lease.
        if let Err(err) = self.service.release_leases().await {
            tracing::warn!(error = %err, "cannot release this instance's leases; others take over when they expire");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Background upkeep until shutdown: drops idle orders from the hub's cache
/// and forgets expired idempotency keys.
async fn maintain(service: OrderService, idle: Duration, shutdown: CancellationToken) {
    // Often enough that an idle order lives at most a quarter longer than
    // `idle`, and never less often than once a minute.
    let mut evict = tokio::time::interval((idle / 4).min(Duration::from_secs(60)));
    let mut purge = tokio::time::interval(KEY_PURGE_INTERVAL);
    evict.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = evict.tick() => {
                let evicted = service.hub().evict_idle(idle);
                if evicted > 0 {
                    tracing::debug!(evicted, cached = service.hub().cached(), "idle orders evicted");
                }
            }
            _ = purge.tick() => match service.purge_idempotency_keys().await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "expired idempotency keys deleted"),
                Err(err) => tracing::warn!(error = %err, "cannot delete expired idempotency keys"),
            },
        }
    }
}

/// Every third of a lease until shutdown: renews this instance's leases,
/// stops what it no longer holds (stopped elsewhere, or taken over after a
/// lapse), then takes over the runs whose owners' leases expired (another instance
/// died) and retries those that failed to resume.
async fn heartbeat(
    service: OrderService,
    simulator: Simulator,
    requestor: Requestor,
    shutdown: CancellationToken,
) {
    let mut ticks = Ticks::new(service.lease_ttl_duration() / 3, shutdown);
    while ticks.next().await {
        let held = match service.renew_leases().await {
            Ok(held) => held,
            Err(err) => {
                tracing::warn!(error = %err, "cannot renew this instance's leases");
                continue;
            }
        };
        if let Err(err) = simulator.stop_lost(&held).await {
            tracing::warn!(error = %err, "cannot check this instance's simulations");
        }
        if let Err(err) = requestor.stop_lost(&held).await {
            tracing::warn!(error = %err, "cannot check this instance's processing streams");
        }
        match simulator.resume().await {
            Ok(0) => {}
            Ok(taken) => tracing::info!(taken, "workflow simulations taken over"),
            Err(err) => tracing::warn!(error = %err, "cannot take over workflow simulations"),
        }
        match requestor.resume().await {
            Ok(0) => {}
            Ok(taken) => tracing::info!(taken, "order-request processing streams taken over"),
            Err(err) => {
                tracing::warn!(error = %err, "cannot take over order-request processing streams")
            }
        }
    }
}

/// Resolves `addr` and listens on it with a `backlog`-long accept queue.
async fn bind(addr: &str, backlog: u32) -> Result<TcpListener, StartupError> {
    let resolve_error = |source| StartupError::Resolve {
        addr: addr.to_owned(),
        source,
    };
    let target = tokio::net::lookup_host(addr)
        .await
        .map_err(resolve_error)?
        .next()
        .ok_or_else(|| {
            resolve_error(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no address found",
            ))
        })?;
    let bind_error = |source| StartupError::Bind {
        addr: target,
        source,
    };
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(bind_error)?;
    // Lets a restarted server bind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(bind_error)?;
    socket.bind(target).map_err(bind_error)?;
    socket.listen(backlog).map_err(bind_error)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
