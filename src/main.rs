use std::process::ExitCode;

use clap::Parser;
use order_tracker::{app, telemetry, Application, Config};

/// jemalloc keeps its bookkeeping out of the memory it hands out, so the
/// untouched parts of hyper's two 8 KB buffers per connection stay unbacked
/// while a poll is parked. Measured with 10,000 parked polls: 9.2 KB resident
/// per poll, against 13.2 KB with glibc's allocator and 21.6 KB with mimalloc
/// (BENCHMARKS.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start. `background_thread` returns freed
/// pages to the OS after jemalloc's usual decay (10 s) even while the server
/// is idle; without it, the memory of evicted idle orders stays resident
/// until the next burst of allocations (measured in BENCHMARKS.md).
#[cfg(not(target_env = "msvc"))]
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8] = b"background_thread:true\0";

fn main() -> ExitCode {
    let mut config = Config::parse();
    telemetry::init(config.log_format);
    // Every log line names the instance: the span is entered on every
    // runtime thread for its whole life, so each event and request span
    // has it as root.
    let instance_id = config.instance_id();
    config.instance_id = Some(instance_id.clone());
    let root = tracing::info_span!("instance", id = %instance_id);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start({
            let root = root.clone();
            move || std::mem::forget(root.clone().entered())
        })
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let _root = root.enter();
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        app::shutdown_signal().await;
        tracing::info!("shutdown requested; answering parked polls");
        shutdown.cancel();
    });

    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "server failed");
            ExitCode::FAILURE
        }
    }
}
