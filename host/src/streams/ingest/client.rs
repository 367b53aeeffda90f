//! A client of the HTTP ingest endpoint (HTTP/1.1 on hyper, one kept-alive
//! connection, TLS with rustls): `tidewater produce` through a running
//! host, `tidewater simulate`, the tests and the benchmark.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;

use super::http::{INGEST_LIMITS_FILE, INGEST_TOKEN_FILE, INGEST_URL_FILE, RequestLimits};

/// Why a request could not be made (an answer with any status is not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not `http://host:port` or `https://host:port`.
    #[error("ingest URL {0:?} is not http://host:port or https://host:port")]
    BadUrl(String),
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(String),
    /// No connection, or it broke before the answer.
    #[error("cannot reach the ingest endpoint at {url}: {message}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
}

/// An answer of the endpoint.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body (a string when it was not JSON).
    pub body: Value,
    /// `Retry-After`, when given.
    pub retry_after: Option<Duration>,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A client of one host's ingest endpoint, on one connection.
pub struct IngestClient {
    url: String,
    authority: String,
    host: String,
    tls: Option<tokio_rustls::TlsConnector>,
    token: Option<String>,
    sender: Option<Sender>,
    limits: RequestLimits,
}

/// A rustls client config (ring provider) trusting the PEM certificates in
/// `ca_file`, or the system's roots.
///
/// # Errors
///
/// When the file cannot be read or holds no certificate.
pub fn client_tls(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{} holds no certificate", path.display()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

impl IngestClient {
    /// A client of `url`, sending `token` as `Authorization: Bearer`, and
    /// for `https` trusting `ca_file` (else the system's roots).
    ///
    /// # Errors
    ///
    /// [`ClientError::BadUrl`], [`ClientError::Tls`].
    pub fn new(
        url: &str,
        token: Option<String>,
        ca_file: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let url = url.trim().trim_end_matches('/').to_owned();
        let (tls, authority) = if let Some(a) = url.strip_prefix("https://") {
            (true, a)
        } else if let Some(a) = url.strip_prefix("http://") {
            (false, a)
        } else {
            return Err(ClientError::BadUrl(url));
        };
        if authority.is_empty() || authority.contains('/') {
            return Err(ClientError::BadUrl(url.clone()));
        }
        let authority = authority.to_owned();
        let host = authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = if tls {
            Some(tokio_rustls::TlsConnector::from(Arc::new(
                client_tls(ca_file).map_err(ClientError::Tls)?,
            )))
        } else {
            None
        };
        Ok(IngestClient {
            url,
            authority,
            host,
            tls,
            token,
            sender: None,
            limits: RequestLimits::default(),
        })
    }

    /// The client of the host running on `data_dir` (the URL, token and
    /// request limits it wrote there), or `None` when it serves no HTTP
    /// ingest.
    ///
    /// # Errors
    ///
    /// As [`IngestClient::new`].
    pub fn discover(data_dir: &Path, ca_file: Option<&Path>) -> Result<Option<Self>, ClientError> {
        let Ok(url) = std::fs::read_to_string(data_dir.join(INGEST_URL_FILE)) else {
            return Ok(None);
        };
        let token = std::fs::read_to_string(data_dir.join(INGEST_TOKEN_FILE))
            .ok()
            .map(|t| t.trim().to_owned());
        let limits = std::fs::read(data_dir.join(INGEST_LIMITS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self::new(url.trim(), token, ca_file).map(|c| Some(Self { limits, ..c }))
    }

    /// What one request to this host may hold: what the host wrote into
    /// its data dir, else `[ingest.http]`'s defaults.
    pub fn limits(&self) -> RequestLimits {
        self.limits
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn connect(&self) -> Result<Sender, ClientError> {
        let fail = |message: String| ClientError::Connect {
            url: self.url.clone(),
            message,
        };
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        macro_rules! handshake {
            ($io:expr) => {{
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new($io))
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                tokio::spawn(conn);
                sender
            }};
        }
        Ok(match &self.tls {
            None => handshake!(tcp),
            Some(connector) => {
                let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| fail(format!("TLS handshake: {e}")))?;
                handshake!(stream)
            }
        })
    }

    /// `POST /v1/topics/{topic}/records?{query}` with `body` of
    /// `content_type`, gzip-compressed first when `gzip`. Reconnects once
    /// when the kept-alive connection was closed.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] when no answer came.
    pub async fn post(
        &mut self,
        topic: &str,
        query: &str,
        body: Vec<u8>,
        content_type: &str,
        gzip: bool,
    ) -> Result<Answer, ClientError> {
        let body = if gzip {
            use std::io::Write;
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let _ = z.write_all(&body);
            z.finish().unwrap_or_default()
        } else {
            body
        };
        let path = if query.is_empty() {
            format!("/v1/topics/{topic}/records")
        } else {
            format!("/v1/topics/{topic}/records?{query}")
        };
        let body = Bytes::from(body);
        for attempt in 0..2 {
            let mut sender = match self.sender.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.connect().await?,
            };
            let mut req = hyper::Request::builder()
                .method("POST")
                .uri(&path)
                .header(hyper::header::HOST, &self.authority)
                .header(hyper::header::CONTENT_TYPE, content_type);
            if gzip {
                req = req.header(hyper::header::CONTENT_ENCODING, "gzip");
            }
            if let Some(t) = &self.token {
                req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let req = req
                .body(Full::new(body.clone()))
                .map_err(|e| ClientError::Connect {
                    url: self.url.clone(),
                    message: e.to_string(),
                })?;
            let sent = match sender.ready().await {
                Ok(()) => sender.send_request(req).await,
                Err(e) => Err(e),
            };
            let resp = match sent {
                Ok(r) => r,
                // A kept-alive connection the server closed: once more on a new one.
                Err(e)
                    if attempt == 0
                        && (e.is_closed() || e.is_canceled() || e.is_incomplete_message()) =>
                {
                    continue;
                }
                Err(e) => {
                    return Err(ClientError::Connect {
                        url: self.url.clone(),
                        message: e.to_string(),
                    });
                }
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Connect {
                    url: self.url.clone(),
                    message: e.to_string(),
                })?
                .to_bytes();
            self.sender = Some(sender);
            let body = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            return Ok(Answer {
                status,
                body,
                retry_after,
            });
        }
        Err(ClientError::Connect {
            url: self.url.clone(),
            message: "the connection closed twice".into(),
        })
    }
}
