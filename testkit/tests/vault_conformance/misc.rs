//! Checklist items 46–50 (wrapping, health, headers, rate limiting), plus the
//! stand-in's own fault knobs, Kubernetes login and the real-Vault notice.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn c46_wrapped_secret_id() {
    let fx = Fx::new().await;
    fx.ok("POST", "auth/approle/role/c46", json!({})).await;
    let r = fx
        .http
        .call_with(
            "POST",
            "auth/approle/role/c46/secret-id",
            Some(ROOT),
            Some(&json!({})),
            &[("X-Vault-Wrap-TTL", "60")],
        )
        .await
        .expect("http");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_envelope(&r);
    assert_eq!(r.json["request_id"], json!(""));
    assert_eq!(r.json["data"], Value::Null);
    let w = &r.json["wrap_info"];
    assert!(w["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(w["accessor"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(w["ttl"], json!(60));
    assert!(w["creation_time"].is_string());
    assert_eq!(w["creation_path"], json!("auth/approle/role/c46/secret-id"));
    assert!(w["wrapped_accessor"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let r = fx
        .http
        .call_with(
            "POST",
            "auth/approle/role/c46/secret-id",
            Some(ROOT),
            None,
            &[("X-Vault-Wrap-TTL", "-1")],
        )
        .await
        .expect("http");
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn c47_unwrap_once() {
    let fx = Fx::new().await;
    let (rid, _) = fx.approle("c47", json!({})).await;
    let r = fx
        .http
        .call_with(
            "POST",
            "auth/approle/role/c47/secret-id",
            Some(ROOT),
            None,
            &[("X-Vault-Wrap-TTL", "5m")],
        )
        .await
        .expect("http");
    let wt = r.str_at("/wrap_info/token").expect("token");
    let wacc = r.str_at("/wrap_info/wrapped_accessor").expect("acc");
    let lk = fx
        .call("POST", "sys/wrapping/lookup", None, json!({"token": wt}))
        .await;
    assert_eq!(
        lk.str_at("/data/creation_path").as_deref(),
        Some("auth/approle/role/c47/secret-id")
    );
    let u = fx
        .call("POST", "sys/wrapping/unwrap", Some(&wt), Value::Null)
        .await;
    assert_eq!(u.status, 200, "{}", u.text);
    assert_envelope(&u);
    assert_eq!(u.str_at("/data/secret_id_accessor"), Some(wacc));
    let sid = u.str_at("/data/secret_id").expect("sid");
    assert_eq!(fx.login(&rid, &sid).await.status, 200);
    let again = fx
        .call("POST", "sys/wrapping/unwrap", Some(&wt), Value::Null)
        .await;
    assert_eq!(
        (again.status, again.json.clone()),
        (
            400,
            json!({"errors": ["wrapping token is not valid or does not exist"]})
        )
    );
}

#[tokio::test]
async fn c48_health_and_sealed() {
    let fx = Fx::new().await;
    let r = fx.call("GET", "sys/health", None, Value::Null).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["sealed"], json!(false));
    assert_eq!(
        fx.call("GET", "sys/health?activecode=201", None, Value::Null)
            .await
            .status,
        201
    );
    assert_eq!(
        fx.call("HEAD", "sys/health", None, Value::Null)
            .await
            .status,
        200
    );
    assert_eq!(
        fx.call("GET", "sys/health?activecode=abc", None, Value::Null)
            .await
            .status,
        400
    );
    fx.sv.seal();
    let r = fx.call("GET", "sys/health", None, Value::Null).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json["sealed"], json!(true));
    assert_eq!(
        fx.call("GET", "sys/health?sealedcode=299", None, Value::Null)
            .await
            .status,
        299
    );
    let r = fx.root("GET", "auth/token/lookup-self", Value::Null).await;
    assert_eq!(
        (r.status, r.json.clone()),
        (503, json!({"errors": ["Vault is sealed"]}))
    );
    let r = fx
        .call("POST", "auth/approle/login", None, json!({"role_id": "x"}))
        .await;
    assert_eq!(r.status, 503);
    fx.sv.unseal();
    assert_eq!(
        fx.root("GET", "auth/token/lookup-self", Value::Null)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn c49_request_and_namespace_headers_change_nothing() {
    let fx = Fx::new().await;
    let plain = fx.root("GET", "auth/token/lookup-self", Value::Null).await;
    let hdr = fx
        .http
        .call_with(
            "GET",
            "auth/token/lookup-self",
            Some(ROOT),
            None,
            &[("X-Vault-Request", "true"), ("X-Vault-Namespace", "root")],
        )
        .await
        .expect("http");
    assert_eq!(plain.status, 200);
    assert_eq!(hdr.status, 200);
    assert_eq!(plain.json["data"]["accessor"], hdr.json["data"]["accessor"]);
    let bad = fx
        .http
        .call_with(
            "GET",
            "auth/token/lookup-self",
            Some("nope"),
            None,
            &[("X-Vault-Request", "true")],
        )
        .await
        .expect("http");
    assert_eq!(bad.status, 403);
}

#[tokio::test]
async fn c50_rate_limited_is_429() {
    let fx = Fx::new().await;
    fx.sv.set_status_fault(Some(429));
    let r = fx.root("GET", "database/creds/app", Value::Null).await;
    assert_eq!(r.status, 429);
    assert!(
        r.errors()[0].contains("rate limit quota exceeded"),
        "{}",
        r.text
    );
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    fx.sv.set_status_fault(Some(500));
    assert_eq!(
        fx.root("GET", "auth/token/lookup-self", Value::Null)
            .await
            .status,
        500
    );
    fx.sv.set_status_fault(None);
    assert_eq!(
        fx.root("GET", "auth/token/lookup-self", Value::Null)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn knob_down_refuses_then_rebinds_same_port() {
    let fx = Fx::new().await;
    let addr = fx.sv.addr();
    fx.sv.set_down(true);
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    assert!(fx.http.call("GET", "sys/health", None, None).await.is_err());
    fx.sv.set_down(false);
    assert_eq!(fx.sv.addr(), addr);
    assert_eq!(
        fx.call("GET", "sys/health", None, Value::Null).await.status,
        200
    );
    // State survives the outage.
    assert_eq!(
        fx.root("GET", "sys/mounts/database", Value::Null)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn knob_delay_and_out_of_band_revocation() {
    let fx = Fx::new().await;
    fx.role("oob", json!({})).await;
    fx.sv.set_delay(Duration::from_millis(300));
    let t = Instant::now();
    let r = fx.creds("oob", ROOT).await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    fx.sv.set_delay(Duration::ZERO);
    let (l, u) = (
        r.str_at("/lease_id").expect("l"),
        r.str_at("/data/username").expect("u"),
    );
    assert_eq!(fx.sv.live_leases(), vec![l.clone()]);
    assert_eq!(fx.sv.lease_info(&l).map(|i| i.username), Some(u.clone()));
    assert!(fx.sv.revoke_lease_out_of_band(&l).await.expect("revoke"));
    assert!(!fx.user_exists(&u).await);
    // Token revoked out of band by accessor: its leases go too.
    let tok = fx.app_token("oob", "oob", json!({})).await;
    let r = fx.creds("oob", &tok).await;
    let u2 = r.str_at("/data/username").expect("u");
    let acc = fx
        .call("GET", "auth/token/lookup-self", Some(&tok), Value::Null)
        .await
        .str_at("/data/accessor")
        .expect("acc");
    assert!(fx.sv.revoke_token_out_of_band(&acc));
    assert!(
        fx.eventually(3, || async { !fx.user_exists(&u2).await })
            .await
    );
    assert!(fx.sv.logins() >= 1 && fx.sv.creds_issued() == 2);
}

#[tokio::test]
async fn kubernetes_login_checks_bound_service_account() {
    let fx = Fx::new().await;
    fx.ok("POST", "sys/auth/kubernetes", json!({"type": "kubernetes"}))
        .await;
    fx.ok(
        "POST",
        "auth/kubernetes/config",
        json!({"kubernetes_host": "https://k8s.invalid"}),
    )
    .await;
    fx.ok(
        "POST",
        "auth/kubernetes/role/dev",
        json!({"bound_service_account_names": ["sqlease"], "bound_service_account_namespaces": ["apps"], "token_ttl": 600}),
    )
    .await;
    let jwt = |sub: &str| {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode(br#"{"alg":"RS256"}"#),
            e.encode(json!({"sub": sub}).to_string())
        )
    };
    // The JWT is read from a file, as a pod would.
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("token");
    std::fs::write(&path, jwt("system:serviceaccount:apps:sqlease")).expect("write");
    let good = std::fs::read_to_string(&path).expect("read");
    let r = fx
        .call(
            "POST",
            "auth/kubernetes/login",
            None,
            json!({"role": "dev", "jwt": good}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.i64_at("/auth/lease_duration"), Some(600));
    assert_eq!(
        r.json["auth"]["metadata"]["service_account_namespace"],
        json!("apps")
    );
    let r = fx
        .call(
            "POST",
            "auth/kubernetes/login",
            None,
            json!({"role": "dev", "jwt": jwt("system:serviceaccount:apps:other")}),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = fx
        .call(
            "POST",
            "auth/kubernetes/login",
            None,
            json!({"role": "nope", "jwt": good}),
        )
        .await;
    assert_eq!(
        (r.status, r.json.clone()),
        (400, json!({"errors": ["invalid role name \"nope\""]}))
    );
}

#[tokio::test]
async fn bad_json_is_400_and_unmounted_path_404() {
    let fx = Fx::new().await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/database/roles/x", fx.sv.url()))
        .header("X-Vault-Token", ROOT)
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400);
    let r = fx.root("GET", "nothing/here", Value::Null).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.errors(),
        vec!["no handler for route \"nothing/here\". route entry not found.".to_string()]
    );
}

/// Real Vault: runs the portable checks against `vault server -dev` when a `vault`
/// binary is on PATH; otherwise prints a visible notice. The stand-in side always runs.
#[tokio::test]
async fn real_vault_dev_server_or_notice() {
    let sv = sqlease_testkit::vault::VaultStandin::start(sqlease_testkit::vault::StandinOptions {
        root_token: ROOT.into(),
        ..Default::default()
    })
    .expect("start");
    portable_checks(&sv.http(), ROOT).await;
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("vault").is_file()))
        .unwrap_or(false);
    if !on_path {
        eprintln!(
            "NOTICE: skipped: vault not on PATH (real `vault server -dev` conformance not run)"
        );
        println!(
            "NOTICE: skipped: vault not on PATH (real `vault server -dev` conformance not run)"
        );
        return;
    }
    let port = sqlease_testkit::mariadb::free_port().expect("port");
    let mut child = std::process::Command::new("vault")
        .args([
            "server",
            "-dev",
            "-dev-root-token-id",
            ROOT,
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn vault");
    let http = sqlease_testkit::vault::VaultHttp::new(&format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while http
        .call("GET", "sys/health", None, None)
        .await
        .map(|r| r.status)
        .ok()
        != Some(200)
    {
        assert!(Instant::now() < deadline, "vault dev server did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    portable_checks(&http, ROOT).await;
    let _ = child.kill();
    let _ = child.wait();
}

/// Checks that need no database: envelope, invalid token, mount conflict, AppRole errors.
async fn portable_checks(http: &sqlease_testkit::vault::VaultHttp, root: &str) {
    let r = http
        .call("GET", "auth/token/lookup-self", Some("hvs.bogus"), None)
        .await
        .expect("http");
    assert_eq!(r.status, 403);
    assert!(r.errors()[0].contains("permission denied"));
    let r = http
        .call(
            "POST",
            "sys/mounts/database",
            Some(root),
            Some(&json!({"type": "database"})),
        )
        .await
        .expect("http");
    assert_eq!(r.status, 204, "{}", r.text);
    let r = http
        .call(
            "POST",
            "sys/mounts/database",
            Some(root),
            Some(&json!({"type": "database"})),
        )
        .await
        .expect("http");
    assert_eq!(r.status, 400);
    assert!(r.errors()[0].contains("path is already in use at database/"));
    let r = http
        .call(
            "POST",
            "sys/auth/approle2",
            Some(root),
            Some(&json!({"type": "approle"})),
        )
        .await
        .expect("http");
    assert_eq!(r.status, 204);
    let r = http
        .call(
            "POST",
            "auth/approle2/login",
            None,
            Some(&json!({"role_id": "nope", "secret_id": "x"})),
        )
        .await
        .expect("http");
    assert_eq!(
        (r.status, r.errors()),
        (400, vec!["invalid role or secret ID".to_string()])
    );
    let r = http
        .call("GET", "auth/token/lookup-self", Some(root), None)
        .await
        .expect("http");
    assert_eq!(r.status, 200);
    for k in [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
    ] {
        assert!(r.json.get(k).is_some(), "{k}");
    }
}
