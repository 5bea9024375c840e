//! The wrapper every CSI RPC goes through: one tracing span per call (method, volume id,
//! request id), the request logged with its secrets redacted (CSI "Secrets Requirements": a
//! `csi_secret` field MUST NOT be logged), and the per-RPC counter and latency histogram.

use std::{future::Future, sync::Arc, time::Instant};

use csi::CsiRequest;
use tonic::{Code, Request, Response, Status};
use tracing::{Instrument, Level};

use crate::{error::ServiceError, metrics::RpcMetrics, metrics::code_name};

/// RPCs the sidecars call periodically; logged at debug level so they do not drown the log.
const ROUTINE: &[&str] = &[
    "Probe",
    "GetPluginInfo",
    "GetPluginCapabilities",
    "ControllerGetCapabilities",
    "NodeGetCapabilities",
    "NodeGetInfo",
    "NodeGetVolumeStats",
];

/// Shared by the three CSI services.
#[derive(Debug, Clone)]
pub struct RpcRunner {
    metrics: Arc<RpcMetrics>,
}

impl RpcRunner {
    pub fn new(metrics: RpcMetrics) -> Self {
        Self { metrics: Arc::new(metrics) }
    }

    /// Runs `handler` for one RPC named `method` inside its span, logs and measures it.
    pub async fn run<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        request: Request<Req>,
        handler: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: CsiRequest,
        Resp: std::fmt::Debug,
        F: FnOnce(Req) -> Fut,
        Fut: Future<Output = Result<Resp, ServiceError>>,
    {
        let req = request.into_inner();
        let request_id = uuid::Uuid::new_v4().simple().to_string();
        let span = tracing::info_span!(
            "rpc",
            method,
            volume_id = req.volume_id(),
            request_id = %request_id,
        );
        let routine = ROUTINE.contains(&method);
        async move {
            if routine {
                tracing::debug!(request = ?req.redacted(), "request");
            } else {
                tracing::info!(request = ?req.redacted(), "request");
            }
            let started = Instant::now();
            let (result, trips) = routeros::transport::count_round_trips(handler(req)).await;
            let result = result.map_err(Status::from);
            let elapsed = started.elapsed();
            if trips > 0 {
                self.metrics.observe_round_trips(method, trips);
            }
            let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
            self.metrics.observe(method, code, elapsed);
            let millis = elapsed.as_secs_f64() * 1000.0;
            match &result {
                Ok(response) if routine => {
                    tracing::debug!(?response, elapsed_ms = millis, "answered OK")
                }
                Ok(response) => tracing::info!(?response, elapsed_ms = millis, "answered OK"),
                Err(status) => {
                    // A failed RPC is worth a line even when routine; UNIMPLEMENTED is expected
                    // from COs probing optional RPCs and is not a warning.
                    let level_warn = status.code() != Code::Unimplemented;
                    log_failure(level_warn, code_name(status.code()), status.message(), millis);
                }
            }
            result.map(Response::new)
        }
        .instrument(span)
        .await
    }
}

impl RpcRunner {
    /// Answers an RPC this build does not implement with UNIMPLEMENTED (never a fake success).
    pub async fn unimplemented<Req: CsiRequest, Resp: std::fmt::Debug>(
        &self,
        rpc: &'static str,
        request: Request<Req>,
    ) -> Result<Response<Resp>, Status> {
        let version = env!("CARGO_PKG_VERSION");
        self.run(rpc, request, |_| async move { Err(ServiceError::Unimplemented { rpc, version }) })
            .await
    }
}

fn log_failure(warn: bool, code: &str, error: &str, elapsed_ms: f64) {
    if warn {
        tracing::event!(Level::WARN, code, error, elapsed_ms, "answered with an error");
    } else {
        tracing::event!(Level::INFO, code, error, elapsed_ms, "answered with an error");
    }
}
