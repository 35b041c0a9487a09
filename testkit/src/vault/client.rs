//! A tiny raw HTTP client for talking to the stand-in (or a real Vault) from
//! tests: it returns status, content type and body untouched so tests can
//! assert on the exact wire behaviour.

use anyhow::{Context, Result};
use serde_json::Value;

/// A raw Vault HTTP response.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub content_type: Option<String>,
    /// Raw body text (empty for 204/202).
    pub text: String,
    /// Body parsed as JSON (`Value::Null` when empty or not JSON).
    pub json: Value,
}

impl ApiResponse {
    /// The `errors` list of an error envelope (empty if none).
    pub fn errors(&self) -> Vec<String> {
        self.json
            .get("errors")
            .and_then(|e| e.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `json[ptr]` as a string (JSON pointer, e.g. `/data/username`).
    pub fn str_at(&self, ptr: &str) -> Option<String> {
        self.json
            .pointer(ptr)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }

    pub fn i64_at(&self, ptr: &str) -> Option<i64> {
        self.json.pointer(ptr).and_then(|v| v.as_i64())
    }

    /// The warnings of a success envelope.
    pub fn warnings(&self) -> Vec<String> {
        self.json
            .get("warnings")
            .and_then(|e| e.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Raw client bound to one Vault address.
#[derive(Debug, Clone)]
pub struct VaultHttp {
    base: String,
    client: reqwest::Client,
}

impl VaultHttp {
    /// `base` is the server URL, e.g. `http://127.0.0.1:8200`.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            client: {
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::new()
            },
        }
    }

    /// Sends `method` (`GET`, `POST`, `PUT`, `DELETE`, `LIST`, `HEAD`) to `/v1/<path>`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<ApiResponse> {
        self.call_with(method, path, token, body, &[]).await
    }

    /// Like [`VaultHttp::call`] with extra headers.
    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<ApiResponse> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).context("bad method")?;
        let url = format!("{}/v1/{}", self.base, path.trim_start_matches('/'));
        let mut rb = self.client.request(m, url);
        if let Some(t) = token {
            rb = rb.header("X-Vault-Token", t);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.body(b.to_string());
        }
        let resp = rb.send().await.context("vault request failed")?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(ApiResponse {
            status,
            content_type,
            text,
            json,
        })
    }
}
