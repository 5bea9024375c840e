//! `rds-csi serve`: wires the services, the metrics server and the gRPC endpoint together and
//! runs them until SIGTERM/SIGINT.
//!
//! Shutdown order: stop accepting connections, let in-flight RPCs finish (bounded by
//! `--shutdown-timeout-seconds`), remove our socket file, stop the HTTP server, return.

use std::{future::Future, sync::Arc, time::Duration};

use csi::v1::{
    controller_server::ControllerServer, group_controller_server::GroupControllerServer,
    identity_server::IdentityServer, node_server::NodeServer,
};
use tokio::sync::oneshot;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;

use routeros::client::{Rds, RetryPolicy};

use crate::{
    cli::ServeConfig,
    controller::{Backend, ControllerService},
    endpoint::Endpoint,
    http,
    identity::IdentityService,
    listener::{self, BoundUnixSocket, ListenError},
    metrics::Metrics,
    node::{NodeService, NodeState},
    readiness::{Readiness, ReadyState},
    rpc::RpcRunner,
    version,
};

/// CSI messages can carry large maps (volume context, ListVolumes pages); same limit as the Go driver.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(
        "cannot listen for metrics on {addr}: {source}; pass another --metrics-address or an empty one to disable it"
    )]
    MetricsBind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("RDS connection: {0}")]
    Rds(String),
    #[error("node service: {0}")]
    Node(String),
    #[error("Kubernetes API: {0}")]
    Kubernetes(String),
}

/// Resolves on the first SIGTERM or SIGINT.
pub fn termination_signal() -> Result<impl Future<Output = ()>, ServeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// Attachment fencing with its state source (docs/kubevirt.md).
async fn fencing(
    config: &ServeConfig,
    metrics: crate::metrics::AttachMetrics,
) -> Result<(crate::controller::attachments::Fencing, Election), ServeError> {
    use crate::controller::{
        cluster::{Cluster, MemoryCluster},
        config::AttachmentState,
        kube_cluster::KubeCluster,
        leader::{Elector, Leadership, lease_name},
    };
    let c = &config.controller;
    let state = c.attachment_state.unwrap_or(if config.emulated_rds.is_some() {
        AttachmentState::Memory
    } else {
        AttachmentState::Kubernetes
    });
    let mut election = Election {
        leadership: Leadership::always().report_to(metrics.leader.clone()),
        elector: None,
    };
    let cluster: Box<dyn Cluster> = match state {
        AttachmentState::Memory => {
            tracing::warn!(
                "attachment state in memory: fencing sees only this process's grants (not HA-safe; development only)"
            );
            let mut known_nodes: std::collections::HashSet<String> =
                c.known_node_ids.iter().cloned().collect();
            known_nodes.extend(config.roles.node_id.clone());
            Box::new(MemoryCluster { known_nodes })
        }
        AttachmentState::Kubernetes => {
            let client = kube::Client::try_default().await.map_err(|e| {
                ServeError::Kubernetes(format!(
                    "{e}; the controller reads VolumeAttachments for fencing (outside a cluster, --attachment-state memory)"
                ))
            })?;
            let instance = std::env::var("POD_NAME").ok();
            if let Some(le) = &c.leader_election {
                let namespace = le
                    .namespace
                    .clone()
                    .or_else(|| std::env::var("POD_NAMESPACE").ok().filter(|n| !n.is_empty()))
                    .ok_or_else(|| {
                        ServeError::Kubernetes(
                            "leader election needs the Lease's namespace: set POD_NAMESPACE (downward API) or --leader-election-namespace, or turn it off with --leader-election=false (one replica only)".into(),
                        )
                    })?;
                let identity = instance
                    .clone()
                    .unwrap_or_else(|| format!("rds-csi-{}", uuid::Uuid::new_v4().simple()));
                let name = lease_name(&config.driver_name);
                tracing::info!(lease = %name, %namespace, %identity, "leader election for the background loops");
                let (elector, leadership) = Elector::reporting(
                    client.clone(),
                    &namespace,
                    &name,
                    &identity,
                    le.timing,
                    Some(metrics.leader.clone()),
                );
                election = Election { leadership, elector: Some(elector) };
            }
            Box::new(KubeCluster::start(client, &config.driver_name, instance))
        }
    };
    if c.storage_fencing {
        tracing::warn!("storage fencing on: disks allow only the attached nodes' host NQNs");
    }
    let fencing = crate::controller::attachments::Fencing::new(
        cluster,
        c.storage_fencing,
        c.attach_settle_s,
        metrics,
    );
    Ok((fencing, election))
}

