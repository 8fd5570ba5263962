//! Starting a real node from its config: QUIC transport, node, failure
//! detector, and the HTTP endpoint when the config has `[http]`.

use std::net::SocketAddr;
use std::sync::Arc;

use troupe_framework::storage::{DurableStore, MemoryStore, RedbStore, StoreOptions};
use troupe_framework::Node;
use troupe_transports::certs::NodeTls;
use troupe_transports::quic::QuicTransport;

use crate::config::Config;
use troupe_framework::death_watch::DeathWatch;
use troupe_framework::receptionist::Receptionist;

use crate::dashboard::AppPanelRegistry;
use crate::failure_detector::{start_failure_detector_with, FailureDetectorHandle};
use crate::http::{AppRouteRegistry, HttpEndpoint};
use crate::Error;

/// A node started from a [`Config`], with its transport and failure detector.
pub struct RunningNode {
    /// The node.
    pub node: Node,
    /// Its QUIC transport.
    pub transport: Arc<QuicTransport>,
    /// Its failure detector (feeding `node.membership()`).
    pub failure_detector: FailureDetectorHandle,
    /// Its HTTP endpoint (when the config has `[http]`).
    pub http: Option<HttpEndpoint>,
    /// Its receptionist: cluster-wide discovery and pub/sub topics
    /// ([`troupe_framework::receptionist`], [`troupe_framework::pubsub`]).
    pub receptionist: Receptionist,
    /// Its death-watch of actors on any node
    /// ([`troupe_framework::death_watch`]).
    pub death_watch: DeathWatch,
    /// The config it was started from.
    pub config: Config,
}

/// What [`start_node_with`] adds to the config.
#[derive(Clone, Default)]
pub struct StartOptions {
    /// The applications' HTTP routes, mounted under `/v1/<app>/` when the
    /// config has `[http]` (ignored otherwise).
    pub app_routes: AppRouteRegistry,
    /// The applications' dashboard panels ([`crate::dashboard`]).
    pub app_panels: AppPanelRegistry,
    /// The kinds other nodes may spawn here ([`crate::remote_spawn`]).
    pub spawn_kinds: crate::remote_spawn::SpawnKinds,
}

impl RunningNode {
    /// The UDP address the node listens on (useful when the config said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    /// The TCP address of the HTTP endpoint, if it runs (useful when the
    /// config said port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpEndpoint::local_addr)
    }

    /// The URL of the HTTP endpoint, if it runs: `https://ADDR` with
    /// `[http] client_certs`, else `http://ADDR`.
    pub fn http_url(&self) -> Option<String> {
        self.http.as_ref().map(HttpEndpoint::url)
    }

    /// Leave the group gracefully, then stop the HTTP endpoint and the node.
    pub async fn shutdown(&self) {
        let _ = self.failure_detector.leave().await;
        // Give the leave announcement a moment to go out before closing.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if let Some(http) = &self.http {
            http.stop().await;
        }
        self.node.shutdown();
    }
}

