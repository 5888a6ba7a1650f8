//! Runs the collector: opens the store, starts retention, serves the API over
//! plain HTTP or HTTPS (rustls, ring provider) until the shutdown future resolves,
//! with a connection cap and header/body read timeouts ([`crate::listener`]).
//! Tells systemd READY=1 once it listens; SIGHUP reloads ([`crate::reload`]); pings
//! the systemd watchdog while the store answers ([`crate::watchdog`]).

use std::future::Future;
use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;

use crate::app::app;
use crate::config::{Settings, TlsFiles};
use crate::listener::ConnectionLimits;
use crate::reload::{ConfigSource, LiveRouter};
use crate::state::{ApiConfig, AppState};
use crate::storage::{self, StoreError};

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("Failed to open the store")]
    Store(#[from] StoreError),
    #[error("Failed to listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to load the TLS certificate {cert} or key {key}")]
    Tls {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("The HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// Opens the store, binds `settings.listen` and serves until `shutdown` resolves;
/// SIGHUP re-reads `source`.
pub async fn run(
    settings: Settings,
    source: ConfigSource,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let store = storage::open(&settings.storage).await?;
    let listener =
        std::net::TcpListener::bind(settings.listen).map_err(|source| ServeError::Bind {
            addr: settings.listen,
            source,
        })?;
    tracing::info!(
        listen = %settings.listen,
        tls = settings.tls.is_some(),
        engine = store.engine().as_str(),
        "Collector listening."
    );
    let state = AppState::new(Arc::clone(&store), ApiConfig::from_settings(&settings));
    let retention = crate::retention::spawn_observed(
        Arc::clone(&store),
        settings.retention.clone(),
        Some(Arc::clone(&state.metrics)),
    );
    let watchdog = crate::watchdog::spawn(Arc::clone(&store));
    let notifier =
        crate::notify::spawn_with_stats(store, &settings.notify, Arc::clone(&state.metrics.notify));
    let live = LiveRouter::new(app(state.clone()));
    // Installed before READY=1, so that a reload right after start cannot kill us.
    let reloader = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangup) => tokio::spawn(crate::reload::on_sighup(
            hangup,
            source,
            settings.clone(),
            state,
            live.clone(),
            notifier,
        )),
        Err(error) => {
            tracing::error!(%error, "No SIGHUP handler: configuration reload is off.");
            tokio::spawn(async move {
                let _notifier = notifier;
                std::future::pending::<()>().await;
            })
        }
    };
    ballast_daemon::systemd::notify(&[ballast_daemon::systemd::NotifyState::Ready]);
    let result = serve_live(
        listener,
        live,
        settings.tls.as_ref(),
        settings.connections.clone(),
        shutdown,
    )
    .await;
    // Aborting the reloader drops the notifier it owns, which aborts its senders.
    reloader.abort();
    retention.abort();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    result
}

/// Serves the API on an already bound listener with the default
/// [`ConnectionLimits`] (tests bind 127.0.0.1:0).
pub async fn serve_listener(
    listener: std::net::TcpListener,
    state: AppState,
    tls: Option<&TlsFiles>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_live(
        listener,
        LiveRouter::new(app(state)),
        tls,
        ConnectionLimits::default(),
        shutdown,
    )
    .await
}

/// Serves whatever router `router` holds at each request, within `limits`
/// ([`crate::listener`]).
pub async fn serve_live(
    listener: std::net::TcpListener,
    router: LiveRouter,
    tls: Option<&TlsFiles>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    listener.set_nonblocking(true).map_err(ServeError::Serve)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(ServeError::Serve)?;
    let acceptor = match tls {
        None => None,
        Some(files) => {
            // Another part of the process may have installed it already: fine either way.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = RustlsConfig::from_pem_file(&files.cert_file, &files.key_file)
                .await
                .map_err(|source| ServeError::Tls {
                    cert: files.cert_file.clone(),
                    key: files.key_file.clone(),
                    source,
                })?;
            Some(crate::listener::tls_acceptor(&config.get_inner()))
        }
    };
    crate::listener::serve(listener, router, acceptor, limits, shutdown)
        .await
        .map_err(ServeError::Serve)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("Shutting down.");
}
