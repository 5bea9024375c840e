//! Parsing of the addresses the driver listens on. Pure: no I/O.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr};

/// Where the CSI gRPC server listens (`--endpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:///absolute/path.sock`: what kubelet and the CSI sidecars use.
    Unix(PathBuf),
    /// `tcp://host:port`: for debugging with a gRPC client; never expose it beyond the host.
    Tcp(String),
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hint = "expected unix:///absolute/path/csi.sock or tcp://host:port";
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!("endpoint {s:?} has a relative socket path; {hint}"));
            }
            if path.ends_with('/') {
                return Err(format!("endpoint {s:?} names a directory, not a socket file; {hint}"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp://") {
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| format!("endpoint {s:?} has no port; {hint}"))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("endpoint {s:?} needs a host and a numeric port; {hint}"));
            }
            return Ok(Endpoint::Tcp(addr.to_string()));
        }
        Err(format!("endpoint {s:?} has an unknown scheme; {hint}"))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// Parses `--metrics-address`: empty disables the HTTP server, `:PORT` listens on every
/// address (as the Go driver's `:9809` default did), otherwise `HOST:PORT` with an IP host.
pub fn parse_metrics_address(s: &str) -> Result<Option<SocketAddr>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let full = if s.starts_with(':') { format!("0.0.0.0{s}") } else { s.to_string() };
    full.parse::<SocketAddr>().map(Some).map_err(|_| {
        format!(
            "invalid metrics address {s:?}: expected :PORT, IP:PORT (e.g. 127.0.0.1:9809, \
             [::1]:9809) or an empty string to disable the metrics server"
        )
    })
}

/// A gRPC channel to a unix socket (the demo's client side), connecting within 5 s.
pub async fn unix_channel(socket: &std::path::Path) -> Result<tonic::transport::Channel, String> {
    let socket = socket.to_path_buf();
    tonic::transport::Endpoint::try_from("http://[::1]:50051")
        .map_err(|e| e.to_string())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unix_and_tcp() {
        assert_eq!(
            "unix:///run/csi/csi.sock".parse(),
            Ok(Endpoint::Unix("/run/csi/csi.sock".into()))
        );
        assert_eq!("tcp://127.0.0.1:10000".parse(), Ok(Endpoint::Tcp("127.0.0.1:10000".into())));
        assert_eq!("tcp://[::1]:10000".parse(), Ok(Endpoint::Tcp("[::1]:10000".into())));
        let e: Endpoint = "unix:///a/b.sock".parse().unwrap();
        assert_eq!(e.to_string(), "unix:///a/b.sock");
    }

    #[test]
    fn rejects_bad_endpoints_with_the_expected_form() {
        for bad in [
            "unix://relative.sock",
            "unix:///dir/",
            "tcp://host",
            "tcp://:80",
            "tcp://h:x",
            "/x.sock",
            "",
        ] {
            let err = bad.parse::<Endpoint>().unwrap_err();
            assert!(err.contains("unix:///absolute/path/csi.sock"), "{bad}: {err}");
        }
    }

    #[test]
    fn metrics_address_forms() {
        assert_eq!(parse_metrics_address(""), Ok(None));
        assert_eq!(parse_metrics_address(":9809"), Ok(Some("0.0.0.0:9809".parse().unwrap())));
        assert_eq!(parse_metrics_address("127.0.0.1:0"), Ok(Some("127.0.0.1:0".parse().unwrap())));
        assert!(parse_metrics_address("localhost:9809").unwrap_err().contains("IP:PORT"));
        assert!(parse_metrics_address("9809").is_err());
    }
}
