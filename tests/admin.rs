//! The admin listener and process life cycle: /metrics before and after a
//! rotation, /v1/sessions, /v1/rotate, /readyz following Vault, SIGTERM
//! under load (nothing left in Vault or MySQL), SIGHUP swapping the local
//! password while a session keeps working.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::rotator::Rotator;
use common::*;
use mysql_async::prelude::*;
use sqlease::credentials::SourceEvent;
use sqlease_testkit::vault::{MysqlProvision, Provisioned, StandinOptions, VaultStandin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN_TOKEN: &str = "adm-token-4f1";

// ---------------------------------------------------------------- helpers

/// One HTTP/1.0 request over a fresh connection: (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .expect("admin connect timed out")
        .expect("admin connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("{method} {path} HTTP/1.0\r\nHost: admin\r\n{auth}Content-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("admin answer timed out")
        .unwrap();
    let text = String::from_utf8(buf).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    (status, body.to_string())
}

/// The value of one series (`name` or `name{labels}` exactly as printed).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn must(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("{series} missing from /metrics:\n{text}"))
}

async fn scrape(addr: SocketAddr) -> String {
    let (st, body) = http(addr, "GET", "/metrics", None).await;
    assert_eq!(st, 200, "{body}");
    body
}

async fn sessions(addr: SocketAddr) -> Vec<serde_json::Value> {
    let (st, body) = http(addr, "GET", "/v1/sessions", Some(ADMIN_TOKEN)).await;
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["sessions"].as_array().expect("sessions array").clone()
}

async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn admin_section(bind: &str) -> String {
    format!("[admin]\nbind = \"{bind}\"\ntoken = \"{ADMIN_TOKEN}\"\n")
}

// ------------------------------------------------- metrics and sessions

