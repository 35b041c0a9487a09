//! Faults, with nothing lost: 8 clients insert unique, numbered rows
//! (client, n) through sqlease — credentials from the Vault stand-in, the
//! upstream reached through a TCP relay the test can cut — while, in turn:
//!
//! 1. MariaDB is restarted;
//! 2. a DBA kills every upstream connection (`KILL`);
//! 3. the Vault stand-in is stopped for 5 s, slowed beyond sqlease's
//!    request timeout for 6 s, answers 500 for 5 s, then 429 for 5 s (a
//!    rotation is requested during each, and again after it);
//! 4. the lease is revoked out of band;
//! 5. the token is revoked out of band (its leases go with it);
//! 6. the path to MariaDB is cut for 5 s (every relayed connection closed,
//!    new ones refused).
//!
//! A client that gets an error whose outcome is unknown (2013, 2003, 1927,
//! a driver I/O error) drops its connection, reconnects and goes on with a
//! NEW number: it never re-sends a number. Afterwards every acknowledged
//! insert is in the table exactly once (PRIMARY KEY (client, n)), every row
//! in the table is one a client attempted, no client ever saw a duplicate
//! key (what a statement applied twice would produce), and after each
//! fault every client acknowledges a new insert within a stated bound:
//! [`RECOVERY_BOUND`] (15 s) after MariaDB is back, the path restored, or
//! the fault injected.
//!
//! Uses its own MariaDB and Vault stand-in, so nothing else is disturbed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;
use sqlease::credentials::SourceEvent;
use sqlease_testkit::vault::{MysqlProvision, StandinOptions, VaultStandin};
use tokio::net::{TcpListener, TcpStream};

const CLIENTS: usize = 8;
/// After each fault ends, every client has a new acknowledged insert within this.
const RECOVERY_BOUND: Duration = Duration::from_secs(15);
/// A new generation is published within this after a Vault fault ends.
const ROTATION_BOUND: Duration = Duration::from_secs(15);
const ROLE: &str = "faults";

// ------------------------------------------------------------ the cuttable path

#[derive(Default)]
struct RelayState {
    refusing: AtomicBool,
    conns: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// A TCP relay between sqlease and MariaDB that the test can cut.
struct CutRelay {
    addr: SocketAddr,
    state: Arc<RelayState>,
    task: tokio::task::JoinHandle<()>,
}

impl CutRelay {
    async fn start(target: SocketAddr) -> CutRelay {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let state = Arc::new(RelayState::default());
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = l.accept().await else {
                    continue;
                };
                if st.refusing.load(Ordering::SeqCst) {
                    // Refused: closed at once, before any byte.
                    drop(client);
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut conns = st.conns.lock().unwrap();
                conns.retain(|c| !c.is_finished());
                conns.push(h.abort_handle());
            }
        });
        CutRelay { addr, state, task }
    }

    /// Closes every relayed connection and refuses new ones.
    fn cut(&self) {
        self.state.refusing.store(true, Ordering::SeqCst);
        for c in self.state.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.state.refusing.store(false, Ordering::SeqCst);
    }
}

impl Drop for CutRelay {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

// ---------------------------------------------------------------- the workload

/// What the clients saw, per client.
#[derive(Default)]
struct Tally {
    acked: Vec<Mutex<BTreeSet<u64>>>,
    /// Attempted, outcome unknown (error or timeout).
    unknown: Vec<Mutex<BTreeSet<u64>>>,
    acks: Vec<AtomicU64>,
    /// When each insert was acknowledged (any client).
    ack_times: Mutex<Vec<Instant>>,
    /// (phase, what the client saw) → count.
    seen: Mutex<BTreeMap<(String, String), u64>>,
    phase: Mutex<String>,
    phase_start: Mutex<Option<Instant>>,
    duplicates: AtomicU64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            acked: (0..CLIENTS).map(|_| Default::default()).collect(),
            unknown: (0..CLIENTS).map(|_| Default::default()).collect(),
            acks: (0..CLIENTS).map(|_| AtomicU64::new(0)).collect(),
            ..Default::default()
        }
    }

    fn note(&self, what: String) {
        let phase = self.phase.lock().unwrap().clone();
        *self.seen.lock().unwrap().entry((phase, what)).or_default() += 1;
    }

    fn acks(&self) -> Vec<u64> {
        self.acks.iter().map(|a| a.load(Ordering::SeqCst)).collect()
    }

    fn total_acks(&self) -> u64 {
        self.acks().iter().sum()
    }

    /// The longest time within [from, to] in which no client had an insert
    /// acknowledged: the outage as the application saw it.
    fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let times = self.ack_times.lock().unwrap();
        let mut prev = from;
        let mut gap = Duration::ZERO;
        for &t in times.iter().filter(|t| **t >= from && **t <= to) {
            gap = gap.max(t - prev);
            prev = t;
        }
        gap.max(to.saturating_duration_since(prev))
    }

    fn set_phase(&self, p: &str) {
        *self.phase_start.lock().unwrap() = Some(Instant::now());
        *self.phase.lock().unwrap() = p.to_string();
    }
}