/// Why [`RunningNode::run_until_signal`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// SIGTERM or SIGINT (Ctrl-C): the node left its group and stopped.
    Signal,
    /// The node stopped by itself: a supervisor gave up and the failure
    /// reached the node (its log says which).
    Failure,
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM (on non-Unix systems:
/// Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

impl RunningNode {
    /// Serve until SIGTERM or SIGINT, then leave the group gracefully (the
    /// other nodes see this one `Left`, not `Down`) and stop; or until the
    /// node stops by itself. What an embedding program's `main` ends with.
    pub async fn run_until_signal(&self) -> Stopped {
        tokio::select! {
            _ = shutdown_signal() => {
                tracing::info!(node = %self.node.id(), "signal received; leaving the group and stopping");
                self.shutdown().await;
                Stopped::Signal
            }
            _ = self.node.stopped() => Stopped::Failure,
        }
    }
}

/// Start a node from `config`: check its TLS files, bind QUIC, start the
/// node with its durable store (`<data_dir>/troupe.redb` and
/// `troupe.journal.redb`, or in memory without a `data_dir`), start the
/// configured failure detector and, with `[http]`, the HTTP endpoint. Call
/// inside an actix system.
///
/// Before anything starts, the `[tls]` files are checked (unless
/// `insecure_dev_mode`): the key must be readable by its owner only and
/// belong to the certificate, which must chain to the CA, name this node
/// and be valid now ([`troupe_transports::quic::check_tls_files`]). Errors
/// about the config, these files and the `listen` addresses (a port
/// already in use) are [`Error::Config`] naming the config file, the line
/// and the key (see [`Config::locate`]); `troupe node` prints them as they
/// are.
pub async fn start_node(config: Config) -> Result<RunningNode, Error> {
    start_node_with(config, StartOptions::default()).await
}

/// [`start_node`] with the applications' HTTP routes.
pub async fn start_node_with(config: Config, options: StartOptions) -> Result<RunningNode, Error> {
    match start(&config, options).await {
        Ok(Started {
            node,
            transport,
            failure_detector,
            http,
            receptionist,
            death_watch,
        }) => Ok(RunningNode {
            node,
            transport,
            failure_detector,
            http,
            receptionist,
            death_watch,
            config,
        }),
        Err(e) => Err(config.locate(e)),
    }
}

/// Checks the `[tls]` files of `config`; an error starts with the key of
/// the file it is about (`tls.key: ...`).
fn check_tls(config: &Config) -> Result<(), Error> {
    use troupe_transports::certs::CertError;
    use troupe_transports::quic::{check_tls_files, QuicError};
    let tls = &config.tls;
    let (Some(ca), Some(cert), Some(key)) = (&tls.ca, &tls.cert, &tls.key) else {
        return Ok(()); // validate() requires them outside insecure mode
    };
    if tls.insecure_dev_mode {
        return Ok(());
    }
    check_tls_files(&config.name, ca, cert, key).map_err(|e| {
        let file = match &e {
            QuicError::KeyPermissions { .. } | QuicError::KeyMismatch { .. } => "key",
            QuicError::Cert(CertError::Io { path, .. } | CertError::BadPem { path, .. }) => {
                [("ca", ca), ("key", key)]
                    .into_iter()
                    .find(|(_, p)| *p == path)
                    .map_or("cert", |(k, _)| k)
            }
            _ => "cert",
        };
        Error::Config(format!("tls.{file}: {e}"))
    })
}

/// The node's TLS material for its HTTPS endpoint (`[http] client_certs`;
/// `None` otherwise), read before anything starts.
fn https_tls(config: &Config) -> Result<Option<NodeTls>, Error> {
    if !config.http.as_ref().is_some_and(|h| h.client_certs) {
        return Ok(None);
    }
    let tls = &config.tls;
    match (&tls.ca, &tls.cert, &tls.key) {
        (Some(ca), Some(cert), Some(key)) if !tls.insecure_dev_mode => {
            troupe_transports::certs::load_node_tls(ca, cert, key)
                .map(Some)
                .map_err(|e| {
                    Error::Config(format!("http.client_certs: the node's [tls] files: {e}"))
                })
        }
        // validate() refuses this; said again for a config built in code.
        _ => Err(Error::Config(
            "http.client_certs = true needs the node's [tls] ca, cert and key".to_string(),
        )),
    }
}

/// The parts of a started node; errors not yet located in the config.
struct Started {
    node: Node,
    transport: Arc<QuicTransport>,
    failure_detector: FailureDetectorHandle,
    http: Option<HttpEndpoint>,
    receptionist: Receptionist,
    death_watch: DeathWatch,
}

async fn start(config: &Config, options: StartOptions) -> Result<Started, Error> {
    config.validate()?;
    check_tls(config)?;
    let http_tls = https_tls(config)?;
    let incarnation = uuid::Uuid::new_v4();
    let quic = config.quic_config(incarnation.to_string())?;
    // Storage first: a bad `data_dir` stops the node before it touches the
    // network, with an error that names the key.
    let store: Arc<dyn DurableStore> = match &config.data_dir {
        Some(dir) => Arc::new(
            RedbStore::open_dir_with(
                dir,
                StoreOptions {
                    group_commit: config.storage.group_commit,
                    ..StoreOptions::default()
                },
            )
            .map_err(|e| {
                Error::Config(format!(
                    "data_dir {:?} cannot hold the node's state: {e}",
                    dir
                ))
            })?,
        ),
        None => Arc::new(MemoryStore::new()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(config.runtime.inbound_queue);
    let transport = Arc::new(QuicTransport::bind(quic, tx).await.map_err(|e| match e {
        // Port in use, or an address this host does not have.
        e @ troupe_transports::quic::QuicError::Bind { .. } => {
            Error::Config(format!("listen: {e}"))
        }
        e => Error::Transport(e.to_string()),
    })?);
    let mut builder = Node::builder(config.node_config())
        .incarnation(incarnation.as_u128())
        .store(store);
    if let Some(t) = &config.trace {
        let sink = troupe_framework::trace::FileTraceSink::open(&t.file, t.rotation(), t.format)
            .map_err(|e| {
                Error::Config(format!(
                    "trace.file: cannot append to {}: {e}",
                    t.file.display()
                ))
            })?;
        builder = builder.trace(Arc::new(sink));
    }
    let node = builder.start(transport.clone(), rx)?;
    let failure_detector = start_failure_detector_with(
        &node,
        &config.failure_detector,
        &config.peer_names(),
        config.seeds.is_some(),
    )
    .await?;
    if config.seeds.is_some() {
        if let Err(e) =
            crate::join::start_join(&node, transport.clone(), failure_detector.clone()).await
        {
            node.shutdown();
            return Err(e);
        }
    }
    if let Err(e) = crate::dashboard::start_dashboard(
        &node,
        failure_detector.clone(),
        options.app_panels.clone(),
    )
    .await
    {
        node.shutdown();
        return Err(e);
    }
    if let Err(e) = crate::remote_spawn::start_spawner(&node, options.spawn_kinds.clone()).await {
        node.shutdown();
        return Err(e);
    }
    let services = async {
        let r = Receptionist::start(&node).await?;
        let w = DeathWatch::start(&node).await?;
        Ok::<_, troupe_framework::receptionist::DiscoveryError>((r, w))
    };
    let (receptionist, death_watch) = match services.await {
        Ok(s) => s,
        Err(e) => {
            node.shutdown();
            return Err(Error::Config(format!(
                "the receptionist or death-watch did not start: {e}"
            )));
        }
    };
    let http = match &config.http {
        Some(http) => {
            match crate::http::start(
                http,
                http_tls.as_ref(),
                node.clone(),
                failure_detector.clone(),
                options.app_routes,
                options.app_panels,
            ) {
                Ok(endpoint) => Some(endpoint),
                Err(e) => {
                    // Nothing of this node may outlive the refusal.
                    node.shutdown();
                    return Err(match e {
                        Error::Http(m) => Error::Config(format!("http.listen: {m}")),
                        other => other,
                    });
                }
            }
        }
        None => None,
    };
    tracing::info!(
        node = %node.id(),
        listen = %transport.local_addr(),
        detector = failure_detector.kind(),
        peers = config.peers.len(),
        seeds = config.seeds.as_ref().map_or(0, Vec::len),
        "node up"
    );
    Ok(Started {
        node,
        transport,
        failure_detector,
        http,
        receptionist,
        death_watch,
    })
}
