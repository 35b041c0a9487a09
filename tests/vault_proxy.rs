//! The Vault issue's "Must show" list, end to end through the proxy: a real
//! MariaDB, sqlease started in-process with `[credentials.x] type = "vault"`,
//! and a Vault — the test kit's stand-in, or a real `vault server -dev`
//! spawned by the test when a `vault` binary is on PATH.
//!
//! Every test installs (once per binary) a trace-level log capture and, at
//! its end, scans the captured logs and the client-visible errors it saw for
//! every secret in use (local password, SecretID, Vault tokens, every MySQL
//! password Vault issued).
//!
//! Bounds stated by these tests:
//! - a lease or token revoked out of band: the next new client succeeds
//!   within 5 s of the revocation (measured: well under 1 s; the client that
//!   finds out is served by the replacement generation, no error);
//! - Vault down at startup: once Vault is up, clients are served within 5 s;
//! - Vault down for 10 s: rotation resumes within 10 s of its return.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;
use serde_json::json;
use sqlease::app::Running;
use sqlease::credentials::Generation;
use sqlease::secret::ExposeSecret;
use sqlease_testkit::vault::{
    MysqlProvision, Provisioned, StandinOptions, VaultHttp, VaultStandin,
};
use tokio::sync::watch;

// ---------------------------------------------------------------------------
// Log capture (trace level, whole binary) and the leak scan.

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs the capture once for this test binary (trace level for every
/// target, `log` records included). With SQLEASE_TEST_LOG set, the same
/// events also go to the test output at that level.
fn capture() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        use tracing_subscriber::prelude::*;
        let buf = Arc::new(Mutex::new(Vec::new()));
        let captured = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(Capture(buf.clone()))
            .with_filter(tracing_subscriber::filter::LevelFilter::TRACE);
        let echo = std::env::var("SQLEASE_TEST_LOG").ok().map(|level| {
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(tracing_subscriber::EnvFilter::new(level))
        });
        tracing_subscriber::registry()
            .with(captured)
            .with(echo)
            .try_init()
            .expect("the vault_proxy tests must own the global subscriber");
        // The test kit's HTTP client needs a process-wide rustls provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        buf
    })
}

fn captured_logs() -> String {
    String::from_utf8_lossy(&capture().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// Client-visible error messages seen by any test.
fn client_errors() -> &'static Mutex<Vec<String>> {
    static E: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    E.get_or_init(Default::default)
}

fn note_client_error(e: &mysql_async::Error) {
    client_errors().lock().unwrap().push(format!("{e} / {e:?}"));
}

/// Fails if any secret appears in the captured logs, the client errors or `extra`.
fn assert_no_leaks(secrets: &[String], extra: &[String]) {
    let logs = captured_logs();
    assert!(
        logs.contains("new credential generation published"),
        "the capture is not recording sqlease's logs"
    );
    let errors = client_errors().lock().unwrap().join("\n");
    let mut checked = 0;
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        checked += 1;
        assert!(
            !logs.contains(s.as_str()),
            "a secret ({} chars) appears in the logs",
            s.len()
        );
        assert!(
            !errors.contains(s.as_str()),
            "a secret appears in a client-visible error"
        );
        for (i, x) in extra.iter().enumerate() {
            assert!(
                !x.contains(s.as_str()),
                "a secret appears in checked text #{i}"
            );
        }
    }
    assert!(checked >= 3, "too few secrets to check ({checked})");
    // Vault service tokens (real Vault and the stand-in) start with "hvs.":
    // none may appear, whether or not the test could learn its value.
    assert!(!logs.contains("hvs."), "a Vault token appears in the logs");
    assert!(
        !errors.contains("hvs."),
        "a Vault token appears in a client error"
    );
}

// ---------------------------------------------------------------------------
// The Vault under test: the stand-in, or a real `vault server -dev`.

fn vault_on_path() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("vault"))
            .find(|f| f.is_file())
    })
}

/// A TCP relay in front of a real Vault, so the test can take it "down"
/// (refuse and cut connections) without losing the dev server's state.
struct Relay {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = first.local_addr().unwrap();
        let (up, mut up_rx) = watch::channel(true);
        let task = tokio::spawn(async move {
            let mut listener = Some(first);
            loop {
                while !*up_rx.borrow_and_update() {
                    if up_rx.changed().await.is_err() {
                        return;
                    }
                }
                let l = match listener.take() {
                    Some(l) => l,
                    None => match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => l,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let mut conns = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        a = l.accept() => if let Ok((mut s, _)) = a {
                            conns.spawn(async move {
                                if let Ok(mut t) = tokio::net::TcpStream::connect(target).await {
                                    let _ = tokio::io::copy_bidirectional(&mut s, &mut t).await;
                                }
                            });
                        },
                        r = up_rx.changed() => if r.is_err() || !*up_rx.borrow() { break },
                    }
                }
                drop(l);
                conns.abort_all();
            }
        });
        Relay { addr, up, task }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct DevVault {
    child: std::process::Child,
    /// HOME of the child (`vault server -dev` writes ~/.vault-token).
    _home: tempfile::TempDir,
    relay: Relay,
    root: String,
}

