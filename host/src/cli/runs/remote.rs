//! A small client of `braid serve`'s run endpoints (plain HTTP/1.1, one
//! request per connection, as `braid serve` listens without TLS).

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::time::Duration;

/// The largest answer read (a run's report with its result).
const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// A server's base URL, checked: `http://HOST[:PORT]`.
#[derive(Clone)]
pub struct Server {
    authority: String,
}

impl std::str::FromStr for Server {
    type Err = String;
    fn from_str(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!(
                "--server `{url}`: braid serve speaks plain http:// (e.g. http://127.0.0.1:8080)"
            )
        })?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!(
                "--server `{url}`: give the server's address only, e.g. http://127.0.0.1:8080"
            ));
        }
        Ok(Server {
            authority: authority.to_string(),
        })
    }
}

impl Server {
    /// Sends one request; (status, JSON body).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        limit: Duration,
    ) -> Result<(u16, Value)> {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(&self.authority)
                .await
                .with_context(|| format!("cannot reach braid serve at {}", self.authority))?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            let mut request = http::Request::builder()
                .method(method)
                .uri(path)
                .header("host", &self.authority);
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let bytes = match body {
                Some(v) => {
                    request = request.header("content-type", "application/json");
                    Bytes::from(v.to_string())
                }
                None => Bytes::new(),
            };
            let response = sender.send_request(request.body(Full::new(bytes))?).await?;
            let status = response.status().as_u16();
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| anyhow!("reading the answer: {e}"))?
                .to_bytes();
            let json = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            Ok::<_, anyhow::Error>((status, json))
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(answer) => answer,
            Err(_) => bail!(
                "braid serve at {} did not answer within {limit:?}",
                self.authority
            ),
        }
    }
}
