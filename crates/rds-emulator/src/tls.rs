//! TLS for the REST listener: a self-signed certificate generated on first start and kept in
//! the data directory (an RDS keeps its certificate across reboots), and an axum listener that
//! performs the handshake.

use std::{io, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

const CERT: &str = "rest-cert.pem";
const KEY: &str = "rest-key.pem";

/// The certificate (PEM, DER) and key, loaded or created in `dir`.
pub struct Identity {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    key_pem: String,
}

impl Identity {
    pub fn load_or_create(dir: &Path) -> Result<Identity, String> {
        let (cert_path, key_path) = (dir.join(CERT), dir.join(KEY));
        let (cert_pem, key_pem) = if cert_path.exists() && key_path.exists() {
            let read =
                |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
            (read(&cert_path)?, read(&key_path)?)
        } else {
            let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
            let certified = rcgen::generate_simple_self_signed(names)
                .map_err(|e| format!("certificate: {e}"))?;
            let pair = (certified.cert.pem(), certified.signing_key.serialize_pem());
            std::fs::write(&cert_path, &pair.0)
                .map_err(|e| format!("{}: {e}", cert_path.display()))?;
            std::fs::write(&key_path, &pair.1)
                .map_err(|e| format!("{}: {e}", key_path.display()))?;
            pair
        };
        use rustls::pki_types::pem::PemObject;
        let cert_der = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .next()
            .ok_or("no certificate in PEM")?
            .map_err(|e| format!("certificate PEM: {e}"))?
            .to_vec();
        Ok(Identity { cert_pem, cert_der, key_pem })
    }

    /// SHA-256 of the DER certificate, as `AB:CD:...`.
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.cert_der);
        digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
    }

    pub fn acceptor(&self) -> Result<TlsAcceptor, String> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let cert = CertificateDer::from(self.cert_der.clone());
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| format!("key PEM: {e}"))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| format!("TLS config: {e}"))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// An axum listener that completes the TLS handshake (bounded) before handing over.
pub struct TlsListener {
    pub tcp: TcpListener,
    pub acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.tcp.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "REST accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Answers leave at once instead of waiting for the client's delayed ACK.
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
