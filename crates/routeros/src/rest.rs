//! The REST transport (`/rest/...`, spec §3.1): HTTPS with the certificate pinned (SHA-256
//! fingerprint, or a CA file), or plain HTTP; basic auth; JSON whose values are all strings;
//! a deadline per request just above RouterOS's own 60 s limit, so its `Session closed`
//! answer arrives first.

use std::{path::PathBuf, sync::Arc, time::Duration};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use serde_json::Value;
use tokio::sync::watch;

use crate::{
    error::RosError,
    ops::{Answer, Op, RestCall, parse_rest, rest_calls, rest_error, rest_tolerates},
    transport::{ConnState, Health, Transport},
};

/// How the server's certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsTrust {
    /// SHA-256 of the certificate (DER), hex, colons optional.
    Fingerprint(String),
    /// PEM file of trusted CA certificates (or of the server's own self-signed certificate).
    CaFile(PathBuf),
    /// No check: logged loudly.
    InsecureSkip,
}

#[derive(Clone)]
pub struct RestOptions {
    /// `https://host:port` or `http://host:port` (RouterOS `www-ssl` or `www`).
    pub base_url: String,
    pub user: String,
    pub password: String,
    pub trust: TlsTrust,
    /// Per request; RouterOS stops a request after 60 s.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for RestOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestOptions")
            .field("base_url", &self.base_url)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("trust", &self.trust)
            .finish()
    }
}

impl RestOptions {
    /// Reads the password from a secret file (trailing newline dropped): secrets never come
    /// from flags.
    pub fn password_from_file(path: &std::path::Path) -> Result<String, RosError> {
        std::fs::read_to_string(path).map(|s| s.trim_end_matches(['\r', '\n']).to_string()).map_err(
            |e| {
                RosError::InvalidArgument(format!(
                    "cannot read the RDS password file {}: {e}",
                    path.display()
                ))
            },
        )
    }

