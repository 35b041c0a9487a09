//! The admin HTTP listener: health, readiness, metrics and two actions.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200 `ok` while the process runs |
//! | `GET /readyz` | 200, or 503 with `{"ready":false,"reasons":[..]}` |
//! | `GET /metrics` | Prometheus text format ([`metrics`]) |
//! | `GET /v1/sessions` | live sessions as JSON |
//! | `POST /v1/rotate` | asks every credential source for a new generation |
//!
//! It binds 127.0.0.1:9307 by default; configuration validation refuses a
//! non-loopback address without `admin.token`. When a token is set, the
//! `/v1/*` routes require `Authorization: Bearer <token>` (compared in
//! constant time); the probes and `/metrics` stay open, as orchestrators
//! and scrapers expect. No route ever prints a password, a Vault token or
//! a lease id.
//!
//! It is a plain hyper HTTP/1 server: five fixed routes need no router.

pub mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::credentials::{CredentialHandle, SourceEvent};
use crate::lease::LeaseStats;
use crate::secret::{ExposeSecret, SecretString};
use crate::server::{ListenerCtx, Shared};
use crate::vault::VaultClient;

/// Longest a readiness check waits for Vault's `sys/health`.
const VAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a client gets to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// One credential source as the admin listener sees it.
#[derive(Debug)]
pub struct SourceView {
    pub handle: CredentialHandle,
    /// Lease manager counters (Vault sources only).
    pub lease: Option<Arc<LeaseStats>>,
}

/// What the admin routes read.
#[derive(Debug)]
pub struct AdminState {
    pub shared: Arc<Shared>,
    pub listeners: Vec<Arc<ListenerCtx>>,
    pub sources: Vec<SourceView>,
    /// The Vault client shared by the Vault sources (readiness probe,
    /// request metrics).
    pub vault: Option<VaultClient>,
    /// Bearer token for `/v1/*`.
    pub token: Option<SecretString>,
    pub started: Instant,
}

/// Binds the admin address.
pub async fn bind(addr: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("admin: cannot bind {addr}: {e}"))
}

/// Serves admin requests until the task is aborted (which also ends the
/// connections it spawned).
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "admin: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        let st = Arc::clone(&state);
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let st = Arc::clone(&st);
                async move { Ok::<_, Infallible>(route(&st, req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "admin: connection ended with an error");
            }
        });
    }
}

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<Bytes>, ctype: &'static str) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn json_resp(status: StatusCode, v: &serde_json::Value) -> Resp {
    text(status, v.to_string(), "application/json")
}

fn error(status: StatusCode, msg: &str) -> Resp {
    json_resp(status, &json!({ "error": msg }))
}

