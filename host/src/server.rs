//! `hookwasm serve`: wires the store, plugins, webhooks, worker and HTTP API together and
//! runs them until shutdown.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::api::{self, AppState};
use crate::config::{Config, StoreBackend};
use crate::delivery::worker::Worker;
use crate::deploy::{CanaryPolicy, Deployer};
use crate::ingest::Backlog;
use crate::metrics::Metrics;
use crate::plugins::{Registry, Runtime};
use crate::reload::{self, Reloader};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, retention};
use crate::webhooks::{Source, Webhook, Webhooks};

/// Runs the server on `listener` until `shutdown` resolves, then stops taking events,
/// lets in-flight deliveries finish (or releases them) and returns. `config_path` is watched
/// for `[[webhooks]]` edits (with `plugins_dir`) unless `server.watch = "off"`.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    let data_dir = config.server.data_dir.clone();
    let keys = crate::sealing::Keys::load(
        crate::sealing::KeySource {
            file: config.server.secret_key_file.as_deref(),
            env: std::env::var("HOOKWASM_SECRET_KEY").ok(),
            name: "the secret key",
        },
        crate::sealing::KeySource {
            file: config.server.previous_secret_key_file.as_deref(),
            env: std::env::var("HOOKWASM_PREVIOUS_SECRET_KEY").ok(),
            name: "the previous secret key",
        },
    )?;
    if keys.is_none() {
        tracing::warn!("no secret key: webhook secrets are stored in the clear ([server] secret_key_file)");
    }
    crate::sealing::install(keys);
    let store: Arc<dyn Store> = match config.store.backend {
        StoreBackend::Sqlite => {
            let store = SqliteStore::open(&data_dir)?;
            tracing::info!(backend = "sqlite", data_dir = %data_dir.display(), "store opened");
            Arc::new(store)
        }
        StoreBackend::Postgres => {
            let url = config.store.url.as_deref().unwrap_or_default();
            let store = PgStore::open(url, config.store.pool).await.context("opening the PostgreSQL store")?;
            if let Some(host_id) = &config.store.host_id {
                let released = store.release_host(host_id).await?;
                if released > 0 {
                    tracing::info!(released, host_id, "released deliveries leased by an earlier run of this host");
                }
            }
            tracing::info!(backend = "postgres", pool = config.store.pool, "store opened");
            Arc::new(store)
        }
    };

    crate::webhooks::reseal_stored_secrets(store.as_ref(), &data_dir).await?;
    let disabled = store.disabled_webhooks().await?.into_iter().map(|(id, d)| (id, (d.url, d.reason))).collect();
    let mut webhooks = config
        .webhooks
        .iter()
        .cloned()
        .map(|webhook| Webhook::resolve(webhook, Source::Config, &data_dir))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let shared_store = config.store.backend == StoreBackend::Postgres;
    let secret_files = (!shared_store).then_some(data_dir.as_path());
    let config_ids = webhooks.iter().map(|w| w.config.id.clone()).collect();
    webhooks.extend(crate::webhooks::from_stored_rows(&store.stored_webhooks().await?, &config_ids, secret_files));
    let webhooks = Arc::new(Webhooks::new(webhooks, disabled));
    for webhook in webhooks.all().iter() {
        if let Some(reason) = webhooks.disabled_reason(webhook) {
            tracing::warn!(webhook = webhook.config.id, reason, "webhook is disabled until its url changes");
        }
    }

    let runtime = Arc::new(Runtime::new(config.plugin_limits(), Some(data_dir.join("cache")))?);
    let registry = Arc::new(Registry::new(runtime));
    let metrics = Arc::new(Metrics::new());
    let plugins_dir = config.server.plugins_dir.clone();
    std::fs::create_dir_all(&plugins_dir).with_context(|| format!("creating {}", plugins_dir.display()))?;
    let (ops, happenings) = crate::ops::Ops::new();
    let wake = Arc::new(Notify::new());
    let deployer = Arc::new(Deployer::new(
        store.clone(),
        registry.clone(),
        webhooks.clone(),
        metrics.clone(),
        ops.clone(),
        wake.clone(),
        config.plugins.keep_versions,
        CanaryPolicy {
            max_extra_held: config.plugins.canary_max_extra_held,
            min_calls: config.plugins.canary_min_calls,
        },
    ));
    // The folder's files first (each a deploy by `file` if the store has not seen it), then
    // whatever the store says serves.
    for (name, path) in crate::plugins::plugin_files(&plugins_dir) {
        deployer.file_changed(&name, &path).await;
    }
    deployer.apply().await.context("loading the serving plugin versions from the store")?;

    // Unique per start: a restarted host must not take its previous run's leases for its own.
    let owner = crate::model::new_id(config.store.host_id.as_deref().unwrap_or("worker"));
    // How other hosts sharing the store list this one.
    let host_name = config.store.host_id.clone().unwrap_or_else(|| owner.clone());
    let worker = Arc::new(Worker::new(
        store.clone(),
        webhooks.clone(),
        registry.clone(),
        config.delivery.clone(),
        wake.clone(),
        metrics.clone(),
        owner,
        ops.clone(),
    )?);
    let (stop, stopped) = watch::channel(false);
    let timeline = Arc::new(crate::timeline::Timeline::new(metrics.clone()));
    let timeline_task = tokio::spawn(timeline.clone().run(stopped.clone()));
    let worker_task = tokio::spawn(worker.clone().run(stopped.clone()));
    let trim_task = tokio::spawn(crate::allocator::give_back_freed(stopped.clone()));
    let backlog = Arc::new(Backlog::new(config.delivery.max_backlog));
    let backlog_task = tokio::spawn(backlog.clone().run(store.clone(), metrics.clone(), stopped.clone()));
    let retention_task =
        tokio::spawn(retention::run(store.clone(), config.store.retention, metrics.clone(), stopped.clone()));
    let signals = store.change_signals();
    let sync_task = signals.clone().map(|signals| {
        let sync = crate::sync::run(store.clone(), webhooks.clone(), signals, wake.clone(), stopped.clone());
        tokio::spawn(sync)
    });
    let presence_task = shared_store.then(|| {
        tokio::spawn(crate::presence::run(store.clone(), registry.clone(), host_name.clone(), stopped.clone()))
    });
    let follow_task = tokio::spawn(crate::deploy::follow(
        deployer.clone(),
        signals.as_ref().map(|s| s.plugins.clone()),
        stopped.clone(),
    ));
    let reloader = Arc::new(Reloader {
        deployer: deployer.clone(),
        registry: registry.clone(),
        webhooks: webhooks.clone(),
        store: store.clone(),
        wake: wake.clone(),
        config: std::sync::Mutex::new(config.clone()),
        config_path,
    });
    let watch_task = reload::spawn(
        reloader,
        config.server.plugins_dir.clone(),
        config.server.watch,
        config.server.poll_interval,
        stopped,
    )?;

    let state = AppState {
        store,
        webhooks,
        registry,
        deployer,
        wake,
        metrics,
        backlog,
        worker,
        delivery: config.delivery.clone(),
        shared_store,
        host_name,
        data_dir: data_dir.clone(),
        ingest_token: config.server.ingest_token.clone(),
        admin_token: config.server.admin_token.clone(),
        max_body_bytes: config.server.max_body_bytes,
        max_plugin_bytes: config.plugin_limits().plugin_file_bytes,
        timeline,
    };
    let ops_state = state.clone();
    tokio::spawn(crate::ops::run(happenings, crate::ops::COALESCE, move |event| {
        let state = ops_state.clone();
        async move {
            let (id, event_type) = (event.id.clone(), event.event_type.clone());
            match crate::ingest::accept(&state, event).await {
                Ok(_) => tracing::debug!(event = id, event_type, "operational event stored"),
                Err(error) => {
                    tracing::warn!(event = id, event_type, error = error.message, "operational event not stored")
                }
            }
        }
    }));
    let address = listener.local_addr()?;
    if config.server.admin_token.is_none() {
        tracing::warn!(%address, "no admin_token configured: the admin API answers loopback clients only");
    }
    tracing::info!(%address, "listening");
    ready(address);
    serve_http(listener, api::router(state), shutdown).await;
    tracing::info!("shutting down: no longer taking events; finishing in-flight deliveries");
    let _ = stop.send(true);
    worker_task.await.context("delivery worker")?;
    watch_task.await.context("file watcher")?;
    follow_task.await.context("plugin versions")?;
    timeline_task.await.context("timeline")?;
    backlog_task.await.context("backlog counter")?;
    retention_task.await.context("retention sweep")?;
    trim_task.await.context("allocator trim")?;
    if let Some(sync_task) = sync_task {
        sync_task.await.context("webhook sync")?;
    }
    if let Some(presence_task) = presence_task {
        presence_task.await.context("host report")?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Slowest a client may be to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a request may take, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (line and headers) accepted.
const MAX_HEAD_BYTES: usize = 64 << 10;
/// How long shutdown waits for open requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` until `shutdown`, with limits against slow or oversized clients, then
/// waits (up to [`DRAIN_TIMEOUT`]) for open requests to finish.
async fn serve_http(listener: TcpListener, router: axum::Router, shutdown: impl Future<Output = ()>) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt;

    let router = router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        REQUEST_TIMEOUT,
    ));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(MAX_HEAD_BYTES);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(MAX_HEAD_BYTES as u32);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = router.clone().map_request(move |mut request: axum::http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            request
        });
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(stream),
                hyper_util::service::TowerToHyperService::new(service),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown: some HTTP requests did not finish in time");
    }
}
