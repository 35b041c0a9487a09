//! Rotating credentials behind live client connections (design D5, D7),
//! with a credential source driven by the test: each "generation" is a
//! MySQL user the test creates, exactly what a Vault lease is to MariaDB.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::rotator::Rotator;
use common::*;
use mysql_async::prelude::*;
use sqlease::app::Running;

async fn start_rotating(prefix: &str, extra_top: &str) -> (Running, Arc<Rotator>) {
    let db = db();
    init_logging();
    let (rot, handle) = Rotator::new(db, prefix);
    rot.rotate(None);
    let toml = config_toml(db, "", extra_top);
    let cfg = sqlease::config::Config::from_toml(&toml).unwrap();
    let mut supplied = BTreeMap::new();
    supplied.insert("static".to_string(), handle);
    let r = sqlease::app::start_with_sources(cfg, supplied)
        .await
        .unwrap();
    (r, rot)
}

#[tokio::test]
async fn session_state_survives_a_swap() {
    let (r, rot) = start_rotating("rs_a_", "").await;
    let mut c = connect(&r).await;
    let id = c.id();
    c.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES', time_zone = '+05:30', character_set_client = latin1")
        .await
        .unwrap();
    c.query_drop("USE other_db").await.unwrap();
    c.query_drop(
        "CREATE TABLE IF NOT EXISTS rs_t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(20))",
    )
    .await
    .unwrap();
    c.query_drop("INSERT INTO rs_t (v) VALUES ('x')")
        .await
        .unwrap();
    let last_id: u64 = scalar(&mut c, "SELECT LAST_INSERT_ID()").await;
    let sel = c.prep("SELECT ? + 1, DATABASE()").await.unwrap();
    let (v, dbn): (i64, String) = c.exec_first(&sel, (41,)).await.unwrap().unwrap();
    assert_eq!((v, dbn.as_str()), (42, "other_db"));
    let before = user_of(&mut c).await;
    let g2 = rot.rotate(None);
    wait_user(&mut c, &g2.username).await;
    assert_ne!(before, g2.username);
    assert_eq!(c.id(), id, "connection id changed");
    let (mode, tz, cs, dbn): (String, String, String, String) = c
        .query_first("SELECT @@SESSION.sql_mode, @@SESSION.time_zone, @@SESSION.character_set_client, DATABASE()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mode, "ANSI_QUOTES,STRICT_ALL_TABLES");
    assert_eq!(tz, "+05:30");
    assert_eq!(cs, "latin1");
    assert_eq!(dbn, "other_db");
    let li: u64 = scalar(&mut c, "SELECT LAST_INSERT_ID()").await;
    assert_eq!(li, last_id, "LAST_INSERT_ID() lost in the swap");
    // The statement handle prepared before the swap still works, with and
    // without parameter types re-sent.
    let (v, _): (i64, String) = c.exec_first(&sel, (1,)).await.unwrap().unwrap();
    assert_eq!(v, 2);
    let (v, _): (i64, String) = c.exec_first(&sel, (2,)).await.unwrap().unwrap();
    assert_eq!(v, 3);
    // The old generation has no connection left: its user can be dropped.
    let g1 = rot.gens.lock().unwrap()[0].clone();
    let t0 = Instant::now();
    while g1.live_connections() > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "old connection never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rot.drop_unused(), 1);
    let users = rot.users_in_mysql();
    assert_eq!(users, vec![g2.username.clone()]);
    let plist = db()
        .cli(&format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{}'",
            g1.username
        ))
        .unwrap();
    assert_eq!(plist.trim(), "0");
    let n: i64 = scalar(&mut c, "SELECT COUNT(*) FROM rs_t").await;
    assert!(n >= 1);
}