async fn route(st: &Arc<AdminState>, req: Request<Incoming>, peer: SocketAddr) -> Resp {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method.clone(), path.as_str()) {
        (Method::GET | Method::HEAD, "/healthz") => {
            text(StatusCode::OK, "ok\n", "text/plain; charset=utf-8")
        }
        (Method::GET | Method::HEAD, "/readyz") => {
            let reasons = readiness(st).await;
            if reasons.is_empty() {
                json_resp(StatusCode::OK, &json!({ "ready": true }))
            } else {
                json_resp(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({ "ready": false, "reasons": reasons }),
                )
            }
        }
        (Method::GET | Method::HEAD, "/metrics") => match metrics::render(st) {
            Ok(body) => text(StatusCode::OK, body, "text/plain; version=0.0.4"),
            Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics"),
        },
        (Method::GET, "/v1/sessions") => match authorized(st, &req) {
            Ok(()) => json_resp(StatusCode::OK, &sessions(st)),
            Err(r) => *r,
        },
        (Method::POST, "/v1/rotate") => match authorized(st, &req) {
            Ok(()) => {
                let names: Vec<String> = st
                    .sources
                    .iter()
                    .map(|s| {
                        s.handle.report(SourceEvent::RotateNow);
                        s.handle.name.clone()
                    })
                    .collect();
                info!(%peer, sources = ?names, "admin: rotation requested");
                json_resp(StatusCode::ACCEPTED, &json!({ "rotating": names }))
            }
            Err(r) => *r,
        },
        (_, "/healthz" | "/readyz" | "/metrics" | "/v1/sessions" | "/v1/rotate") => {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            let allow = if path == "/v1/rotate" { "POST" } else { "GET" };
            r.headers_mut()
                .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
            r
        }
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// Checks the bearer token when one is configured.
fn authorized(st: &AdminState, req: &Request<Incoming>) -> Result<(), Box<Resp>> {
    let Some(want) = &st.token else {
        return Ok(());
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    use subtle::ConstantTimeEq;
    if bool::from(given.as_bytes().ct_eq(want.expose_secret().as_bytes())) {
        Ok(())
    } else {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
        Err(Box::new(r))
    }
}

/// Why the process is not ready (empty = ready): shutting down, a
/// listener without usable credentials, a Vault source without a usable
/// generation, Vault unreachable or sealed.
pub async fn readiness(st: &AdminState) -> Vec<String> {
    let mut reasons = Vec::new();
    if *st.shared.shutdown.borrow() {
        reasons.push("shutting down".to_string());
    }
    let now = std::time::Instant::now();
    for l in &st.listeners {
        let usable = l.credentials.current().is_some_and(|g| !g.expired(now));
        if !usable {
            reasons.push(format!(
                "listener {}: no usable credentials from source {}: {}",
                l.name,
                l.credentials.name,
                l.credentials.status()
            ));
        }
    }
    let mut vault_sources = 0;
    for s in &st.sources {
        if let Some(stats) = &s.lease {
            vault_sources += 1;
            if !stats.ready.load(std::sync::atomic::Ordering::Relaxed) {
                reasons.push(format!(
                    "source {}: no usable Vault lease: {}",
                    s.handle.name,
                    s.handle.status()
                ));
            }
        }
    }
    if let (Some(v), true) = (&st.vault, vault_sources > 0) {
        match tokio::time::timeout(VAULT_PROBE_TIMEOUT, v.health()).await {
            // 429/472/473: standby nodes, which forward requests.
            Ok(Ok(200 | 429 | 472 | 473)) => {}
            Ok(Ok(503)) => reasons.push(format!("Vault at {} is sealed", v.address())),
            Ok(Ok(501)) => reasons.push(format!("Vault at {} is not initialized", v.address())),
            Ok(Ok(code)) => reasons.push(format!(
                "Vault at {} answers sys/health with HTTP {code}",
                v.address()
            )),
            Ok(Err(e)) => reasons.push(format!("Vault unreachable: {e}")),
            Err(_) => reasons.push(format!(
                "Vault at {} did not answer sys/health within {}s",
                v.address(),
                VAULT_PROBE_TIMEOUT.as_secs()
            )),
        }
    }
    reasons
}

/// `GET /v1/sessions`: one object per live session, by proxy id.
fn sessions(st: &AdminState) -> serde_json::Value {
    let now = Instant::now();
    let mut all = st.shared.registry.all();
    all.sort_by_key(|s| s.id);
    let list: Vec<_> = all
        .iter()
        .map(|s| {
            let g = s
                .generation
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let thread = s.upstream_thread.load(std::sync::atomic::Ordering::Relaxed);
            let idle = now
                .saturating_duration_since(*s.last_active.lock().unwrap_or_else(|e| e.into_inner()))
                .as_secs_f64();
            json!({
                "id": s.id,
                "listener": s.listener.name,
                "client": s.client,
                "source": s.listener.credentials.name,
                "upstream_thread": (thread != 0).then_some(thread),
                "generation": g.as_ref().map(|g| g.id),
                "upstream_user": g.as_ref().map(|g| g.username.clone()),
                "pinned": *s.pinned.lock().unwrap_or_else(|e| e.into_inner()),
                "idle_seconds": (idle * 1000.0).round() / 1000.0,
            })
        })
        .collect();
    json!({ "sessions": list })
}