    pub fn new(base_url: &str, user: &str, password: &str, trust: TlsTrust) -> RestOptions {
        RestOptions {
            base_url: base_url.trim_end_matches('/').to_string(),
            user: user.to_string(),
            password: password.to_string(),
            trust,
            timeout: Duration::from_secs(65),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Checks the end-entity certificate: by fingerprint, or against CA roots (accepting a
/// certificate that is itself in the CA file, for self-signed RouterOS certificates).
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    fingerprint: Option<Vec<u8>>,
    roots: Vec<Vec<u8>>,
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    insecure: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if self.insecure {
            tracing::warn!(cert_sha256 = hex(digest.as_ref()), "RDS TLS certificate NOT checked");
            return Ok(ServerCertVerified::assertion());
        }
        if let Some(want) = &self.fingerprint {
            return if digest.as_ref() == want.as_slice() {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::General(format!(
                    "the RDS certificate has SHA-256 {}, which does not match the pinned {}; if the RDS certificate was replaced on purpose, update the pin",
                    hex(digest.as_ref()),
                    hex(want)
                )))
            };
        }
        if self.roots.iter().any(|r| r.as_slice() == end_entity.as_ref()) {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.webpki {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(rustls::Error::General("no trust configured".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(trust: &TlsTrust) -> Result<rustls::ClientConfig, RosError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let bad = |m: String| RosError::InvalidArgument(m);
    let mut verifier = Verifier {
        provider: provider.clone(),
        fingerprint: None,
        roots: Vec::new(),
        webpki: None,
        insecure: false,
    };
    match trust {
        TlsTrust::Fingerprint(fp) => {
            let clean: String = fp.chars().filter(|c| c.is_ascii_hexdigit()).collect();
            let bytes = (0..clean.len() / 2)
                .map(|i| u8::from_str_radix(&clean[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| bad(format!("bad certificate fingerprint {fp:?}")))?;
            if bytes.len() != 32 {
                return Err(bad(format!(
                    "certificate fingerprint {fp:?} is not a SHA-256 (64 hex digits)"
                )));
            }
            verifier.fingerprint = Some(bytes);
        }
        TlsTrust::CaFile(path) => {
            use rustls::pki_types::pem::PemObject;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect())
                .map_err(|e| bad(format!("cannot read CA file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(bad(format!("CA file {} holds no certificate", path.display())));
            }
            let mut roots = rustls::RootCertStore::empty();
            for c in &certs {
                // A self-signed end-entity certificate may not be a valid trust anchor; it is
                // still trusted byte for byte below.
                let _ = roots.add(c.clone());
            }
            verifier.roots = certs.iter().map(|c| c.as_ref().to_vec()).collect();
            verifier.webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .ok();
        }
        TlsTrust::InsecureSkip => verifier.insecure = true,
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// The REST transport. Cheap to clone; one connection per request (REST calls are few).
#[derive(Clone)]
pub struct RestTransport {
    opts: Arc<RestOptions>,
    authority: String,
    host: String,
    tls: Option<tokio_rustls::TlsConnector>,
    health: Arc<Health>,
}

impl std::fmt::Debug for RestTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestTransport").field("base_url", &self.opts.base_url).finish()
    }
}

impl RestTransport {
    pub fn new(opts: RestOptions) -> Result<RestTransport, RosError> {
        let (https, rest) = match opts.base_url.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            _ => {
                return Err(RosError::InvalidArgument(format!(
                    "REST URL {:?} must start with https:// or http://",
                    opts.base_url
                )));
            }
        };
        let authority = rest.split('/').next().unwrap_or(rest).to_string();
        let host = authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(h, _)| h)
            .trim_matches(['[', ']'])
            .to_string();
        let authority = if authority.contains(':') {
            authority
        } else {
            format!("{authority}:{}", if https { 443 } else { 80 })
        };
        let tls = https
            .then(|| tls_config(&opts.trust))
            .transpose()?
            .map(|c| tokio_rustls::TlsConnector::from(Arc::new(c)));
        Ok(RestTransport { opts: Arc::new(opts), authority, host, tls, health: Health::new() })
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// One request; 2xx JSON (or `null` for an empty body), else the mapped error.
    pub async fn request(&self, call: &RestCall) -> Result<Value, RosError> {
        self.health.round_trip();
        let result =
            tokio::time::timeout(self.opts.timeout, self.send(call)).await.unwrap_or_else(|_| {
                Err(RosError::Timeout(format!(
                    "no REST answer within {:?} to {} {}",
                    self.opts.timeout, call.method, call.path
                )))
            });
        match &result {
            Err(RosError::Unavailable(reason)) => self.health.down(reason),
            _ => self.health.up(),
        }
        result
    }

    async fn send(&self, call: &RestCall) -> Result<Value, RosError> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            RosError::Unavailable(format!("{what} {}: {e}", self.opts.base_url))
        };
        let tcp = tokio::time::timeout(
            self.opts.connect_timeout,
            tokio::net::TcpStream::connect(&self.authority),
        )
        .await
        .map_err(|_| {
            RosError::Timeout(format!(
                "connecting to {} took longer than {:?}",
                self.authority, self.opts.connect_timeout
            ))
        })?
        .map_err(|e| unavailable("cannot connect to", &e))?;
        // The request and the TLS records go out whole, without waiting for an ACK.
        let _ = tcp.set_nodelay(true);
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.opts.user, self.opts.password));
        let body = call.body.as_ref().map(|b| b.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(call.method)
            .uri(format!("/rest{}", call.path))
            .header(header::HOST, &self.authority)
            .header(header::AUTHORIZATION, format!("Basic {auth}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| RosError::InvalidArgument(format!("bad request {}: {e}", call.path)))?;
        let (status, bytes) = match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone()).map_err(|e| {
                    RosError::InvalidArgument(format!("bad host {}: {e}", self.host))
                })?;
                let stream = tls.connect(name, tcp).await.map_err(|e| {
                    let text = e.to_string();
                    if text.contains("does not match") || text.contains("certificate") {
                        RosError::PermissionDenied(format!(
                            "TLS to {} refused: {text}",
                            self.opts.base_url
                        ))
                    } else {
                        unavailable("TLS handshake with", &e)
                    }
                })?;
                exchange(stream, request).await.map_err(|e| unavailable("REST request to", &e))?
            }
            None => exchange(tcp, request).await.map_err(|e| unavailable("REST request to", &e))?,
        };
        let text = String::from_utf8_lossy(&bytes);
        if !(200..300).contains(&status) {
            return Err(rest_error(status, &text));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| RosError::Unexpected(format!("bad JSON from {} ({e}): {text}", call.path)))
    }
}

/// Sends one HTTP/1.1 request on `io` and reads the whole answer (at most 16 MiB).
async fn exchange<IO>(
    io: IO,
    request: Request<Full<Bytes>>,
) -> Result<(u16, Bytes), Box<dyn std::error::Error + Send + Sync>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let driver = tokio::spawn(conn);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), 16 << 20).collect().await?.to_bytes();
    driver.abort();
    Ok((status, body))
}

#[async_trait::async_trait]
impl Transport for RestTransport {
    async fn call(&self, op: &Op) -> Result<Answer, RosError> {
        let mut bodies = Vec::new();
        for c in rest_calls(op) {
            match self.request(&c).await {
                Ok(v) => bodies.push(v),
                Err(e) if rest_tolerates(op, &c, &e) => bodies.push(Value::Null),
                Err(e) => return Err(e),
            }
        }
        parse_rest(op, &bodies)
    }

    fn name(&self) -> &'static str {
        "rest"
    }

    fn state(&self) -> watch::Receiver<ConnState> {
        self.health.subscribe()
    }

    fn round_trips(&self) -> u64 {
        self.health.round_trips()
    }
}