impl Drop for DevVault {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum TestVault {
    Standin(VaultStandin),
    Dev(DevVault),
}

fn random_hex() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

impl TestVault {
    /// A real `vault server -dev` if `vault` is on PATH, else the stand-in.
    async fn start() -> TestVault {
        capture();
        // A random root token, so that scanning for it means something.
        let root = format!("root-{}", random_hex());
        match vault_on_path() {
            Some(bin) => TestVault::Dev(spawn_dev(&bin, root).await),
            None => TestVault::standin(root),
        }
    }

    fn standin(root: String) -> TestVault {
        capture();
        let opts = StandinOptions {
            root_token: root,
            ..StandinOptions::default()
        };
        TestVault::Standin(VaultStandin::start(opts).expect("start the Vault stand-in"))
    }

    fn kind(&self) -> &'static str {
        match self {
            TestVault::Standin(_) => "the Vault stand-in",
            TestVault::Dev(_) => "a real `vault server -dev`",
        }
    }

    /// The address sqlease is given.
    fn url(&self) -> String {
        match self {
            TestVault::Standin(v) => v.url(),
            TestVault::Dev(d) => format!("http://{}", d.relay.addr),
        }
    }

    fn root(&self) -> &str {
        match self {
            TestVault::Standin(v) => v.root_token(),
            TestVault::Dev(d) => &d.root,
        }
    }

    fn http(&self) -> VaultHttp {
        VaultHttp::new(&self.url())
    }

    async fn provision(&self, p: &MysqlProvision) -> Provisioned {
        sqlease_testkit::vault::provision(&self.url(), self.root(), p)
            .await
            .expect("provision Vault")
    }

    /// Stops answering (connections refused and cut) or starts again.
    fn set_down(&self, down: bool) {
        match self {
            TestVault::Standin(v) => tokio::task::block_in_place(|| v.set_down(down)),
            TestVault::Dev(d) => {
                let _ = d.relay.up.send(!down);
            }
        }
    }

