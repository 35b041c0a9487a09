//! HTTP layer: the accept loop (with the down/up knob), request parsing, fault
//! injection, response wrapping and rendering of envelopes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpSocket;
use tokio::sync::watch;

use super::reply::{Env, Reply, VErr};
use super::state::{Inner, Wrap};
use super::util::{self, Body};
use super::{router, sys};

/// Vault's default maximum request size (32 MiB).
const MAX_BODY: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Read,
    List,
    Write,
    Delete,
    Head,
}

/// A parsed request.
pub(crate) struct Req {
    pub op: Op,
    /// Path after `/v1/`, without query string or trailing slash.
    pub path: String,
    pub body: Body,
    pub token: Option<String>,
    pub wrap_ttl: i64,
}

/// Binds `addr` with SO_REUSEADDR so the same port can be taken again after `set_down(false)`.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(1024)
}

/// Serves until `shutdown` fires. `up` says whether the listener should be open; when it
/// turns false the listener and every open connection are dropped (clients see refusals/resets).
pub(crate) async fn serve(
    inner: Arc<Inner>,
    first: tokio::net::TcpListener,
    mut up: watch::Receiver<bool>,
    ack: std::sync::mpsc::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let addr = match first.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut listener = Some(first);
    loop {
        if *shutdown.borrow() {
            return;
        }
        match listener.take() {
            Some(l) => {
                let (kill_tx, kill_rx) = watch::channel(false);
                loop {
                    tokio::select! {
                        acc = l.accept() => {
                            if let Ok((stream, _remote)) = acc {
                                let inner = inner.clone();
                                let mut kill = kill_rx.clone();
                                tokio::spawn(async move {
                                    let svc = hyper::service::service_fn(move |req| {
                                        let inner = inner.clone();
                                        async move { Ok::<_, Infallible>(handle(inner, req).await) }
                                    });
                                    let conn = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), svc);
                                    tokio::select! {
                                        _ = conn => {}
                                        _ = kill.changed() => {}
                                    }
                                });
                            }
                        }
                        _ = up.changed() => {
                            if !*up.borrow() {
                                break;
                            }
                        }
                        _ = shutdown.changed() => {
                            let _ = kill_tx.send(true);
                            return;
                        }
                    }
                }
                drop(l);
                let _ = kill_tx.send(true);
                let _ = ack.send(false);
            }
            None => {
                // Down: wait for up, then re-bind the same port (retrying while it is busy).
                tokio::select! {
                    _ = up.changed() => {}
                    _ = shutdown.changed() => return,
                }
                if *up.borrow() {
                    for _ in 0..100 {
                        match bind(addr) {
                            Ok(l) => {
                                listener = Some(l);
                                break;
                            }
                            Err(_) => {
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await
                            }
                        }
                    }
                    let _ = ack.send(listener.is_some());
                }
            }
        }
    }
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn empty(status: u16) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r
}

fn err_response(e: &VErr) -> Response<Full<Bytes>> {
    json_response(e.status, &e.body())
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

fn parse_query(q: &str) -> Map<String, Value> {
    let mut m = Map::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(percent_decode(k), Value::String(percent_decode(v)));
    }
    m
}