#[tokio::test]
async fn metrics_and_sessions_follow_a_rotation() {
    init_logging();
    let (rot, handle) = Rotator::new(db(), "adm_m_");
    let g1 = rot.rotate(None);
    let toml = config_toml(db(), "", &admin_section("127.0.0.1:0"));
    let cfg = sqlease::config::Config::from_toml(&toml).unwrap();
    let mut supplied = BTreeMap::new();
    supplied.insert("static".to_string(), handle);
    let r = sqlease::app::start_with_sources(cfg, supplied)
        .await
        .unwrap();
    let admin = r.admin.expect("admin listener bound");

    // Probes.
    let (st, body) = http(admin, "GET", "/healthz", None).await;
    assert_eq!((st, body.as_str()), (200, "ok\n"));
    let (st, body) = http(admin, "GET", "/readyz", None).await;
    assert_eq!(st, 200, "{body}");
    let (st, _) = http(admin, "GET", "/nope", None).await;
    assert_eq!(st, 404);
    let (st, _) = http(admin, "POST", "/metrics", None).await;
    assert_eq!(st, 405);
    // The /v1 routes need the token when one is configured.
    let (st, _) = http(admin, "GET", "/v1/sessions", None).await;
    assert_eq!(st, 401);
    let (st, _) = http(admin, "GET", "/v1/sessions", Some("wrong")).await;
    assert_eq!(st, 401);
    let (st, _) = http(admin, "POST", "/v1/rotate", None).await;
    assert_eq!(st, 401);

    let before = scrape(admin).await;
    assert_eq!(must(&before, "sqlease_swaps_total"), 0.0);
    assert_eq!(must(&before, "sqlease_generation{source=\"static\"}"), 1.0);
    assert_eq!(must(&before, "sqlease_swap_pause_seconds_count"), 0.0);
    assert_eq!(must(&before, "sqlease_sessions{listener=\"main\"}"), 0.0);

    let mut a = connect(&r).await;
    let mut b = connect(&r).await;
    let mut pinned = connect(&r).await;
    assert_eq!(user_of(&mut a).await, g1.username);
    let _ = user_of(&mut b).await;
    pinned.query_drop("START TRANSACTION").await.unwrap();
    let _: i64 = scalar(&mut pinned, "SELECT 1").await;
    // A failed login is counted.
    let bad = mysql_async::OptsBuilder::from_opts(proxy_opts(&r, None)).pass(Some("wrong-pw"));
    assert!(mysql_async::Conn::new(bad).await.is_err());

    let list = sessions(admin).await;
    assert_eq!(list.len(), 3, "{list:?}");
    let ids: Vec<u64> = list.iter().map(|s| s["id"].as_u64().unwrap()).collect();
    assert!(ids.contains(&u64::from(a.id())), "{list:?}");
    assert!(ids.contains(&u64::from(b.id())), "{list:?}");
    for s in &list {
        assert_eq!(s["generation"], 1, "{s}");
        assert_eq!(s["upstream_user"], g1.username.as_str(), "{s}");
        assert_eq!(s["listener"], "main");
        assert!(s["upstream_thread"].as_u64().unwrap() > 0, "{s}");
        assert!(
            s["client"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{s}"
        );
        assert!(s["idle_seconds"].as_f64().unwrap() >= 0.0, "{s}");
    }
    // Thread ids are the server's own.
    let a_thread = list
        .iter()
        .find(|s| s["id"].as_u64() == Some(u64::from(a.id())))
        .unwrap()["upstream_thread"]
        .as_u64()
        .unwrap();
    let direct: u64 = scalar(&mut a, "SELECT CONNECTION_ID()").await;
    assert!(
        direct == a_thread || direct == u64::from(a.id()),
        "{direct} vs {a_thread}"
    );

    let mid = scrape(admin).await;
    assert_eq!(must(&mid, "sqlease_sessions{listener=\"main\"}"), 3.0);
    assert_eq!(
        must(
            &mid,
            "sqlease_upstream_connections{listener=\"main\",source=\"static\",generation=\"1\"}"
        ),
        3.0
    );
    assert!(must(&mid, "sqlease_client_connections_total") >= 4.0);
    assert!(must(&mid, "sqlease_client_auth_failures_total") >= 1.0);
    assert!(must(&mid, "sqlease_client_connections_open") >= 3.0);

    // POST /v1/rotate reaches the source.
    assert!(rot.events().is_empty());
    let (st, body) = http(admin, "POST", "/v1/rotate", Some(ADMIN_TOKEN)).await;
    assert_eq!(st, 202, "{body}");
    assert!(body.contains("\"static\""), "{body}");
    assert_eq!(rot.events(), vec![SourceEvent::RotateNow]);

    // Rotate: a and b move at their next command, the transaction pins.
    let g2 = rot.rotate(None);
    wait_user(&mut a, &g2.username).await;
    wait_user(&mut b, &g2.username).await;
    let _: i64 = scalar(&mut pinned, "SELECT 2").await;
    eventually(10, "pinned session reported", || async {
        sessions(admin)
            .await
            .iter()
            .any(|s| s["pinned"] == "transaction" && s["generation"] == 1)
    })
    .await;

    let after = scrape(admin).await;
    assert!(must(&after, "sqlease_swaps_total") >= 2.0, "{after}");
    assert!(must(&after, "sqlease_swap_pause_seconds_count") >= 2.0);
    assert!(must(&after, "sqlease_swap_pause_seconds_sum") > 0.0);
    assert!(
        must(&after, "sqlease_swap_pause_seconds_bucket{le=\"+Inf\"}") >= 2.0,
        "{after}"
    );
    assert_eq!(must(&after, "sqlease_generation{source=\"static\"}"), 2.0);
    assert_eq!(
        must(
            &after,
            "sqlease_upstream_connections{listener=\"main\",source=\"static\",generation=\"2\"}"
        ),
        2.0
    );
    assert_eq!(
        must(
            &after,
            "sqlease_upstream_connections{listener=\"main\",source=\"static\",generation=\"1\"}"
        ),
        1.0
    );
    assert_eq!(
        must(&after, "sqlease_sessions_pinned{reason=\"transaction\"}"),
        1.0
    );
    for dir in ["to_client", "to_upstream"] {
        let series = format!("sqlease_bytes_relayed_total{{direction=\"{dir}\"}}");
        assert!(must(&after, &series) > must(&mid, &series), "{series}");
    }
    assert!(must(&after, "sqlease_generation_age_seconds{source=\"static\"}") >= 0.0);

    // The pinned session moves once the transaction ends.
    pinned.query_drop("COMMIT").await.unwrap();
    wait_user(&mut pinned, &g2.username).await;
    let list = sessions(admin).await;
    assert!(
        list.iter()
            .all(|s| s["generation"] == 2 && s["pinned"].is_null()),
        "{list:?}"
    );
    let last = scrape(admin).await;
    assert!(metric(&last, "sqlease_sessions_pinned{reason=\"transaction\"}").is_none());
    assert!(must(&last, "sqlease_swaps_total") >= 3.0);

    // Nothing secret anywhere.
    for text in [
        &before,
        &mid,
        &after,
        &last,
        &serde_json::to_string(&list).unwrap(),
    ] {
        for secret in [LOCAL_PASSWORD, "adm-gen-pw-1", "adm-gen-pw-2", ADMIN_TOKEN] {
            assert!(!text.contains(secret), "{secret} leaked");
        }
    }
    drop((a, b, pinned));
    r.shutdown(Duration::from_secs(2)).await;
}

// ------------------------------------------------------ Vault: /readyz

fn provision(role: &str) -> MysqlProvision {
    let db = db();
    MysqlProvision {
        mysql_port: db.port(),
        admin_user: db.admin_user().into(),
        admin_password: db.admin_password().into(),
        role: role.into(),
        ..MysqlProvision::default()
    }
}

async fn standin(role: &str) -> (VaultStandin, Provisioned) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let v = VaultStandin::start(StandinOptions::default()).expect("start the Vault stand-in");
    let creds = v
        .provision_mysql(&provision(role))
        .await
        .expect("provision the stand-in");
    (v, creds)
}