/// Who runs the controller's background loops: always this process, or the Lease holder.
struct Election {
    leadership: crate::controller::leader::Leadership,
    elector: Option<crate::controller::leader::Elector>,
}

/// The controller's backends: the single-RDS flags' `default` (its segment the zone), then
/// the backends file's.
fn backend_specs(config: &ServeConfig) -> Vec<crate::backends::BackendSpec> {
    let zone_key = crate::names::topology_zone_key(&config.driver_name);
    let mut specs = Vec::new();
    if let Some(rds) = config.rds.clone() {
        let zone = config.topology.get(&zone_key).cloned().unwrap_or_default();
        specs.push(crate::backends::BackendSpec::new(
            crate::core::topology::DEFAULT_BACKEND,
            rds,
            &config.controller,
            std::collections::HashMap::from([(zone_key, zone)]),
            config.rds_probe_interval,
        ));
    }
    specs.extend(config.backends.iter().cloned());
    specs
}

/// `--emulated-rds DIR`: one emulated RDS (backend `default`), or with `--emulated-backends
/// N` (2+) the appliances `rds-a`, `rds-b`, ... in zones `a`, `b`, ..., each with its state
/// in DIR/<name>; the node's loop plane then finds each one's files by the volume's backend.
async fn start_emulated(
    config: &mut ServeConfig,
) -> Result<Vec<crate::emulated::EmulatedRds>, ServeError> {
    let Some(dir) = config.emulated_rds.clone() else { return Ok(Vec::new()) };
    if config.emulated_backends <= 1 {
        let e = crate::emulated::start(&dir, config.emulated_rds_nvmet)
            .await
            .map_err(ServeError::Rds)?;
        tracing::info!(dir = %dir.display(), ssh = %e.ssh_address, files = %e.files.display(), "emulated RDS running in this process");
        config.rds = Some(e.rds.clone());
        return Ok(vec![e]);
    }
    let zone_key = crate::names::topology_zone_key(&config.driver_name);
    let mut out = Vec::new();
    let mut roots = std::collections::HashMap::new();
    for i in 0..config.emulated_backends {
        let zone = char::from(b'a' + i).to_string();
        let name = format!("rds-{zone}");
        let e = crate::emulated::start(&dir.join(&name), None)
            .await
            .map_err(|m| ServeError::Rds(format!("emulated backend {name}: {m}")))?;
        tracing::info!(backend = %name, %zone, ssh = %e.ssh_address, files = %e.files.display(), "emulated RDS running in this process");
        config.backends.push(crate::backends::BackendSpec::new(
            &name,
            e.rds.clone(),
            &config.controller,
            std::collections::HashMap::from([(zone_key.clone(), zone)]),
            config.rds_probe_interval,
        ));
        roots.insert(name, e.files.clone());
        out.push(e);
    }
    if let Some(node) = &mut config.node {
        node.loop_root = Some(dir.clone());
        node.loop_backend_roots = roots;
    }
    Ok(out)
}