#[tokio::test]
async fn transaction_is_pinned_until_commit() {
    let (r, rot) = start_rotating("rs_b_", "").await;
    let mut c = connect(&r).await;
    c.query_drop("CREATE TABLE IF NOT EXISTS sqltest.rs_tx (id INT)")
        .await
        .unwrap();
    let u1 = user_of(&mut c).await;
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO sqltest.rs_tx VALUES (1)")
        .await
        .unwrap();
    let g2 = rot.rotate(None);
    for _ in 0..20 {
        assert_eq!(user_of(&mut c).await, u1, "moved inside a transaction");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pinned = r.shared.registry.all();
    assert!(pinned
        .iter()
        .any(|s| *s.pinned.lock().unwrap() == Some("transaction")));
    c.query_drop("COMMIT").await.unwrap();
    wait_user(&mut c, &g2.username).await;
    // Other state that cannot be replayed pins too, and clears.
    c.query_drop("CREATE TEMPORARY TABLE sqltest.rs_tmp (a INT)")
        .await
        .unwrap();
    let g3 = rot.rotate(None);
    for _ in 0..10 {
        assert_eq!(user_of(&mut c).await, g2.username);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.query_drop("DROP TEMPORARY TABLE sqltest.rs_tmp")
        .await
        .unwrap();
    wait_user(&mut c, &g3.username).await;
}

#[tokio::test]
async fn strict_policy_closes_a_session_pinned_past_its_deadline() {
    let (r, rot) = start_rotating("rs_c_", "[rotation]\ndeadline_policy = \"strict\"\n").await;
    // Generation 1 has no deadline; make generation 2 short-lived.
    let mut c = connect(&r).await;
    let g2 = rot.rotate(Some(Duration::from_millis(1500)));
    wait_user(&mut c, &g2.username).await;
    c.query_drop("BEGIN").await.unwrap();
    rot.rotate(None);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let e = c.query_drop("SELECT 1").await.unwrap_err();
    let s = e.to_string();
    assert!(s.contains("1927") || s.contains("deadline_policy"), "{s}");
}

#[tokio::test]
async fn kill_query_by_proxy_id_before_and_after_rotation() {
    let (r, rot) = start_rotating("rs_d_", "").await;
    let mut victim = connect(&r).await;
    let mut killer = connect(&r).await;
    for round in 0..2 {
        if round == 1 {
            let g = rot.rotate(None);
            wait_user(&mut victim, &g.username).await;
            wait_user(&mut killer, &g.username).await;
        }
        let id = victim.id();
        let t0 = Instant::now();
        let sleeper = tokio::spawn(async move {
            let r = victim.query_first::<i64, _>("SELECT SLEEP(30)").await;
            (victim, r)
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        killer.query_drop(format!("KILL QUERY {id}")).await.unwrap();
        let (v, res) = tokio::time::timeout(Duration::from_secs(10), sleeper)
            .await
            .expect("KILL QUERY did not interrupt the sleep")
            .unwrap();
        victim = v;
        // An interrupted SLEEP returns 1 or fails with 1317, depending on timing.
        match res {
            Ok(v) => assert_eq!(v, Some(1)),
            Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1317),
            Err(e) => panic!("unexpected error {e}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(10));
        // The victim's session goes on.
        let one: i64 = scalar(&mut victim, "SELECT 1").await;
        assert_eq!(one, 1);
    }
}

#[tokio::test]
async fn sixteen_clients_through_rotations() {
    let secs: u64 = std::env::var("SQLEASE_ROTATION_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let every = Duration::from_secs(secs / 6).max(Duration::from_secs(2));
    let (r, rot) = start_rotating("rs_e_", "").await;
    db().cli("CREATE TABLE IF NOT EXISTS sqltest.soak (id INT AUTO_INCREMENT PRIMARY KEY, client INT, n INT, v VARCHAR(64)) CHARSET utf8mb4")
        .unwrap();
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for client in 0..16 {
        let opts = proxy_opts(&r, Some("sqltest"));
        tasks.push(tokio::spawn(async move {
            let mut c = mysql_async::Conn::new(opts).await.unwrap();
            let id = c.id();
            c.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES', time_zone = '+02:00', character_set_client = utf8mb4")
                .await
                .unwrap();
            let ins = c
                .prep("INSERT INTO soak (client, n, v) VALUES (?, ?, ?)")
                .await
                .unwrap();
            let sel = c.prep("SELECT COUNT(*), MAX(n) FROM soak WHERE client = ?").await.unwrap();
            let mut users = BTreeSet::new();
            let mut n = 0i64;
            while Instant::now() < stop {
                n += 1;
                // A multi-statement transaction.
                c.query_drop("BEGIN").await.unwrap();
                c.exec_drop(&ins, (client, n, format!("v{n} ✓"))).await.unwrap();
                c.exec_drop(&ins, (client, -n, "second")).await.unwrap();
                c.query_drop("COMMIT").await.unwrap();
                let (cnt, max): (i64, i64) = c.exec_first(&sel, (client,)).await.unwrap().unwrap();
                assert_eq!(cnt, 2 * n, "client {client}: rows lost or duplicated");
                assert_eq!(max, n);
                if n % 5 == 0 {
                    c.query_drop("USE other_db").await.unwrap();
                    let d: String = scalar(&mut c, "SELECT DATABASE()").await;
                    assert_eq!(d, "other_db");
                    c.query_drop("USE sqltest").await.unwrap();
                    let big: Vec<(i64, String)> = c
                        .query("SELECT seq, REPEAT('x', 200) FROM seq_1_to_2000")
                        .await
                        .unwrap();
                    assert_eq!(big.len(), 2000);
                }
                let (mode, tz, u): (String, String, String) = c
                    .query_first("SELECT @@SESSION.sql_mode, @@SESSION.time_zone, CURRENT_USER()")
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(mode, "ANSI_QUOTES");
                assert_eq!(tz, "+02:00");
                users.insert(u);
                assert_eq!(c.id(), id);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            c.disconnect().await.unwrap();
            users
        }));
    }
    let mut rotations = 0;
    while Instant::now() + every < stop {
        tokio::time::sleep(every).await;
        rot.rotate(None);
        rotations += 1;
        rot.drop_unused();
    }
    for t in tasks {
        let users = t.await.expect("client failed");
        assert!(
            users.len() >= 5.min(rotations),
            "a client saw only {} users over {rotations} rotations",
            users.len()
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    rot.drop_unused();
    let users = rot.users_in_mysql();
    assert_eq!(users.len(), 1, "retired users left: {users:?}");
    assert!(r.shared.metrics.swaps_total.load(Ordering::Relaxed) >= 16 * 4);
}

#[tokio::test]
async fn user_variables_move_with_the_session_on_mariadb() {
    let (r, rot) = start_rotating("rs_f_", "").await;
    let mut c = connect(&r).await;
    c.query_drop(
        "SET @i = 42, @big = 18446744073709551615, @d = 1.50, @f = 0.1e0, @s = 'héllo ✓', \
         @b = X'00FF27', @n = NULL, @`odd name` = 'x'",
    )
    .await
    .unwrap();
    c.query_drop("SET NAMES latin1").await.unwrap();
    c.query_drop("SET @l = 'latin'").await.unwrap();
    c.query_drop("SET NAMES utf8mb4").await.unwrap();
    let before: Vec<mysql_async::Row> = c
        .query(
            "SELECT @i + 1, @big, @d * 2, @f * 3, @s, HEX(@b), @n IS NULL, @`odd name`, \
             CHARSET(@s), CHARSET(@b), CHARSET(@l), HEX(@l)",
        )
        .await
        .unwrap();
    let g2 = rot.rotate(None);
    wait_user(&mut c, &g2.username).await;
    let after: Vec<mysql_async::Row> = c
        .query(
            "SELECT @i + 1, @big, @d * 2, @f * 3, @s, HEX(@b), @n IS NULL, @`odd name`, \
             CHARSET(@s), CHARSET(@b), CHARSET(@l), HEX(@l)",
        )
        .await
        .unwrap();
    assert_eq!(
        format!("{:?}", before[0].clone().unwrap()),
        format!("{:?}", after[0].clone().unwrap()),
        "user variables changed in the swap"
    );
    // A variable set later moves too, on the next rotation.
    c.query_drop("SET @later = 7").await.unwrap();
    let g3 = rot.rotate(None);
    wait_user(&mut c, &g3.username).await;
    let v: i64 = scalar(&mut c, "SELECT @later + @i").await;
    assert_eq!(v, 49);
}