/// A config with one listener whose credentials come from the stand-in.
fn vault_toml(v: &VaultStandin, c: &Provisioned, role: &str, bind: &str, admin: &str) -> String {
    format!(
        r#"
{admin}
[shutdown]
drain_timeout = "10s"

[vault]
address = "{url}"
request_timeout = "2s"
[vault.auth]
method = "approle"
role_id = "{role_id}"
secret_id = "{secret_id}"

[credentials.vault]
type = "vault"
role = "{role}"

[[listener]]
name = "main"
bind = "{bind}"
handshake_timeout = "2s"
auth_failure_delay = "20ms"
[[listener.users]]
name = "{LOCAL_USER}"
password = "{LOCAL_PASSWORD}"
[listener.upstream]
address = "127.0.0.1:{port}"
credentials = "vault"
tls = "disabled"
"#,
        url = v.url(),
        role_id = c.role_id,
        secret_id = c.secret_id,
        port = db().port(),
    )
}

#[tokio::test]
async fn readyz_follows_vault() {
    init_logging();
    let (v, c) = standin("ready").await;
    let toml = vault_toml(
        &v,
        &c,
        "ready",
        "127.0.0.1:0",
        &admin_section("127.0.0.1:0"),
    );
    let cfg = sqlease::config::Config::from_toml(&toml).unwrap();
    let r = sqlease::app::start(cfg).await.expect("start sqlease");
    let admin = r.admin.unwrap();
    eventually(10, "ready with Vault up", || async {
        http(admin, "GET", "/readyz", None).await.0 == 200
    })
    .await;
    let mut conn = connect(&r).await;
    let user = user_of(&mut conn).await;
    assert!(user.starts_with("v-approle-ready-"), "{user}");

    v.set_down(true);
    let (st, body) = http(admin, "GET", "/readyz", None).await;
    assert_eq!(st, 503, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["ready"], false);
    let reasons = j["reasons"].to_string();
    assert!(reasons.contains("Vault"), "{reasons}");
    // The session keeps working on its lease meanwhile.
    let _: i64 = scalar(&mut conn, "SELECT 1").await;

    v.set_down(false);
    eventually(10, "ready again with Vault back", || async {
        http(admin, "GET", "/readyz", None).await.0 == 200
    })
    .await;

    let m = scrape(admin).await;
    assert!(must(&m, "sqlease_vault_logins_total{source=\"vault\"}") >= 1.0);
    assert!(must(&m, "sqlease_vault_generations_total{source=\"vault\"}") >= 1.0);
    assert!(
        must(
            &m,
            "sqlease_vault_requests_total{endpoint=\"auth/approle/login\"}"
        ) >= 1.0
    );
    assert!(
        must(
            &m,
            "sqlease_vault_requests_total{endpoint=\"database/creds/ready\"}"
        ) >= 1.0
    );
    assert!(
        must(
            &m,
            "sqlease_vault_request_errors_total{endpoint=\"sys/health\"}"
        ) >= 1.0,
        "the probe while Vault was down is an error"
    );
    assert!(
        must(
            &m,
            "sqlease_vault_request_duration_seconds_count{endpoint=\"database/creds/ready\"}"
        ) >= 1.0
    );
    assert!(must(&m, "sqlease_generation_age_seconds{source=\"vault\"}") >= 0.0);
    assert_eq!(
        must(&m, "sqlease_credentials_usable{source=\"vault\"}"),
        1.0
    );
    assert!(!m.contains(&c.secret_id) && !m.contains(&c.role_id));

    drop(conn);
    r.shutdown(Duration::from_secs(2)).await;
    assert!(v.live_leases().is_empty(), "{:?}", v.live_leases());
    assert_eq!(readyz_users("v-approle-ready-"), 0);
}

