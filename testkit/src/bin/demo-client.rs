//! The demo's application: ONE connection, kept for the whole run, printing
//! every second the connection id it got in the greeting, CURRENT_USER() and
//! a value it stored once in a session variable.
//!
//! Usage: demo-client HOST PORT USER PASSWORD SECONDS

use std::time::{Duration, Instant};

use mysql_async::prelude::*;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, host, port, user, password, secs] = &args[..] else {
        anyhow::bail!("usage: demo-client HOST PORT USER PASSWORD SECONDS");
    };
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host.clone())
        .tcp_port(port.parse()?)
        .user(Some(user.clone()))
        .pass(Some(password.clone()))
        .prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts).await?;
    // Stored once, never set again: it must survive every rotation.
    conn.query_drop("SET SESSION time_zone = '+05:30'").await?;
    println!("connected once; stored time_zone = '+05:30' in the session");
    let stop = Instant::now() + Duration::from_secs(secs.parse()?);
    let mut users = Vec::<String>::new();
    let mut errors = 0u32;
    while Instant::now() < stop {
        match conn
            .query_first::<(String, String), _>("SELECT CURRENT_USER(), @@SESSION.time_zone")
            .await
        {
            Ok(Some((u, tz))) => {
                let changed = users.last() != Some(&u);
                if changed {
                    users.push(u.clone());
                }
                println!(
                    "connection id {:>4} | CURRENT_USER() = {:<44} | session time_zone = {tz}{}",
                    conn.id(),
                    u,
                    if changed && users.len() > 1 {
                        "   <- new MySQL user, same connection"
                    } else {
                        ""
                    }
                );
            }
            Ok(None) => println!("no row?"),
            Err(e) => {
                errors += 1;
                println!("error: {e}");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "done: {} distinct MySQL users over one connection (id {}), {} errors",
        users.len(),
        conn.id(),
        errors
    );
    conn.disconnect().await?;
    if errors > 0 {
        anyhow::bail!("{errors} errors");
    }
    Ok(())
}