    /// Ids of the live leases of `database/creds/<role>`, asked as root over HTTP.
    async fn leases(&self, role: &str) -> Vec<String> {
        let prefix = format!("database/creds/{role}");
        let r = self
            .http()
            .call(
                "LIST",
                &format!("sys/leases/lookup/{prefix}"),
                Some(self.root()),
                None,
            )
            .await
            .expect("list leases");
        if r.status == 404 {
            return Vec::new();
        }
        assert_eq!(r.status, 200, "list leases: {:?}", r.errors());
        r.json["data"]["keys"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str())
                    .map(|k| format!("{prefix}/{k}"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An operator's `vault lease revoke <id>` (drops the MySQL user).
    async fn revoke_lease(&self, lease_id: &str) {
        let r = self
            .http()
            .call(
                "PUT",
                "sys/leases/revoke",
                Some(self.root()),
                Some(&json!({ "lease_id": lease_id })),
            )
            .await
            .unwrap();
        assert!(r.status < 300, "revoke lease: {:?}", r.errors());
    }

    /// Accessors of the tokens sqlease logged in with (AppRole).
    async fn approle_token_accessors(&self, a_lease: &str) -> Vec<String> {
        match self {
            TestVault::Standin(v) => v
                .lease_info(a_lease)
                .map(|l| vec![l.token_accessor])
                .unwrap_or_default(),
            TestVault::Dev(_) => {
                let http = self.http();
                let r = http
                    .call("LIST", "auth/token/accessors", Some(self.root()), None)
                    .await
                    .unwrap();
                let mut out = Vec::new();
                for a in r.json["data"]["keys"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    let a = a.as_str().unwrap_or_default().to_string();
                    let l = http
                        .call(
                            "POST",
                            "auth/token/lookup-accessor",
                            Some(self.root()),
                            Some(&json!({ "accessor": a })),
                        )
                        .await
                        .unwrap();
                    if l.str_at("/data/path")
                        .is_some_and(|p| p.starts_with("auth/approle/login"))
                    {
                        out.push(a);
                    }
                }
                out
            }
        }
    }

    /// An operator's `vault token revoke -accessor` (its leases go with it).
    async fn revoke_token_accessor(&self, accessor: &str) {
        let r = self
            .http()
            .call(
                "POST",
                "auth/token/revoke-accessor",
                Some(self.root()),
                Some(&json!({ "accessor": accessor })),
            )
            .await
            .unwrap();
        assert!(r.status < 300, "revoke token: {:?}", r.errors());
    }

    /// Secrets Vault handed out, as far as the test can know them.
    fn issued_secrets(&self) -> Vec<String> {
        match self {
            TestVault::Standin(v) => v.issued_secrets(),
            TestVault::Dev(d) => vec![d.root.clone()],
        }
    }
}

async fn spawn_dev(bin: &std::path::Path, root: String) -> DevVault {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(bin)
        .env("HOME", home.path())
        .args([
            "server",
            "-dev",
            &format!("-dev-root-token-id={root}"),
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn vault server -dev");
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    let relay = Relay::start(target).await;
    let dev = DevVault {
        child,
        _home: home,
        relay,
        root,
    };
    let http = VaultHttp::new(&format!("http://{target}"));
    let t0 = Instant::now();
    loop {
        if let Ok(r) = http.call("GET", "sys/health", None, None).await {
            if r.status == 200 {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "vault server -dev did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dev
}

// ---------------------------------------------------------------------------
// A proxy in front of MariaDB with a Vault credential source.

fn provision_for(
    role: &str,
    ttl: &str,
    max: &str,
    token_ttl: &str,
    token_max: &str,
) -> MysqlProvision {
    let db = db();
    MysqlProvision {
        mysql_port: db.port(),
        admin_user: db.admin_user().into(),
        admin_password: db.admin_password().into(),
        role: role.into(),
        default_ttl: ttl.into(),
        max_ttl: max.into(),
        token_ttl: token_ttl.into(),
        token_max_ttl: token_max.into(),
        ..MysqlProvision::default()
    }
}

fn vault_proxy_toml(vault_url: &str, role: &str, c: &Provisioned, rotation: &str) -> String {
    format!(
        r#"
# Scanned for secrets too: /metrics and /v1/sessions.
[admin]
bind = "127.0.0.1:0"

[vault]
address = "{vault_url}"
request_timeout = "2s"
[vault.auth]
method = "approle"
role_id = "{role_id}"
secret_id = "{secret_id}"

[rotation]
{rotation}

[[listener]]
name = "main"
bind = "127.0.0.1:0"
handshake_timeout = "5s"
auth_failure_delay = "20ms"
[[listener.users]]
name = "{LOCAL_USER}"
password = "{LOCAL_PASSWORD}"
[listener.upstream]
address = "127.0.0.1:{port}"
credentials = "vault"
tls = "disabled"
connect_timeout = "2s"
# These tests count upstream sessions exactly and detect revoked credentials
# through new upstream logins: no ready-connection pool.
idle_pool = 0

[credentials.vault]
type = "vault"
role = "{role}"
"#,
        role_id = c.role_id,
        secret_id = c.secret_id,
        port = db().port(),
    )
}

/// What a test holds: the proxy, its Vault, and every generation it published.
struct Harness {
    vault: TestVault,
    running: Option<Running>,
    creds: Provisioned,
    role: String,
    gens: Arc<Mutex<BTreeMap<u64, Arc<Generation>>>>,
    watcher: tokio::task::JoinHandle<()>,
    toml: String,
    /// /metrics and /v1/sessions as sampled while the test ran.
    admin_samples: Arc<Mutex<Vec<String>>>,
    sampler: tokio::task::JoinHandle<()>,
}

/// One GET to the admin listener; the body.
async fn admin_get(addr: SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

/// Samples /metrics and /v1/sessions every 150 ms (distinct answers kept).
fn spawn_sampler(addr: SocketAddr, out: Arc<Mutex<Vec<String>>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = [String::new(), String::new()];
        loop {
            for (i, path) in ["/metrics", "/v1/sessions"].into_iter().enumerate() {
                if let Some(body) = admin_get(addr, path).await {
                    if body != last[i] {
                        out.lock().unwrap().push(body.clone());
                        last[i] = body;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    })
}

impl Harness {
    async fn start(role: &str, p: MysqlProvision, rotation: &str) -> Harness {
        Harness::start_on(TestVault::start().await, role, p, rotation, false).await
    }

    async fn start_on(
        vault: TestVault,
        role: &str,
        p: MysqlProvision,
        rotation: &str,
        down: bool,
    ) -> Harness {
        let creds = vault.provision(&p).await;
        if down {
            vault.set_down(true);
        }
        let toml = vault_proxy_toml(&vault.url(), role, &creds, rotation);
        let cfg = sqlease::config::Config::from_toml(&toml)
            .unwrap_or_else(|p| panic!("bad config: {p:?}"));
        let running = sqlease::app::start(cfg).await.expect("start sqlease");
        assert_eq!(running.sources.len(), 1);
        let gens: Arc<Mutex<BTreeMap<u64, Arc<Generation>>>> = Default::default();
        let mut rx = running.sources[0].subscribe();
        let g2 = gens.clone();
        let watcher = tokio::spawn(async move {
            loop {
                if let Some(g) = rx.borrow_and_update().clone() {
                    g2.lock().unwrap().entry(g.id).or_insert(g);
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        let admin_samples: Arc<Mutex<Vec<String>>> = Default::default();
        let sampler = spawn_sampler(
            running.admin.expect("admin listener"),
            Arc::clone(&admin_samples),
        );
        Harness {
            vault,
            running: Some(running),
            creds,
            role: role.to_string(),
            gens,
            watcher,
            toml,
            admin_samples,
            sampler,
        }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    fn current(&self) -> Option<Arc<Generation>> {
        self.running().sources[0].current()
    }

    fn current_id(&self) -> u64 {
        self.current().map_or(0, |g| g.id)
    }

    fn prefix(&self) -> String {
        format!("v-approle-{}-", self.role)
    }

    fn opts(&self) -> mysql_async::Opts {
        proxy_opts(self.running(), None)
    }

    async fn try_connect(&self) -> Result<mysql_async::Conn, mysql_async::Error> {
        match tokio::time::timeout(Duration::from_secs(15), mysql_async::Conn::new(self.opts()))
            .await
        {
            Ok(r) => r.inspect_err(note_client_error),
            Err(_) => panic!("connecting through sqlease timed out"),
        }
    }

    async fn connect(&self) -> mysql_async::Conn {
        self.try_connect().await.expect("connect through sqlease")
    }

    /// Every secret in play for this test.
    fn secrets(&self) -> Vec<String> {
        let mut s = vec![LOCAL_PASSWORD.to_string(), self.creds.secret_id.clone()];
        s.extend(self.vault.issued_secrets());
        s.extend(
            self.gens
                .lock()
                .unwrap()
                .values()
                .map(|g| g.password().expose_secret().to_string()),
        );
        s
    }

    /// Shuts the proxy down (revoking its leases) and scans for leaks.
    async fn finish(mut self, extra: &[String]) {
        // /metrics and /v1/sessions with a live session, then everything
        // sampled while the test ran, are scanned with the rest.
        self.sampler.abort();
        let admin = self.running().admin.expect("admin listener");
        let live =
            tokio::time::timeout(Duration::from_secs(5), mysql_async::Conn::new(self.opts()))
                .await
                .ok()
                .and_then(|r| r.inspect_err(note_client_error).ok());
        let sessions = admin_get(admin, "/v1/sessions")
            .await
            .expect("/v1/sessions");
        let metrics = admin_get(admin, "/metrics").await.expect("/metrics");
        assert!(metrics.contains("sqlease_client_connections"), "{metrics}");
        if live.is_some() {
            assert!(
                sessions.contains(&format!("\"upstream_user\":\"{}", self.prefix())),
                "/v1/sessions does not list the live session: {sessions}"
            );
        }
        if let Some(c) = live {
            let _ = c.disconnect().await;
        }
        let mut admin_texts = std::mem::take(&mut *self.admin_samples.lock().unwrap());
        assert!(
            !admin_texts.is_empty(),
            "the admin listener was never sampled"
        );
        admin_texts.push(sessions);
        admin_texts.push(metrics);
        let r = self.running.take().expect("running");
        r.shutdown(Duration::from_secs(2)).await;
        self.watcher.abort();
        let left = self.vault.leases(&self.role).await;
        assert!(left.is_empty(), "leases left after shutdown: {left:?}");
        let users = users_like(&self.prefix()).await;
        assert!(
            users.is_empty(),
            "MySQL users left after shutdown: {users:?}"
        );
        let mut extra = extra.to_vec();
        extra.extend(admin_texts);
        extra.push(format!(
            "{:?}",
            sqlease::config::Config::from_toml(&self.toml).unwrap()
        ));
        assert_no_leaks(&self.secrets(), &extra);
    }
}

/// A direct MariaDB connection as the static admin-capable test user.
async fn admin() -> mysql_async::Conn {
    mysql_async::Conn::new(direct_opts(None))
        .await
        .expect("admin connection")
}

async fn users_like(prefix: &str) -> Vec<String> {
    let mut c = admin().await;
    let v: Vec<String> = c
        .exec(
            "SELECT User FROM mysql.user WHERE User LIKE CONCAT(?, '%') ORDER BY User",
            (prefix,),
        )
        .await
        .unwrap();
    let _ = c.disconnect().await;
    v
}

async fn user_of(c: &mut mysql_async::Conn) -> Result<String, mysql_async::Error> {
    let u: Option<String> = c.query_first("SELECT CURRENT_USER()").await?;
    Ok(u.unwrap_or_default()
        .split('@')
        .next()
        .unwrap_or_default()
        .to_string())
}

/// Queries `CURRENT_USER()` (never failing) until it is `want`, for up to 5 s.
async fn wait_user(c: &mut mysql_async::Conn, want: &str, what: &str) {
    let t0 = Instant::now();
    loop {
        let u = user_of(c).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        if u == want {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "timed out: {what} (still {u})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `f` every 100 ms for up to `secs`; returns how long it took.
async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !f().await {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out after {secs}s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t0.elapsed()
}

// ---------------------------------------------------------------------------
// Background load: a connector loop and long-lived sessions.

/// Per long-lived session: queries, errors, users seen (in order, deduplicated).
type SessionReport = (usize, Vec<String>, Vec<String>);

#[derive(Default, Debug)]
struct LoadReport {
    connects: usize,
    connect_errors: Vec<String>,
    sessions: Vec<SessionReport>,
}

struct Load {
    stop: watch::Sender<bool>,
    connector: tokio::task::JoinHandle<(usize, Vec<String>)>,
    sessions: Vec<tokio::task::JoinHandle<SessionReport>>,
}

impl Load {
    /// A client connecting every ~300 ms, and `n` sessions querying every 100 ms.
    async fn start(opts: mysql_async::Opts, n: usize) -> Load {
        let (stop, stop_rx) = watch::channel(false);
        let o = opts.clone();
        let rx = stop_rx.clone();
        let connector = tokio::spawn(async move {
            let (mut ok, mut errs) = (0, Vec::new());
            while !*rx.borrow() {
                match tokio::time::timeout(
                    Duration::from_secs(10),
                    mysql_async::Conn::new(o.clone()),
                )
                .await
                {
                    Ok(Ok(mut c)) => match user_of(&mut c).await {
                        Ok(_) => {
                            ok += 1;
                            let _ = c.disconnect().await;
                        }
                        Err(e) => {
                            note_client_error(&e);
                            errs.push(format!("query: {e}"));
                        }
                    },
                    Ok(Err(e)) => {
                        note_client_error(&e);
                        errs.push(format!("connect: {e}"));
                    }
                    Err(_) => errs.push("connect: timed out".into()),
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            (ok, errs)
        });
        let mut sessions = Vec::new();
        for _ in 0..n {
            let mut c = mysql_async::Conn::new(opts.clone())
                .await
                .expect("long-lived session");
            let rx = stop_rx.clone();
            sessions.push(tokio::spawn(async move {
                let (mut q, mut errs, mut users) = (0, Vec::new(), Vec::<String>::new());
                while !*rx.borrow() {
                    match user_of(&mut c).await {
                        Ok(u) => {
                            q += 1;
                            if users.last() != Some(&u) {
                                users.push(u);
                            }
                        }
                        Err(e) => {
                            note_client_error(&e);
                            errs.push(e.to_string());
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = c.disconnect().await;
                (q, errs, users)
            }));
        }
        Load {
            stop,
            connector,
            sessions,
        }
    }

    async fn stop(self) -> LoadReport {
        let _ = self.stop.send(true);
        let (connects, connect_errors) = self.connector.await.unwrap();
        let mut sessions = Vec::new();
        for s in self.sessions {
            sessions.push(s.await.unwrap());
        }
        LoadReport {
            connects,
            connect_errors,
            sessions,
        }
    }
}

/// Samples the number of `prefix` users in mysql.user every 200 ms.
fn sample_users(prefix: String) -> (watch::Sender<bool>, tokio::task::JoinHandle<Vec<usize>>) {
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut c = admin().await;
        let mut samples = Vec::new();
        while !*rx.borrow() {
            let n: Option<usize> = c
                .exec_first(
                    "SELECT COUNT(*) FROM mysql.user WHERE User LIKE CONCAT(?, '%')",
                    (prefix.as_str(),),
                )
                .await
                .unwrap();
            samples.push(n.unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        samples
    });
    (stop, task)
}

// ---------------------------------------------------------------------------
// 1. One lease for twenty clients.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_share_one_lease() {
    let h = Harness::start(
        "vpshare",
        provision_for("vpshare", "1h", "24h", "1h", "24h"),
        "",
    )
    .await;
    let g = h.current().expect("a generation at start");
    let mut conns = Vec::new();
    let mut joins = Vec::new();
    for _ in 0..20 {
        let o = h.opts();
        joins.push(tokio::spawn(async move { mysql_async::Conn::new(o).await }));
    }
    for j in joins {
        conns.push(j.await.unwrap().expect("connect through sqlease"));
    }
    let mut users = std::collections::BTreeSet::new();
    for c in &mut conns {
        users.insert(user_of(c).await.unwrap());
    }
    assert_eq!(users.len(), 1, "twenty clients, users {users:?}");
    let user = users.into_iter().next().unwrap();
    assert!(user.starts_with(&h.prefix()), "CURRENT_USER() = {user}");
    assert_eq!(user, g.username);
    assert_eq!(
        users_like(&h.prefix()).await,
        vec![user.clone()],
        "exactly one MySQL user"
    );
    let mut a = admin().await;
    let (n, distinct): (u64, u64) = a
        .exec_first(
            "SELECT COUNT(*), COUNT(DISTINCT USER) FROM information_schema.PROCESSLIST WHERE USER LIKE CONCAT(?, '%')",
            (h.prefix(),),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((n, distinct), (20, 1), "upstream sessions / distinct users");
    let leases = h.vault.leases("vpshare").await;
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(g.live_connections(), 20);
    for c in conns {
        c.disconnect().await.unwrap();
    }
    let _ = a.disconnect().await;
    let dbg = [format!("{g:?}"), format!("{:?}", h.running().sources[0])];
    h.finish(&dbg).await;
}

// ---------------------------------------------------------------------------
// 2. 40 s of rotation with 3 s leases (max 12 s) and a 4 s token (max 20 s).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_seconds_of_rotation_under_load() {
    let h = Harness::start(
        "vprot",
        provision_for("vprot", "3s", "12s", "4s", "20s"),
        "",
    )
    .await;
    let t0 = Instant::now();
    let (stop_sampler, sampler) = sample_users(h.prefix());
    let load = Load::start(h.opts(), 3).await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    let report = load.stop().await;
    let _ = stop_sampler.send(true);
    let samples = sampler.await.unwrap();
    let elapsed = t0.elapsed();

    // Clients connecting at any moment succeed; sessions see the user change with zero errors.
    assert!(
        report.connect_errors.is_empty(),
        "connect errors: {:?}",
        report.connect_errors
    );
    assert!(
        report.connects >= 80,
        "only {} connections in {elapsed:?}",
        report.connects
    );
    for (i, (q, errs, users)) in report.sessions.iter().enumerate() {
        assert!(errs.is_empty(), "session {i}: {errs:?}");
        assert!(*q >= 200, "session {i}: {q} queries");
        assert!(users.len() >= 4, "session {i} saw users {users:?}");
        assert!(
            users.iter().all(|u| u.starts_with(&h.prefix())),
            "{users:?}"
        );
    }
    // Never more than two live users.
    let max = samples.iter().copied().max().unwrap_or(0);
    assert!(samples.len() >= 150, "{} samples", samples.len());
    assert!(
        (1..=2).contains(&max),
        "live v- users peaked at {max}: {samples:?}"
    );

    // Leases and the token renewed, re-login before the token's max TTL.
    let src = h.running().vault_sources[0].stats().snapshot();
    assert!(src.logins >= 2, "{src:?}");
    assert!(src.renewals >= 5, "{src:?}");
    if let TestVault::Standin(v) = &h.vault {
        let s = v.stats();
        assert!(
            s.token_renewals >= 2 && s.lease_renewals >= 3 && s.logins >= 2,
            "{s:?}"
        );
    }

    // A new generation before every deadline, which was known in time.
    let gens: Vec<Arc<Generation>> = h.gens.lock().unwrap().values().cloned().collect();
    assert!(gens.len() >= 4, "{} generations in 40 s", gens.len());
    for w in gens.windows(2) {
        let (old, new) = (&w[0], &w[1]);
        assert_eq!(old.id + 1, new.id, "a generation went unobserved");
        let d = old.deadline().unwrap_or_else(|| {
            panic!(
                "generation {} was replaced without a known deadline",
                old.id
            )
        });
        assert!(
            new.issued + Duration::from_millis(500) <= d,
            "generation {} started {:?} before generation {}'s deadline",
            new.id,
            d.saturating_duration_since(new.issued),
            old.id
        );
    }
    // Retired users are dropped: only the current generation's user is left.
    let cur = h.current().expect("current generation");
    eventually(5, "retired users dropped", || {
        let p = h.prefix();
        let want = cur.username.clone();
        async move {
            let u = users_like(&p).await;
            u.len() == 1 && u[0] == want || u.is_empty()
        }
    })
    .await;
    for g in &gens[..gens.len() - 1] {
        assert!(g.is_retired());
    }
    eprintln!(
        "rotation: {} generations, {} connects, sessions {:?}, peak users {max}, stats {src:?}",
        gens.len(),
        report.connects,
        report
            .sessions
            .iter()
            .map(|s| (s.0, s.2.len()))
            .collect::<Vec<_>>()
    );
    let dbg: Vec<String> = gens.iter().map(|g| format!("{g:?}")).collect();
    h.finish(&dbg).await;
}

// ---------------------------------------------------------------------------
// 3a. Vault down for 10 s while the generation is valid.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_outage_of_ten_seconds_mid_run() {
    // 24 s leases (max 36 s): the first renewal (~14-16 s) falls in the outage
    // (8-18 s); the lease outlives it; the renewal after Vault returns is
    // capped and rotation resumes.
    let h = Harness::start(
        "vpdown",
        provision_for("vpdown", "24s", "36s", "1h", "24h"),
        "",
    )
    .await;
    let g1 = h.current().expect("generation 1");
    let load = Load::start(h.opts(), 2).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    h.vault.set_down(true);
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        h.current_id(),
        1,
        "the generation changed while Vault was down"
    );
    let stats = h.running().vault_sources[0].stats().snapshot();
    assert!(
        stats.failures >= 1,
        "no Vault call failed during the outage: {stats:?}"
    );
    assert!(stats.ready, "{stats:?}");
    h.vault.set_down(false);
    let up_at = Instant::now();
    let resumed = eventually(10, "rotation resumes after Vault returns", || {
        let id = h.current_id();
        async move { id >= 2 }
    })
    .await;
    // New clients get the new user; then stop the load.
    let new_user = h.current().unwrap().username.clone();
    let mut c = h.connect().await;
    assert_eq!(user_of(&mut c).await.unwrap(), new_user);
    c.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.stop().await;
    assert!(
        report.connect_errors.is_empty(),
        "{:?}",
        report.connect_errors
    );
    assert!(report.connects >= 40, "{report:?}");
    for (q, errs, users) in &report.sessions {
        assert!(errs.is_empty(), "{errs:?}");
        assert!(*q >= 150);
        assert_eq!(users.first(), Some(&g1.username));
        assert_eq!(users.last(), Some(&new_user), "{users:?}");
    }
    eprintln!(
        "outage: Vault down {:?}; rotation resumed {resumed:?} after it returned",
        up_at.saturating_duration_since(down_at)
    );
    h.finish(&[]).await;
}

// ---------------------------------------------------------------------------
// 3b. Vault down at startup.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_down_at_startup_then_serves() {
    let vault = TestVault::start().await;
    let p = provision_for("vpstart", "1h", "24h", "1h", "24h");
    let h = Harness::start_on(vault, "vpstart", p, "", true).await;
    assert!(h.current().is_none(), "a generation without Vault?");
    let status = h.running().sources[0].status();
    assert!(status.contains("Vault"), "status: {status}");
    assert!(!h.running().vault_sources[0].stats().snapshot().ready);
    let e = h
        .try_connect()
        .await
        .expect_err("a client is served without credentials");
    match &e {
        mysql_async::Error::Server(s) => {
            assert_eq!(s.code, 2003, "{s:?}");
            assert!(
                s.message
                    .contains("no database credentials are available yet"),
                "{}",
                s.message
            );
        }
        other => panic!("unexpected error: {other:?}"),
    }
    h.vault.set_down(false);
    let up = Instant::now();
    let mut c = loop {
        match h.try_connect().await {
            Ok(c) => break c,
            Err(e) => assert!(
                up.elapsed() < Duration::from_secs(5),
                "not serving 5 s after Vault came up: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let served = up.elapsed();
    let u = user_of(&mut c).await.unwrap();
    assert!(u.starts_with(&h.prefix()), "{u}");
    c.disconnect().await.unwrap();
    eprintln!("down at start: served {served:?} after Vault came up");
    h.finish(&[e.to_string()]).await;
}

// ---------------------------------------------------------------------------
// 4. Revoked out of band: a lease, then the token.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_revoked_out_of_band_is_recovered() {
    let h = Harness::start(
        "vprevl",
        provision_for("vprevl", "1h", "24h", "1h", "24h"),
        "",
    )
    .await;
    let g1 = h.current().unwrap();
    let mut idle = h.connect().await;
    assert_eq!(user_of(&mut idle).await.unwrap(), g1.username);
    let leases = h.vault.leases("vprevl").await;
    assert_eq!(leases.len(), 1);
    h.vault.revoke_lease(&leases[0]).await;
    let revoked = Instant::now();
    assert!(
        users_like(&h.prefix()).await.is_empty(),
        "the MySQL user survived the revocation"
    );
    // The idle session keeps working: MySQL sessions survive DROP USER.
    assert_eq!(user_of(&mut idle).await.unwrap(), g1.username);
    // A new client: its upstream login is refused (1045), the session
    // reports AuthRejected, the manager fetches generation 2, the client is served.
    let mut c = h
        .try_connect()
        .await
        .expect("first new client after the revocation");
    let recovered = revoked.elapsed();
    let u = user_of(&mut c).await.unwrap();
    assert_ne!(u, g1.username);
    assert!(u.starts_with(&h.prefix()));
    assert!(
        recovered < Duration::from_secs(5),
        "recovery took {recovered:?}"
    );
    assert_eq!(h.current_id(), 2);
    assert!(g1.is_retired());
    // The idle session moves to generation 2 at its next command, without error.
    wait_user(&mut idle, &u, "idle session moves to generation 2").await;
    assert_eq!(h.vault.leases("vprevl").await.len(), 1);
    idle.disconnect().await.unwrap();
    c.disconnect().await.unwrap();
    eprintln!("lease revoked out of band: new client served {recovered:?} after");
    h.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_revoked_out_of_band_is_recovered() {
    let h = Harness::start(
        "vprevt",
        provision_for("vprevt", "1h", "24h", "1h", "24h"),
        "",
    )
    .await;
    let g1 = h.current().unwrap();
    let mut idle = h.connect().await;
    assert_eq!(user_of(&mut idle).await.unwrap(), g1.username);
    let leases = h.vault.leases("vprevt").await;
    assert_eq!(leases.len(), 1);
    let accessors = h.vault.approle_token_accessors(&leases[0]).await;
    assert_eq!(accessors.len(), 1, "{accessors:?}");
    h.vault.revoke_token_accessor(&accessors[0]).await;
    let revoked = Instant::now();
    // Vault revokes the token's leases (asynchronously): the user goes.
    eventually(5, "the token's lease revoked", || {
        let p = h.prefix();
        async move { users_like(&p).await.is_empty() }
    })
    .await;
    assert_eq!(user_of(&mut idle).await.unwrap(), g1.username);
    let mut c = h
        .try_connect()
        .await
        .expect("first new client after the token revocation");
    let recovered = revoked.elapsed();
    let u = user_of(&mut c).await.unwrap();
    assert_ne!(u, g1.username);
    assert!(
        recovered < Duration::from_secs(5),
        "recovery took {recovered:?}"
    );
    let s = h.running().vault_sources[0].stats().snapshot();
    assert_eq!(s.logins, 2, "{s:?}");
    wait_user(&mut idle, &u, "idle session moves to the new generation").await;
    idle.disconnect().await.unwrap();
    c.disconnect().await.unwrap();
    eprintln!("token revoked out of band: new client served {recovered:?} after");
    h.finish(&[]).await;
}

// ---------------------------------------------------------------------------
// 7. The strict deadline policy acts on deadlines learned from Vault.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_policy_closes_a_pinned_session_at_the_learned_deadline() {
    let h = Harness::start(
        "vpstrict",
        provision_for("vpstrict", "3s", "12s", "1h", "24h"),
        "deadline_policy = \"strict\"",
    )
    .await;
    let g1 = h.current().unwrap();
    assert!(
        g1.deadline().is_none(),
        "the lease's max TTL is not known at issue"
    );
    let mut pinned = h.connect().await;
    pinned.query_drop("BEGIN").await.unwrap();
    let _ = user_of(&mut pinned).await.unwrap();
    // The capped renewal (~9-11 s after issue) reveals the 12 s deadline.
    eventually(15, "generation 2", || {
        let id = h.current_id();
        async move { id >= 2 }
    })
    .await;
    let d = g1
        .deadline()
        .expect("generation 1's deadline published when learned");
    let life = d.saturating_duration_since(g1.issued);
    assert!(
        life > Duration::from_millis(10_500) && life <= Duration::from_millis(12_500),
        "deadline {life:?} after issue"
    );
    // Still before the deadline: the pinned session works.
    assert_eq!(user_of(&mut pinned).await.unwrap(), g1.username);
    tokio::time::sleep(d.saturating_duration_since(Instant::now()) + Duration::from_millis(300))
        .await;
    let e = user_of(&mut pinned)
        .await
        .expect_err("served past the deadline");
    note_client_error(&e);
    match &e {
        mysql_async::Error::Server(s) => {
            assert_eq!(s.code, 1927, "{s:?}");
            assert!(s.message.contains("deadline_policy"), "{}", s.message);
        }
        other => panic!("unexpected error {other:?}"),
    }
    drop(pinned);
    // Others are unaffected.
    let mut c = h.connect().await;
    assert!(user_of(&mut c).await.unwrap().starts_with(&h.prefix()));
    c.disconnect().await.unwrap();
    h.finish(&[e.to_string()]).await;
}

// ---------------------------------------------------------------------------
// 5. No secret leaks: logs at trace level, client errors, Debug output.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_errors_or_debug_output() {
    let h = Harness::start(
        "vpleak",
        provision_for("vpleak", "3s", "12s", "4s", "20s"),
        "",
    )
    .await;
    let mut texts = Vec::new();
    // Clients: a good one, a wrong local password.
    let mut c = h.connect().await;
    let _ = user_of(&mut c).await.unwrap();
    let bad: mysql_async::Opts = mysql_async::OptsBuilder::from_opts(h.opts())
        .pass(Some("not-the-password"))
        .into();
    let e = mysql_async::Conn::new(bad)
        .await
        .expect_err("wrong password accepted");
    note_client_error(&e);
    texts.push(format!("{e} {e:?}"));
    // A lease revoked out of band, a rotation, a re-login.
    let leases = h.vault.leases("vpleak").await;
    h.vault.revoke_lease(&leases[0]).await;
    let mut c2 = h.connect().await;
    let _ = user_of(&mut c2).await.unwrap();
    // Vault down briefly: errors and retries are logged.
    h.vault.set_down(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.vault.set_down(false);
    eventually(20, "a re-login and three generations", || {
        let s = h.running().vault_sources[0].stats().snapshot();
        async move { s.logins >= 2 && s.generations >= 3 }
    })
    .await;
    let _ = user_of(&mut c).await.unwrap();
    let _ = user_of(&mut c2).await.unwrap();
    // Debug output of everything a user might print.
    let r = h.running();
    texts.push(format!("{:?}", r.sources));
    texts.push(format!("{:?}", r.vault_sources));
    texts.push(format!("{:?}", r.vault_sources[0].stats()));
    for g in h.gens.lock().unwrap().values() {
        texts.push(format!("{g:?}"));
        texts.push(format!("{:?}", g.attach()));
    }
    texts.push(format!("{:?}", h.creds));
    texts.push(r.sources[0].status());
    c.disconnect().await.unwrap();
    c2.disconnect().await.unwrap();
    let secrets = h.secrets();
    assert!(secrets.len() >= 6, "{} secrets", secrets.len());
    let logs = captured_logs();
    // The scan can see what sits next to a password: the user names are logged.
    for g in h.gens.lock().unwrap().values() {
        assert!(
            logs.contains(&g.username),
            "generation {} not in the logs",
            g.id
        );
    }
    eprintln!(
        "leak scan: {} secrets against {} KiB of trace logs",
        secrets.len(),
        logs.len() / 1024
    );
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "the capture is not at trace level"
    );
    h.finish(&texts).await;
}

// ---------------------------------------------------------------------------
// 6. Real Vault or a visible notice.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_vault_when_on_path_else_a_visible_notice() {
    let vault = match vault_on_path() {
        Some(bin) => {
            let msg = format!(
                "vault_proxy: running against a real `vault server -dev` ({})",
                bin.display()
            );
            println!("{msg}");
            eprintln!("{msg}");
            TestVault::start().await
        }
        None => {
            let msg = "vault_proxy: skipped: vault not on PATH — the real-Vault run was skipped; \
                       these tests ran against the Vault stand-in instead";
            println!("{msg}");
            eprintln!("{msg}");
            TestVault::standin(format!("root-{}", random_hex()))
        }
    };
    let kind = vault.kind();
    let h = Harness::start_on(
        vault,
        "vpnotice",
        provision_for("vpnotice", "1h", "24h", "1h", "24h"),
        "",
        false,
    )
    .await;
    let mut c = h.connect().await;
    let u = user_of(&mut c).await.unwrap();
    assert!(u.starts_with(&h.prefix()), "{u} ({kind})");
    assert_eq!(users_like(&h.prefix()).await, vec![u]);
    c.disconnect().await.unwrap();
    h.finish(&[]).await;
}