fn readyz_users(prefix: &str) -> usize {
    db().cli(&format!(
        "SELECT COUNT(*) FROM mysql.user WHERE User LIKE '{prefix}%'"
    ))
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

// ------------------------------------------- the real binary: signals

struct Proc {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

impl Proc {
    fn spawn(toml: &str) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sqlease.toml");
        std::fs::write(&config, toml).unwrap();
        let log = dir.path().join("sqlease.log");
        let child = Command::new(sqlease_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc {
            child,
            log,
            _dir: dir,
            config,
        }
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit; its exit code.
    async fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("sqlease did not exit within {secs}s:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn write_config(&self, toml: &str) {
        let tmp = self.config.with_extension("tmp");
        std::fs::write(&tmp, toml).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn opts(port: u16, password: &str) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(LOCAL_USER))
        .pass(Some(password))
        .prefer_socket(false)
        .into()
}

async fn try_connect(port: u16, password: &str) -> Result<mysql_async::Conn, mysql_async::Error> {
    tokio::time::timeout(
        Duration::from_secs(10),
        mysql_async::Conn::new(opts(port, password)),
    )
    .await
    .expect("connect timed out")
}

fn free_port() -> u16 {
    sqlease_testkit::mariadb::free_port().unwrap()
}

fn is_reset(e: &mysql_async::Error) -> bool {
    let s = format!("{e:?}").to_lowercase();
    s.contains("reset") || s.contains("broken pipe")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_leaves_nothing_behind() {
    let (v, c) = standin("sigterm").await;
    let port = free_port();
    let admin_port = free_port();
    let toml = vault_toml(
        &v,
        &c,
        "sigterm",
        &format!("127.0.0.1:{port}"),
        &admin_section(&format!("127.0.0.1:{admin_port}")),
    );
    let mut p = Proc::spawn(&toml);
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(admin),
        )
        .await
        {
            let _ = s.shutdown().await;
            if http(admin, "GET", "/readyz", None).await.0 == 200 {
                break;
            }
        }
        if let Some(code) = p.child.try_wait().unwrap() {
            panic!("sqlease exited early ({code:?}):\n{}", p.log());
        }
        assert!(Instant::now() < deadline, "never ready:\n{}", p.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The image's health check command agrees.
    let out = Command::new(sqlease_bin())
        .args(["health", "--admin", &format!("127.0.0.1:{admin_port}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(sqlease_bin())
        .args(["health", "--admin", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "nothing listens there");

    // Load: busy clients in a loop, a long command in flight, idle clients.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut busy = Vec::new();
    for i in 0..6 {
        let mut conn = try_connect(port, LOCAL_PASSWORD).await.unwrap();
        let stop = Arc::clone(&stop);
        busy.push(tokio::spawn(async move {
            let mut ok = 0u32;
            let mut err = None;
            while !stop.load(Ordering::SeqCst) {
                match conn
                    .query_first::<i64, _>(format!("SELECT {i} + SLEEP(0.02)"))
                    .await
                {
                    Ok(Some(n)) => {
                        assert_eq!(n, i64::from(i));
                        ok += 1;
                    }
                    Ok(None) => panic!("no row"),
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            (ok, err)
        }));
    }
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut conn = try_connect(port, LOCAL_PASSWORD).await.unwrap();
        let _: i64 = scalar(&mut conn, "SELECT 1").await;
        idle.push(conn);
    }
    let mut long = try_connect(port, LOCAL_PASSWORD).await.unwrap();
    let long_task = tokio::spawn(async move {
        let t = Instant::now();
        let r = long.query_first::<i64, _>("SELECT SLEEP(2)").await;
        (r, t.elapsed())
    });
    let leases_before = v.live_leases();
    assert_eq!(leases_before.len(), 1, "{leases_before:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;

    p.signal("TERM");
    let sent = Instant::now();

    // The command in flight finishes with its result.
    let (r, took) = long_task.await.unwrap();
    assert_eq!(r.expect("in-flight command must finish"), Some(0));
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    // Idle clients: the server closed them cleanly (no reset), at once.
    for mut conn in idle {
        let e = conn
            .query_drop("SELECT 1")
            .await
            .expect_err("idle session must be closed by the shutdown");
        assert!(!is_reset(&e), "idle client got a reset: {e:?}");
    }
    assert!(sent.elapsed() < Duration::from_secs(8));
    // Busy clients: every answered query was right; then a clean end.
    stop.store(true, Ordering::SeqCst);
    for t in busy {
        let (ok, err) = t.await.unwrap();
        assert!(ok > 0, "busy client never served");
        if let Some(e) = err {
            assert!(!is_reset(&e), "busy client got a reset: {e:?}");
        }
    }
    // New connections are refused meanwhile or after.
    assert!(try_connect(port, LOCAL_PASSWORD).await.is_err());

    let code = p.wait_exit(30).await;
    let log = p.log();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("lease revoked at shutdown"), "{log}");
    assert!(
        v.live_leases().is_empty(),
        "leases left: {:?}",
        v.live_leases()
    );
    assert_eq!(readyz_users("v-approle-sigterm-"), 0, "MySQL users left");
    for secret in [LOCAL_PASSWORD, c.secret_id.as_str(), ADMIN_TOKEN] {
        assert!(!log.contains(secret), "secret in the log:\n{log}");
    }
}

fn static_toml(port: u16, password: &str) -> String {
    config_toml(db(), "", "")
        .replace(
            "bind = \"127.0.0.1:0\"",
            &format!("bind = \"127.0.0.1:{port}\""),
        )
        .replace(
            &format!("password = \"{LOCAL_PASSWORD}\""),
            &format!("password = \"{password}\""),
        )
}

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_local_password_without_dropping_sessions() {
    let port = free_port();
    let old_toml = static_toml(port, "old-local-pw-1");
    assert!(old_toml.contains("old-local-pw-1") && old_toml.contains(&format!(":{port}\"")));
    let mut p = Proc::spawn(&old_toml);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut kept = loop {
        match try_connect(port, "old-local-pw-1").await {
            Ok(c) => break c,
            Err(e) => {
                if let Some(code) = p.child.try_wait().unwrap() {
                    panic!("sqlease exited early ({code:?}):\n{}", p.log());
                }
                assert!(Instant::now() < deadline, "never served: {e}\n{}", p.log());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let id = kept.id();
    kept.query_drop("SET @kept = 41").await.unwrap();
    let e = try_connect(port, "new-local-pw-2").await.unwrap_err();
    assert_eq!(server_code(&e), Some(1045), "{e:?}");

    // A broken file is refused as a whole: the old password still works.
    p.write_config("[[listener]]\nname = 3\n");
    p.signal("HUP");
    let d = Instant::now() + Duration::from_secs(10);
    while !p.log().contains("configuration reload refused") {
        assert!(Instant::now() < d, "no refusal logged:\n{}", p.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(
        try_connect(port, "old-local-pw-1")
            .await
            .expect("old password after a bad reload"),
    );

    // The new password.
    p.write_config(&static_toml(port, "new-local-pw-2"));
    p.signal("HUP");
    let d = Instant::now() + Duration::from_secs(10);
    let mut fresh = loop {
        match try_connect(port, "new-local-pw-2").await {
            Ok(c) => break c,
            Err(e) => {
                assert_eq!(server_code(&e), Some(1045), "{e:?}");
                assert!(
                    Instant::now() < d,
                    "new password never accepted:\n{}",
                    p.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let e = try_connect(port, "old-local-pw-1").await.unwrap_err();
    assert_eq!(
        server_code(&e),
        Some(1045),
        "old password still accepted: {e:?}"
    );
    let _: i64 = scalar(&mut fresh, "SELECT 1").await;
    // The session opened before the reload keeps working, state intact.
    let v: i64 = scalar(&mut kept, "SELECT @kept + 1").await;
    assert_eq!(v, 42);
    assert_eq!(kept.id(), id);
    assert!(p.log().contains("configuration reloaded"), "{}", p.log());

    drop(fresh);
    drop(kept);
    p.signal("TERM");
    assert_eq!(p.wait_exit(20).await, Some(0), "{}", p.log());
    let log = p.log();
    for secret in ["old-local-pw-1", "new-local-pw-2", UP_PASSWORD] {
        assert!(!log.contains(secret), "secret in the log:\n{log}");
    }
}