fn describe(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(se) => format!("error {}", se.code),
        mysql_async::Error::Io(_) => "I/O error (connection lost)".into(),
        mysql_async::Error::Driver(d) => format!("driver: {d}"),
        other => format!("{other}").chars().take(60).collect(),
    }
}

async fn client(id: usize, opts: mysql_async::Opts, t: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut conn: Option<mysql_async::Conn> = None;
    let mut n = 0u64;
    let mut on_this_conn = 0;
    while !stop.load(Ordering::SeqCst) {
        if conn.is_none() {
            match tokio::time::timeout(
                Duration::from_secs(10),
                mysql_async::Conn::new(opts.clone()),
            )
            .await
            {
                Ok(Ok(c)) => {
                    conn = Some(c);
                    on_this_conn = 0;
                }
                Ok(Err(e)) => {
                    t.note(format!("connect: {}", describe(&e)));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(_) => {
                    t.note("connect: timeout".into());
                    continue;
                }
            }
        }
        // A new number for every attempt, whatever happened to the last one.
        n += 1;
        let c = conn.as_mut().expect("connected");
        let sql = format!("INSERT INTO sqltest.ledger (client, n) VALUES ({id}, {n})");
        match tokio::time::timeout(Duration::from_secs(20), c.query_drop(sql)).await {
            Ok(Ok(())) => {
                t.acked[id].lock().unwrap().insert(n);
                t.acks[id].fetch_add(1, Ordering::SeqCst);
                t.ack_times.lock().unwrap().push(Instant::now());
                on_this_conn += 1;
                // New client sessions regularly: new upstream logins, which
                // is where revoked credentials show.
                if on_this_conn >= 40 {
                    if let Some(c) = conn.take() {
                        let _ = c.disconnect().await;
                    }
                }
            }
            Ok(Err(e)) => {
                t.unknown[id].lock().unwrap().insert(n);
                if let mysql_async::Error::Server(se) = &e {
                    if se.code == 1062 {
                        t.duplicates.fetch_add(1, Ordering::SeqCst);
                    }
                }
                t.note(format!("insert: {}", describe(&e)));
                // 2013 / 2003 / 1927 / I/O: the connection is suspect; a new
                // one, and a new number.
                conn = None;
            }
            Err(_) => {
                t.unknown[id].lock().unwrap().insert(n);
                t.note("insert: timeout".into());
                conn = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(c) = conn {
        let _ = c.disconnect().await;
    }
}

/// Waits until every client acknowledged an insert after `since`.
async fn all_progress(t: &Tally, since: &[u64], what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let now = t.acks();
        if now.iter().zip(since).all(|(a, b)| a > b) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < RECOVERY_BOUND,
            "{what}: clients without a new acknowledged insert after {RECOVERY_BOUND:?}: {:?}",
            now.iter()
                .zip(since)
                .enumerate()
                .filter(|(_, (a, b))| a <= b)
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------- the test

/// The current generation, waiting for one if there is none right now.
async fn current(
    source: &sqlease::credentials::CredentialHandle,
) -> Arc<sqlease::credentials::Generation> {
    source
        .wait_current(RECOVERY_BOUND)
        .await
        .expect("no credential generation")
}

fn upstream_threads(db: &MariaDb) -> Vec<u64> {
    db.cli(&format!(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE USER LIKE 'v-approle-{ROLE}-%'"
    ))
    .unwrap()
    .lines()
    .filter_map(|l| l.trim().parse().ok())
    .collect()
}

struct Report {
    rows: Vec<(String, Duration, Duration, String)>,
}

impl Report {
    /// `d`: from the end of the fault until every client had a new
    /// acknowledged insert; also reported: the longest time in the phase
    /// without any acknowledged insert.
    fn add(&mut self, t: &Tally, fault: &str, d: Duration, note: String) {
        let start = t.phase_start.lock().unwrap().expect("phase started");
        let gap = t.longest_gap(start, Instant::now());
        eprintln!(
            "faults: {fault}: every client served again {d:?} after the fault ended; \
             longest time without any acknowledged insert {gap:?} {note}"
        );
        self.rows.push((fault.to_string(), d, gap, note));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_lost_under_faults() {
    init_logging();
    let started = Instant::now();
    let db = Arc::new(MariaDb::start().expect("a private MariaDB"));
    db.cli(
        "CREATE DATABASE sqltest; \
         CREATE TABLE sqltest.ledger (client INT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (client, n))",
    )
    .unwrap();
    let vault = Arc::new(
        VaultStandin::start(StandinOptions {
            root_token: format!("root-{:016x}", rand::random::<u64>()),
            ..StandinOptions::default()
        })
        .unwrap(),
    );
    let creds = sqlease_testkit::vault::provision(
        &vault.url(),
        vault.root_token(),
        &MysqlProvision {
            mysql_port: db.port(),
            admin_user: db.admin_user().into(),
            admin_password: db.admin_password().into(),
            role: ROLE.into(),
            default_ttl: "1h".into(),
            max_ttl: "24h".into(),
            token_ttl: "1h".into(),
            token_max_ttl: "24h".into(),
            ..MysqlProvision::default()
        },
    )
    .await
    .expect("provision the Vault stand-in");
    let relay = CutRelay::start(db.addr()).await;
    let toml = format!(
        r#"
[vault]
address = "{url}"
request_timeout = "2s"
[vault.auth]
method = "approle"
role_id = "{role_id}"
secret_id = "{secret_id}"

[[listener]]
name = "main"
bind = "127.0.0.1:0"
handshake_timeout = "5s"
[[listener.users]]
name = "{LOCAL_USER}"
password = "{LOCAL_PASSWORD}"
[listener.upstream]
address = "{relay}"
credentials = "vault"
tls = "disabled"
connect_timeout = "2s"
# Every new client session logs in upstream: revoked credentials show at once.
idle_pool = 0

[credentials.vault]
type = "vault"
role = "{ROLE}"
"#,
        url = vault.url(),
        role_id = creds.role_id,
        secret_id = creds.secret_id,
        relay = relay.addr,
    );
    let r = start_with(&toml).await;
    let source = r.sources[0].clone();
    let opts = proxy_opts(&r, None);

    let tally = Arc::new(Tally::new());
    let stop = Arc::new(AtomicBool::new(false));
    tally.set_phase("warm-up");
    let mut clients = Vec::new();
    for id in 0..CLIENTS {
        clients.push(tokio::spawn(client(
            id,
            opts.clone(),
            Arc::clone(&tally),
            Arc::clone(&stop),
        )));
    }
    all_progress(&tally, &[0; CLIENTS], "warm-up").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut report = Report { rows: Vec::new() };

    // 1. MariaDB restarted.
    tally.set_phase("MariaDB restart");
    let before = tally.acks();
    let t = Instant::now();
    let db2 = Arc::clone(&db);
    tokio::task::spawn_blocking(move || db2.restart().expect("restart MariaDB"))
        .await
        .unwrap();
    let down_for = t.elapsed();
    let since = tally.acks();
    let d = all_progress(&tally, &since, "MariaDB restart").await;
    assert!(since.iter().sum::<u64>() >= before.iter().sum::<u64>());
    report.add(
        &tally,
        "MariaDB restart",
        d,
        format!("(restart took {down_for:?})"),
    );

    // 2. A DBA kills every upstream connection.
    tally.set_phase("DBA KILL");
    let since = tally.acks();
    let threads = upstream_threads(&db);
    assert!(!threads.is_empty(), "no upstream connection to kill");
    for id in &threads {
        let _ = db.cli(&format!("KILL {id}"));
    }
    let d = all_progress(&tally, &since, "DBA KILL").await;
    report.add(
        &tally,
        "DBA KILL",
        d,
        format!("({} connections killed)", threads.len()),
    );

    // 3. Vault faults: the workload goes on during each; rotation resumes after.
    type Fault = (
        &'static str,
        Duration,
        Box<dyn Fn(&VaultStandin, bool) + Send + Sync>,
    );
    let faults: Vec<Fault> = vec![
        (
            "Vault stopped (5 s)",
            Duration::from_secs(5),
            Box::new(|v, on| v.set_down(on)),
        ),
        (
            "Vault slowed to 3 s per request (6 s)",
            Duration::from_secs(6),
            Box::new(|v, on| {
                v.set_delay(if on {
                    Duration::from_secs(3)
                } else {
                    Duration::ZERO
                })
            }),
        ),
        (
            "Vault answers 500 (5 s)",
            Duration::from_secs(5),
            Box::new(|v, on| v.set_status_fault(on.then_some(500))),
        ),
        (
            "Vault answers 429 (5 s)",
            Duration::from_secs(5),
            Box::new(|v, on| v.set_status_fault(on.then_some(429))),
        ),
    ];
    for (name, dur, set) in &faults {
        tally.set_phase(name);
        let gen_before = current(&source).await.id;
        let acks_before = tally.total_acks();
        let v = Arc::clone(&vault);
        let set: &(dyn Fn(&VaultStandin, bool) + Send + Sync) = set.as_ref();
        tokio::task::block_in_place(|| set(&v, true));
        source.report(SourceEvent::RotateNow);
        tokio::time::sleep(*dur).await;
        let during = tally.total_acks() - acks_before;
        assert_eq!(
            source.current().map(|g| g.id),
            Some(gen_before),
            "{name}: a generation was published while Vault was failing"
        );
        tokio::task::block_in_place(|| set(&v, false));
        let since = tally.acks();
        assert!(
            during > 0,
            "{name}: no insert acknowledged during the fault"
        );
        let d = all_progress(&tally, &since, name).await;
        // Rotation works again.
        let t = Instant::now();
        source.report(SourceEvent::RotateNow);
        loop {
            if source.current().is_some_and(|g| g.id > gen_before) {
                break;
            }
            assert!(
                t.elapsed() < ROTATION_BOUND,
                "{name}: no new generation {ROTATION_BOUND:?} after Vault recovered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rot = t.elapsed();
        report.add(
        &tally,
            name,
            d,
            format!("({during} inserts acknowledged during the fault; next rotation {rot:?} after it ended)"),
        );
    }

    // 4. The lease revoked out of band (its MySQL user dropped).
    tally.set_phase("lease revoked");
    let since = tally.acks();
    let gen_before = current(&source).await.id;
    let leases = vault.live_leases();
    assert!(!leases.is_empty());
    let current_user = current(&source).await.username.clone();
    let lease = leases
        .iter()
        .find(|l| {
            vault
                .lease_info(l)
                .is_some_and(|i| i.username == current_user)
        })
        .expect("the current generation's lease")
        .clone();
    assert!(vault.revoke_lease_out_of_band(&lease).await.unwrap());
    let d = all_progress(&tally, &since, "lease revoked").await;
    let t = Instant::now();
    while source.current().map_or(0, |g| g.id) <= gen_before {
        assert!(
            t.elapsed() < RECOVERY_BOUND,
            "no new generation after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report.add(&tally, "lease revoked out of band", d, String::new());

    // 5. The token revoked out of band (its leases with it).
    tally.set_phase("token revoked");
    let since = tally.acks();
    let gen_before = current(&source).await.id;
    let current_user = current(&source).await.username.clone();
    let accessor = vault
        .live_leases()
        .iter()
        .filter_map(|l| vault.lease_info(l))
        .find(|i| i.username == current_user)
        .expect("the current lease")
        .token_accessor;
    assert!(vault.revoke_token_out_of_band(&accessor));
    let d = all_progress(&tally, &since, "token revoked").await;
    let t = Instant::now();
    while source.current().map_or(0, |g| g.id) <= gen_before {
        assert!(
            t.elapsed() < RECOVERY_BOUND,
            "no new generation after the token revocation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report.add(&tally, "token revoked out of band", d, String::new());

    // 6. The path to MariaDB cut for 5 s.
    tally.set_phase("path cut");
    relay.cut();
    tokio::time::sleep(Duration::from_secs(5)).await;
    relay.restore();
    let since = tally.acks();
    let d = all_progress(&tally, &since, "path cut").await;
    report.add(&tally, "path to MariaDB cut for 5 s", d, String::new());

    // Stop and check the ledger.
    tally.set_phase("after");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client task");
    }
    let table = db
        .cli("SELECT client, n FROM sqltest.ledger ORDER BY client, n")
        .unwrap();
    let mut rows: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); CLIENTS];
    let mut total_rows = 0u64;
    for l in table.lines() {
        let (c, n) = l.split_once('\t').expect("two columns");
        let (c, n): (usize, u64) = (c.parse().unwrap(), n.parse().unwrap());
        assert!(rows[c].insert(n), "({c}, {n}) twice in the table");
        total_rows += 1;
    }
    let count: u64 = db
        .cli("SELECT COUNT(*) FROM sqltest.ledger")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(count, total_rows);
    let (mut acked_total, mut unknown_total, mut unknown_applied) = (0, 0, 0);
    for (c, present) in rows.iter().enumerate() {
        let acked = tally.acked[c].lock().unwrap();
        let unknown = tally.unknown[c].lock().unwrap();
        let missing: Vec<_> = acked.difference(present).collect();
        assert!(
            missing.is_empty(),
            "client {c}: acknowledged inserts missing: {missing:?}"
        );
        let stray: Vec<_> = present
            .iter()
            .filter(|n| !acked.contains(n) && !unknown.contains(n))
            .collect();
        assert!(
            stray.is_empty(),
            "client {c}: rows never attempted: {stray:?}"
        );
        acked_total += acked.len();
        unknown_total += unknown.len();
        unknown_applied += unknown.intersection(present).count();
    }
    assert_eq!(count as usize, acked_total + unknown_applied);
    assert_eq!(
        tally.duplicates.load(Ordering::SeqCst),
        0,
        "a client saw a duplicate key: a statement was applied twice"
    );
    let seen = tally.seen.lock().unwrap().clone();
    eprintln!(
        "faults: {acked_total} acknowledged inserts, all present once; {unknown_total} with an unknown outcome, {unknown_applied} of them applied; {count} rows; {:?} in all",
        started.elapsed()
    );
    for ((phase, what), n) in &seen {
        eprintln!("faults: client saw during {phase}: {what} × {n}");
    }
    for (f, d, _, _) in &report.rows {
        assert!(*d < RECOVERY_BOUND, "{f}: {d:?}");
    }
    r.shutdown(Duration::from_secs(2)).await;
    // No lease and no MySQL user outlives the shutdown. (The stand-in drops
    // a delayed request whose client gave up; a real Vault may complete a
    // creds request after sqlease's timeout, leaving a lease sqlease never
    // learned of, which expires at its TTL.)
    let left: Vec<_> = vault
        .live_leases()
        .iter()
        .filter_map(|l| vault.lease_info(l))
        .map(|i| i.username)
        .collect();
    let users = db
        .cli(&format!(
            "SELECT user FROM mysql.user WHERE user LIKE 'v-approle-{ROLE}-%'"
        ))
        .unwrap();
    assert!(
        left.is_empty() && users.trim().is_empty(),
        "after shutdown: leases {left:?}, MySQL users {users:?}"
    );
}