/// Runs the driver until `shutdown` resolves.
pub async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let mut metrics = Metrics::new(version::VERSION);
    let mut config = config;
    // --emulated-rds: the RDS runs in this process; the controller reaches it over SSH.
    let _emulated = start_emulated(&mut config).await?;
    let node_state = match &config.node {
        Some(n) => {
            let mut st =
                NodeState::new(n.clone(), metrics.heal.clone()).map_err(ServeError::Node)?;
            if n.node_events || n.recover_pods || n.topology_from_node_labels {
                let client = kube::Client::try_default().await.map_err(|e| {
                    ServeError::Kubernetes(format!(
                        "{e}; --node-events, --recover-pods and --topology-from-node-labels need the Kubernetes API (turn them off outside a cluster)"
                    ))
                })?;
                let name = config.roles.node_id.clone().unwrap_or_default();
                let k = crate::node::kube::NodeKube::new(client, &name, &config.driver_name);
                if n.topology_from_node_labels {
                    // A node that cannot tell which backends it reaches must not register
                    // with a guess: the scheduler would place volumes it cannot reach.
                    let labels = k.topology_labels().await.map_err(|e| {
                        ServeError::Kubernetes(format!(
                            "{e}; --topology-from-node-labels reads this node's labels topology.{}/* (the node plugin needs `get` on nodes)",
                            config.driver_name
                        ))
                    })?;
                    tracing::info!(?labels, "topology segments from the node's labels");
                    // The flags win for their own keys: kubelet writes the segments a node
                    // reports onto its Node as labels, so such a label is the flag's old value.
                    for (k, v) in labels {
                        config.topology.entry(k).or_insert(v);
                    }
                }
                if n.node_events || n.recover_pods {
                    st.kube = Some(k);
                }
            }
            Some(Arc::new(st))
        }
        None => None,
    };
    let specs = backend_specs(&config);
    // The controller is ready while its RDS connection is up (with several, while one is:
    // readiness::combine); the node has no backend yet.
    let readiness = Readiness::new(match (config.roles.controller, specs.is_empty()) {
        (false, _) => ReadyState::Ready,
        (true, false) => ReadyState::NotReady("connecting to the RDS".into()),
        (true, true) => ReadyState::NotReady(
            "no RDS configured: pass --rds-address (SSH), --rds-transport rest --rds-rest-url, or --backends-file"
                .into(),
        ),
    });
    let mut fleet = None;
    let mut background: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut release = None;
    let mut _connections = Vec::new();
    if config.roles.controller && !specs.is_empty() {
        let (fenced, election) = fencing(&config, metrics.attach.clone()).await?;
        let fenced = Arc::new(fenced);
        let single = specs.len() == 1;
        let mut members = Vec::new();
        let mut parts = Vec::new();
        for spec in specs {
            let own = if single {
                readiness.clone()
            } else {
                Readiness::new(ReadyState::NotReady("connecting to the RDS".into()))
            };
            let host = spec.rds.host();
            let conn = spec
                .rds
                .start(own.clone(), spec.probe_interval)
                .map_err(|e| ServeError::Rds(format!("backend {}: {e}", spec.name)))?;
            if single {
                metrics.register_rds(&conn.health);
            } else {
                metrics.register_rds_backend(&conn.health, &spec.name);
            }
            let client = Rds::new(conn.transport.clone(), RetryPolicy::default());
            let mut backend_value = Backend::new(client, spec.controller, host, spec.segments);
            backend_value.name = spec.name.clone();
            backend_value.weight = spec.weight;
            backend_value.readiness = own.clone();
            backend_value.heal = metrics.heal.clone();
            backend_value.fencing = fenced.clone();
            let b = Arc::new(backend_value);
            // Learn the RouterOS version early so CreateVolume does not pay for it.
            let prefetch = b.clone();
            background.push(tokio::spawn(async move {
                while prefetch.server_nqn_supported().await.is_err() {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }));
            // Each backend reconciles its own volumes (by the leader only, with replicas).
            background.push(tokio::spawn(crate::controller::reconcile::run(
                Arc::downgrade(&b),
                election.leadership.clone(),
                config.controller.reconcile.clone(),
            )));
            tracing::info!(backend = %spec.name, rds = %b.rds_host, segments = ?b.topology, weight = b.weight, "RDS backend");
            parts.push((spec.name, own));
            members.push(b);
            _connections.push(conn);
        }
        if !single {
            background.push(crate::readiness::mirror_combined(parts, readiness.clone()));
        }
        if let Some(elector) = election.elector {
            release = Some(elector.release_handle());
            background.push(tokio::spawn(elector.run()));
        }
        // Expired migration windows are reported even when nothing else happens; the
        // attachment state is one for all backends, so one sweep.
        background.push(tokio::spawn(crate::controller::sweep::run(
            Arc::downgrade(&members[0]),
            election.leadership,
            crate::controller::sweep::SWEEP_INTERVAL,
        )));
        fleet = Some(Arc::new(crate::controller::Fleet::new(members)));
    }
    if let Some(st) = &node_state {
        if let Some(every) = st.cfg.orphan_interval {
            background.push(tokio::spawn(crate::node::orphans::run(Arc::downgrade(st), every)));
        }
        if let Some(every) = st.cfg.health_interval {
            background.push(tokio::spawn(crate::node::recovery::run(Arc::downgrade(st), every)));
        }
    }
    let metrics = Arc::new(metrics);
    let rpc = RpcRunner::new(metrics.rpc.clone());

    let (http_stop, http_stopped) = oneshot::channel::<()>();
    let http_task = match config.metrics_address {
        Some(addr) => {
            let listener = http::bind(addr)
                .await
                .map_err(|source| ServeError::MetricsBind { addr, source })?;
            let bound =
                listener.local_addr().map_err(|source| ServeError::MetricsBind { addr, source })?;
            tracing::info!(address = %bound, "metrics server listening (/metrics, /healthz, /readyz)");
            let router = http::router(metrics.clone(), readiness.clone());
            Some(tokio::spawn(http::serve(listener, router, async {
                let _ = http_stopped.await;
            })))
        }
        None => {
            tracing::info!("metrics server disabled (empty --metrics-address)");
            None
        }
    };

    let identity = IdentityService {
        driver_name: config.driver_name.clone(),
        controller_enabled: config.roles.controller,
        readiness: readiness.clone(),
        rpc: rpc.clone(),
    };
    let controller = config.roles.controller.then(|| {
        ControllerServer::new(ControllerService { rpc: rpc.clone(), fleet: fleet.clone() })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    });
    let group_controller = config.roles.controller.then(|| {
        GroupControllerServer::new(ControllerService { rpc: rpc.clone(), fleet: fleet.clone() })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    });
    let node = config.roles.node_id.clone().zip(node_state).map(|(node_id, state)| {
        NodeServer::new(NodeService {
            node_id,
            topology: config.topology.clone(),
            rpc: rpc.clone(),
            state,
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
    });
    let router = Server::builder()
        .add_service(IdentityServer::new(identity).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_optional_service(controller)
        .add_optional_service(group_controller)
        .add_optional_service(node);

    let (grpc_stop, grpc_stopped) = oneshot::channel::<()>();
    let stop_accepting = async {
        let _ = grpc_stopped.await;
    };
    let mut unix_socket = None;
    let server = match &config.endpoint {
        Endpoint::Unix(path) => {
            let bound = listener::bind_unix(path).await?;
            unix_socket = Some((bound.path.clone(), bound.inode()));
            let incoming = UnixListenerStream::new(bound.listener);
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop_accepting))
        }
        Endpoint::Tcp(addr) => {
            let tcp = listener::bind_tcp(addr).await?;
            let incoming = TcpListenerStream::new(tcp);
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop_accepting))
        }
    };
    tracing::info!(
        endpoint = %config.endpoint,
        driver = %config.driver_name,
        version = version::VERSION,
        controller = config.roles.controller,
        node_id = config.roles.node_id.as_deref().unwrap_or(""),
        "CSI gRPC server listening"
    );

    let mut server = server;
    let outcome = tokio::select! {
        finished = &mut server => Some(finished),
        () = shutdown => None,
    };
    let result = match outcome {
        // The server stopped on its own: that is an error unless it was a clean exit.
        Some(finished) => finished
            .unwrap_or_else(|join| panic!("gRPC server task: {join}"))
            .map_err(ServeError::from),
        None => {
            tracing::info!(
                timeout_s = config.shutdown_timeout.as_secs(),
                "shutting down: no new connections, waiting for in-flight RPCs"
            );
            let _ = grpc_stop.send(());
            match tokio::time::timeout(config.shutdown_timeout, &mut server).await {
                Ok(finished) => finished
                    .unwrap_or_else(|join| panic!("gRPC server task: {join}"))
                    .map_err(ServeError::from),
                Err(_) => {
                    tracing::warn!("in-flight RPCs did not finish in time; abandoning them");
                    server.abort();
                    Ok(())
                }
            }
        }
    };

    // The background loops stop, and the Lease goes at once to another replica.
    for task in background {
        task.abort();
    }
    if let Some((api, name, identity)) = release {
        crate::controller::leader::Elector::release(&api, &name, &identity, Duration::from_secs(5))
            .await;
    }
    if let Some((path, inode)) = unix_socket {
        match BoundUnixSocket::remove_file(&path, inode) {
            Ok(true) => tracing::info!(path = %path.display(), "socket removed"),
            Ok(false) => {
                tracing::warn!(path = %path.display(), "socket file was replaced by someone else; left in place")
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove socket"),
        }
    }
    let _ = http_stop.send(());
    if let Some(task) = http_task {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "metrics server task failed"),
        }
    }
    result
}
