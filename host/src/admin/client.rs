//! A small client of the admin API (HTTP/1.1 over TCP, on hyper), for the
//! CLI and the tests.

use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;

/// Why a call to the admin API failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not `http://host:port`.
    #[error("admin URL {0:?} is not http://host:port")]
    BadUrl(String),
    /// No connection, or the connection broke.
    #[error("cannot reach the admin API at {url}: {message}")]
    Connect {
        /// The base URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The API answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The stable error code.
        code: String,
        /// The message.
        message: String,
    },
}

/// A client of one host's admin API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    authority: String,
    token: Option<String>,
}

impl Client {
    /// A client of the API at `url` (`http://host:port`), sending `token` on every call.
    ///
    /// # Errors
    ///
    /// [`ClientError::BadUrl`].
    pub fn new(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let base = url.trim().trim_end_matches('/').to_owned();
        let authority = base
            .strip_prefix("http://")
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| ClientError::BadUrl(url.to_owned()))?
            .to_owned();
        Ok(Client {
            base,
            authority,
            token,
        })
    }

    /// The client of the host running on `data_dir` (the URL and token it
    /// wrote there), with `url` and `token` overriding them when given.
    ///
    /// # Errors
    ///
    /// [`ClientError::BadUrl`], or no URL given and none in the data dir.
    pub fn discover(
        data_dir: &Path,
        url: Option<String>,
        token: Option<String>,
    ) -> Result<Self, ClientError> {
        let url = match url {
            Some(u) => u,
            None => std::fs::read_to_string(data_dir.join(super::URL_FILE))
                .map(|s| s.trim().to_owned())
                .map_err(|_| ClientError::Connect {
                    url: "(none)".into(),
                    message: format!(
                        "no --admin URL given and no running host's {} in {}: start `tidewater run --admin 127.0.0.1:7070`, or pass --admin / TIDEWATER_ADMIN_URL",
                        super::URL_FILE,
                        data_dir.display()
                    ),
                })?,
        };
        let token = token.or_else(|| {
            std::fs::read_to_string(data_dir.join(super::TOKEN_FILE))
                .ok()
                .map(|s| s.trim().to_owned())
        });
        Client::new(&url, token)
    }

    /// Calls `method path` with `body` (JSON when `content_type` is
    /// `application/json`); returns the status and the JSON answer.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] when the API cannot be reached.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(u16, Value), ClientError> {
        let connect = |message: String| ClientError::Connect {
            url: self.base.clone(),
            message,
        };
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| connect(e.to_string()))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| connect(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, content_type);
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| connect(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| connect(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| connect(e.to_string()))?
            .to_bytes();
        driver.abort();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, value))
    }

    /// As [`Client::call`], but a status other than 2xx is an error.
    ///
    /// # Errors
    ///
    /// [`ClientError::Api`] with the API's code and message; [`ClientError::Connect`].
    pub async fn ok(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<Value, ClientError> {
        let (status, v) = self.call(method, path, body, content_type).await?;
        if (200..300).contains(&status) {
            return Ok(v);
        }
        Err(ClientError::Api {
            status,
            code: v["error"]["code"].as_str().unwrap_or("unknown").to_owned(),
            message: v["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string()),
        })
    }

    /// `GET path`.
    ///
    /// # Errors
    ///
    /// As [`Client::ok`].
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.ok("GET", path, Vec::new(), "application/json").await
    }

    /// `POST path` with a JSON body.
    ///
    /// # Errors
    ///
    /// As [`Client::ok`].
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.ok(
            "POST",
            path,
            serde_json::to_vec(body).expect("serialisable"),
            "application/json",
        )
        .await
    }

    /// Uploads `wasm` as a version of `processor`, with `query` (e.g.
    /// `activate=true`) appended to the URL.
    ///
    /// # Errors
    ///
    /// As [`Client::ok`].
    pub async fn upload(
        &self,
        processor: &str,
        wasm: Vec<u8>,
        query: &str,
    ) -> Result<Value, ClientError> {
        let path = if query.is_empty() {
            format!("/v1/processors/{processor}/versions")
        } else {
            format!("/v1/processors/{processor}/versions?{query}")
        };
        self.ok("POST", &path, wasm, "application/wasm").await
    }
}
