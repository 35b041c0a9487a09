//! TLS toward the application: `required` and `optional` listeners, the
//! `mariadb` CLI with and without certificate verification, error 3159 for
//! plain connections, and caching_sha2_password full authentication (the
//! password in clear, only ever over TLS).

mod common;
mod rawclient;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rawclient::*;
use sqlease::app::Running;

/// A self-signed certificate for 127.0.0.1 / localhost, written as PEM.
struct Certs {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

fn self_signed() -> Certs {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("generate a certificate");
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    Certs {
        der: ck.cert.der().to_vec(),
        _dir: dir,
        cert,
        key,
    }
}

fn tls_listener(mode: &str, c: &Certs, plugin: &str) -> String {
    format!(
        "default_auth_plugin = \"{plugin}\"\n[listener.tls]\nmode = \"{mode}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        c.cert.display(),
        c.key.display()
    )
}

async fn start_tls(mode: &str, c: &Certs, plugin: &str) -> Running {
    start_with(&config_toml(db(), &tls_listener(mode, c, plugin), "")).await
}

/// Runs `status` + a query and returns the "SSL:" line of the CLI's status.
async fn cli_ssl_line(port: u16, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend_from_slice(&["-e", "status; SELECT CONCAT('q', 'ok') AS r"]);
    let run = mariadb_cli(port, LOCAL_USER, LOCAL_PASSWORD, &all).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("qok"), "{}", run.stdout);
    run.stdout
        .lines()
        .find(|l| l.starts_with("SSL:"))
        .unwrap_or_else(|| panic!("no SSL line in {}", run.stdout))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_with_the_cli_and_3159_for_plain() {
    let c = self_signed();
    let r = start_tls("required", &c, "mysql_native_password").await;
    let port = r.addr("main").unwrap().port();
    // TLS without verification.
    let line = cli_ssl_line(port, &["--ssl", "--skip-ssl-verify-server-cert"]).await;
    assert!(line.contains("Cipher in use is TLS"), "{line}");
    // TLS verified against our CA, host 127.0.0.1 in the certificate.
    let ca = format!("--ssl-ca={}", c.cert.display());
    let line = cli_ssl_line(port, &[&ca, "--ssl-verify-server-cert"]).await;
    assert!(line.contains("Cipher in use is"), "{line}");
    // Verification against another CA fails on the client side.
    let other = self_signed();
    let bad_ca = format!("--ssl-ca={}", other.cert.display());
    let run = mariadb_cli(
        port,
        LOCAL_USER,
        LOCAL_PASSWORD,
        &[&bad_ca, "--ssl-verify-server-cert", "-e", "SELECT 1"],
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("ERROR 2026"), "{}", run.stderr);
    // Plain TCP: MySQL's error 3159.
    let run = mariadb_cli(
        port,
        LOCAL_USER,
        LOCAL_PASSWORD,
        &["--skip-ssl", "-e", "SELECT 1"],
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        run.stderr.trim_end(),
        "ERROR 3159 (HY000): Connections using insecure transport are prohibited while --require_secure_transport=ON."
    );
    // The same through mysql_async (built without TLS).
    let e = mysql_async::Conn::new(proxy_opts(&r, None))
        .await
        .unwrap_err();
    match e {
        mysql_async::Error::Server(se) => assert_eq!(se.code, 3159, "{se:?}"),
        other => panic!("expected 3159, got {other:?}"),
    }
    // A wrong password over TLS is still MySQL's 1045.
    let run = mariadb_cli(port, LOCAL_USER, "nope", &["--ssl", "-e", "SELECT 1"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr
            .starts_with("ERROR 1045 (28000): Access denied for user 'app'@'127.0.0.1'"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_tls_accepts_both() {
    let c = self_signed();
    let r = start_tls("optional", &c, "mysql_native_password").await;
    let port = r.addr("main").unwrap().port();
    let line = cli_ssl_line(port, &["--ssl", "--skip-ssl-verify-server-cert"]).await;
    assert!(line.contains("Cipher in use is TLS"), "{line}");
    let line = cli_ssl_line(port, &["--skip-ssl"]).await;
    assert!(line.contains("Not in use"), "{line}");
    // mysql_async without TLS works on an optional listener.
    let mut conn = connect(&r).await;
    let n: i64 = scalar(&mut conn, "SELECT 40 + 2").await;
    assert_eq!(n, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_sha2_with_the_cli_over_tls() {
    let c = self_signed();
    let r = start_tls("required", &c, "caching_sha2_password").await;
    let port = r.addr("main").unwrap().port();
    for auth in [
        "--default-auth=caching_sha2_password",
        "--default-auth=mysql_native_password",
    ] {
        let run = mariadb_cli(
            port,
            LOCAL_USER,
            LOCAL_PASSWORD,
            &["--ssl", auth, "-N", "-B", "-e", "SELECT 'sha2-ok'"],
        )
        .await;
        assert_eq!(run.code, Some(0), "{auth}: {run:?}");
        assert_eq!(run.stdout, "sha2-ok\n");
        // Wrong password: the fast path fails, the proxy asks for the
        // password in clear (TLS) and refuses it.
        let run = mariadb_cli(
            port,
            LOCAL_USER,
            "wrong",
            &["--ssl", auth, "-e", "SELECT 1"],
        )
        .await;
        assert_eq!(run.code, Some(1), "{auth}: {run:?}");
        assert!(
            run.stderr.starts_with("ERROR 1045 (28000)"),
            "{}",
            run.stderr
        );
    }
}

fn tls_connector(ca_der: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(ca_der.to_vec()))
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// A hand-driven caching_sha2_password exchange over TLS where the fast
/// path fails (as with a client whose cache is cold): the server answers
/// 0x04 ("perform full authentication") and checks the clear password.
async fn sha2_full_auth(
    addr: std::net::SocketAddr,
    ca: &[u8],
    password: &str,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let (mut tcp, g) = raw_connect(addr).await;
    assert_eq!(g.plugin, SHA2);
    assert_ne!(g.caps & sqlease::protocol::caps::CLIENT_SSL, 0);
    write_packet(&mut tcp, 1, &ssl_request(RAW_CAPS)).await;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut s = tls_connector(ca)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    // A scramble that cannot match: forces full authentication.
    write_packet(
        &mut s,
        2,
        &handshake_response(RAW_CAPS, LOCAL_USER, &[0x55; 32], SHA2),
    )
    .await;
    let bound = Duration::from_secs(5);
    let (seq, more) = read_packet(&mut s, bound).await.expect("auth more data");
    assert_eq!(seq, 3);
    assert_eq!(
        more,
        vec![0x01, 0x04],
        "expected perform-full-authentication"
    );
    let mut pw = password.as_bytes().to_vec();
    pw.push(0);
    write_packet(&mut s, 4, &pw).await;
    let (seq, answer) = read_packet(&mut s, bound).await.expect("login answer");
    assert_eq!(seq, 5);
    let after = if answer.first() == Some(&0x00) {
        let rows = raw_query(&mut s, "SELECT 'full-auth'")
            .await
            .expect("query after full auth");
        Some(rows[0][0].clone().unwrap().into_bytes())
    } else {
        None
    };
    (answer, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_sha2_full_authentication_over_tls() {
    let c = self_signed();
    let r = start_tls("required", &c, "caching_sha2_password").await;
    let addr = r.addr("main").unwrap();
    let (answer, after) = sha2_full_auth(addr, &c.der, LOCAL_PASSWORD).await;
    assert_eq!(answer[0], 0x00, "expected OK, got {answer:?}");
    assert_eq!(after.as_deref(), Some(&b"full-auth"[..]));
    let (answer, after) = sha2_full_auth(addr, &c.der, "not-the-password").await;
    assert_eq!(
        parse_err(&answer).map(|e| e.0),
        Some(1045),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(after.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_sha2_never_asks_for_a_clear_password_without_tls() {
    let c = self_signed();
    let r = start_tls("optional", &c, "caching_sha2_password").await;
    let addr = r.addr("main").unwrap();
    // Fast path over plain TCP: 0x03 then OK.
    let (mut s, g) = raw_connect(addr).await;
    let auth = sha2_auth(&g.scramble, LOCAL_PASSWORD);
    write_packet(
        &mut s,
        1,
        &handshake_response(RAW_CAPS, LOCAL_USER, &auth, SHA2),
    )
    .await;
    let bound = Duration::from_secs(5);
    assert_eq!(
        read_packet(&mut s, bound).await.unwrap(),
        (2, vec![0x01, 0x03])
    );
    let (seq, ok) = read_packet(&mut s, bound).await.unwrap();
    assert_eq!((seq, ok[0]), (3, 0x00));
    // A failing fast path over plain TCP: refused at once, no 0x04.
    let (mut s, _) = raw_connect(addr).await;
    write_packet(
        &mut s,
        1,
        &handshake_response(RAW_CAPS, LOCAL_USER, &[0x55; 32], SHA2),
    )
    .await;
    let (_, p) = read_packet(&mut s, bound).await.unwrap();
    assert_eq!(parse_err(&p).map(|e| e.0), Some(1045), "{p:?}");
}
