//! Opening the connection to one upstream: TCP with TCP_NODELAY, then TLS (rustls with the ring
//! provider) when the address says `tls://`. Both steps are bounded by `connect_timeout_secs`;
//! the TLS configuration is built once from `[sync.tls]` and shared by every dial.

use std::sync::Arc;
use std::time::Duration;

use super::BoxStream;
use crate::config::{SyncConfig, TlsConfig, Upstream};
use crate::error::SyncError;

/// Builds the rustls client configuration (ring provider) from `[sync.tls]`.
pub fn tls_config(t: Option<&TlsConfig>) -> Result<Arc<rustls::ClientConfig>, SyncError> {
    let tls_err = |e: String| SyncError::Tls(e);
    let mut roots = rustls::RootCertStore::empty();
    match t.and_then(|t| t.ca_file.as_ref()) {
        Some(path) => {
            let f = std::fs::File::open(path)
                .map_err(|e| tls_err(format!("ca_file {}: {e}", path.display())))?;
            let mut rd = std::io::BufReader::new(f);
            let mut n = 0;
            for c in rustls_pemfile::certs(&mut rd) {
                let c = c.map_err(|e| tls_err(format!("ca_file {}: {e}", path.display())))?;
                roots
                    .add(c)
                    .map_err(|e| tls_err(format!("ca_file {}: {e}", path.display())))?;
                n += 1;
            }
            if n == 0 {
                return Err(tls_err(format!(
                    "ca_file {}: no PEM certificate found",
                    path.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots);
    let cfg = match t.and_then(|t| t.client_cert_file.as_ref().zip(t.client_key_file.as_ref())) {
        Some((cert, key)) => {
            let f = std::fs::File::open(cert)
                .map_err(|e| tls_err(format!("client_cert_file {}: {e}", cert.display())))?;
            let chain: Result<Vec<_>, _> =
                rustls_pemfile::certs(&mut std::io::BufReader::new(f)).collect();
            let chain =
                chain.map_err(|e| tls_err(format!("client_cert_file {}: {e}", cert.display())))?;
            let f = std::fs::File::open(key)
                .map_err(|e| tls_err(format!("client_key_file {}: {e}", key.display())))?;
            let k = rustls_pemfile::private_key(&mut std::io::BufReader::new(f))
                .map_err(|e| tls_err(format!("client_key_file {}: {e}", key.display())))?
                .ok_or_else(|| {
                    tls_err(format!("client_key_file {}: no private key", key.display()))
                })?;
            builder
                .with_client_auth_cert(chain, k)
                .map_err(|e| tls_err(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

async fn timeout<T>(
    d: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, SyncError>>,
) -> Result<T, SyncError> {
    let what = what.to_string();
    futures_lite::future::or(f, async move {
        smol::Timer::after(d).await;
        Err(SyncError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what} timed out after {}s", d.as_secs()),
        )))
    })
    .await
}

/// Opens TCP (and TLS when the address says `tls://`) to one upstream, bounded by the connect timeout.
pub async fn dial(
    up: &Upstream,
    cfg: &SyncConfig,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<BoxStream, SyncError> {
    let d = Duration::from_secs(cfg.connect_timeout_secs);
    let tcp = timeout(d, "tcp connect", async {
        Ok(smol::net::TcpStream::connect((up.host.as_str(), up.port)).await?)
    })
    .await?;
    let _ = tcp.set_nodelay(true);
    if !up.tls {
        return Ok(Box::new(tcp));
    }
    let tls = tls.ok_or_else(|| SyncError::Tls("no TLS configuration".into()))?;
    let name = cfg
        .tls
        .as_ref()
        .and_then(|t| t.server_name.clone())
        .unwrap_or_else(|| up.host.clone());
    let server_name = rustls::pki_types::ServerName::try_from(name.clone())
        .map_err(|e| SyncError::Tls(format!("server name `{name}`: {e}")))?;
    let connector = futures_rustls::TlsConnector::from(tls.clone());
    let stream = timeout(d, "tls handshake", async {
        connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| SyncError::Tls(format!("handshake with {up}: {e}")))
    })
    .await?;
    Ok(Box::new(stream))
}