pub(crate) fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    inner.counters.requests.fetch_add(1, Ordering::Relaxed);
    let delay = inner.knobs.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let raw_path = req.uri().path().to_string();
    let Some(path) = raw_path.strip_prefix("/v1/") else {
        return json_response(404, &json!({"errors": []}));
    };
    let path = percent_decode(path).trim_end_matches('/').to_string();
    let fault = inner.knobs.status_fault.load(Ordering::Relaxed);
    let sealed = inner.knobs.sealed.load(Ordering::Relaxed) || fault == 503;
    match fault {
        0 | 503 => {}
        429 => {
            return err_response(&VErr::new(
                429,
                format!("request path \"{path}\": rate limit quota exceeded"),
            ))
        }
        500 => return err_response(&VErr::internal("internal error")),
        other => {
            return err_response(&VErr::new(
                other,
                format!("stand-in fault injection: status {other}"),
            ))
        }
    }
    let query = parse_query(req.uri().query().unwrap_or(""));
    let method = req.method().as_str().to_string();
    let list_flag = query.get("list").and_then(|v| v.as_str()) == Some("true");
    let op = match method.as_str() {
        "GET" if list_flag => Op::List,
        "GET" => Op::Read,
        "HEAD" => Op::Head,
        "LIST" => Op::List,
        "POST" | "PUT" | "PATCH" => Op::Write,
        "DELETE" => Op::Delete,
        _ => return err_response(&VErr::unsupported_op()),
    };
    let token = header(&req, "x-vault-token")
        .filter(|t| !t.is_empty())
        .or_else(|| {
            header(&req, "authorization")
                .and_then(|a| a.strip_prefix("Bearer ").map(|t| t.trim().to_string()))
        });
    let wrap_hdr = header(&req, "x-vault-wrap-ttl");
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return err_response(&VErr::new(413, "http: request body too large"));
        }
    };
    let mut map = if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => m,
            Ok(Value::Null) => Map::new(),
            Ok(_) => {
                return err_response(&VErr::bad(
                    "failed to parse JSON input: body is not a JSON object",
                ))
            }
            Err(e) => return err_response(&VErr::bad(format!("failed to parse JSON input: {e}"))),
        }
    };
    if matches!(op, Op::Read | Op::Head | Op::List) {
        for (k, v) in query {
            if k != "list" {
                map.entry(k).or_insert(v);
            }
        }
    }
    let wrap_ttl =
        match wrap_hdr {
            None => 0,
            Some(h) => match util::parse_duration_str(&h) {
                Some(n) if n < 0 => return err_response(&VErr::bad(
                    "error parsing X-Vault-Wrap-TTL header: requested wrap ttl cannot be negative",
                )),
                Some(n) => n,
                None => {
                    return err_response(&VErr::bad(format!(
                        "error parsing X-Vault-Wrap-TTL header: invalid duration {h:?}"
                    )))
                }
            },
        };
    let r = Req {
        op,
        path: path.clone(),
        body: Body::new(map),
        token,
        wrap_ttl,
    };
    if sealed && !matches!(path.as_str(), "sys/health" | "sys/seal-status") {
        return err_response(&VErr::sealed());
    }
    if path == "sys/health" {
        return render(&inner, &r, sys::health(&r, sealed));
    }
    let out = router::dispatch(&inner, &r).await;
    tracing::debug!(
        target: "vault_standin",
        method = %method,
        path = %path,
        ok = out.is_ok(),
        "request"
    );
    render(&inner, &r, out)
}

fn render(inner: &Inner, r: &Req, out: Result<Reply, VErr>) -> Response<Full<Bytes>> {
    match out {
        Err(e) => err_response(&e),
        Ok(Reply::Accepted) => empty(202),
        Ok(Reply::Status(s)) => empty(s),
        Ok(Reply::Raw(s, v)) => json_response(s, &v),
        Ok(Reply::NoContent(w)) if w.is_empty() => empty(204),
        Ok(Reply::NoContent(w)) => {
            let env = Env {
                warnings: w,
                ..Env::default()
            };
            json_response(200, &env.to_json())
        }
        Ok(Reply::Env(mut env)) => {
            let unused = r.body.unused();
            if !unused.is_empty() {
                env.warnings.push(format!(
                    "Endpoint ignored these unrecognized parameters: [{}]",
                    unused.join(" ")
                ));
            }
            if r.wrap_ttl > 0 {
                json_response(200, &wrap(inner, r, &env))
            } else {
                json_response(200, &env.to_json())
            }
        }
    }
}

/// Stores the response behind a single-use wrapping token and returns the wrapped envelope.
fn wrap(inner: &Inner, r: &Req, env: &Env) -> Value {
    let now = SystemTime::now();
    let token = format!("hvs.{}", util::base62(24));
    let accessor = util::base62(24);
    let w = Wrap {
        ttl: r.wrap_ttl,
        creation_time: now,
        creation_path: r.path.clone(),
        response: env.to_json(),
    };
    {
        let mut st = inner.lock();
        st.wraps.insert(token.clone(), w);
        st.issued.push(token.clone());
    }
    let mut wrapped_accessor = env.wrapped_accessor.clone();
    if wrapped_accessor.is_empty() {
        if let Some(a) = env.auth.as_ref().and_then(|a| a.get("accessor")) {
            wrapped_accessor = a.as_str().unwrap_or("").to_string();
        }
    }
    json!({
        "request_id": "",
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": null,
        "warnings": null,
        "auth": null,
        "wrap_info": {
            "token": token,
            "accessor": accessor,
            "ttl": r.wrap_ttl,
            "creation_time": util::rfc3339(now),
            "creation_path": r.path,
            "wrapped_accessor": wrapped_accessor,
        }
    })
}
