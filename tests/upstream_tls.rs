//! TLS toward MySQL in every mode, against a MariaDB serving a certificate
//! signed by a test CA (names: localhost and 127.0.0.1).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, format!("sqlease test CA {name}"));
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca("one");
    let ca2 = ca("two");
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca1)
        .unwrap();
    let w = |name: &str, pem: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    Pki {
        ca: w("ca.pem", ca1.pem()),
        other_ca: w("other-ca.pem", ca2.pem()),
        cert: w("server.pem", leaf.pem()),
        key: w("server.key", key.serialize_pem()),
        _dir: dir,
    }
}

fn tls_db(pki: &Pki) -> MariaDb {
    let db = MariaDb::start_with(&[
        format!("--ssl-cert={}", pki.cert.display()),
        format!("--ssl-key={}", pki.key.display()),
        format!("--ssl-ca={}", pki.ca.display()),
    ])
    .expect("start MariaDB with TLS");
    db.cli(&format!(
        "CREATE USER '{UP_USER}'@'%' IDENTIFIED BY '{UP_PASSWORD}'; GRANT ALL PRIVILEGES ON *.* TO '{UP_USER}'@'%';"
    ))
    .unwrap();
    db
}

fn config(db: &MariaDb, host: &str, mode: &str, ca: Option<&Path>) -> String {
    let ca = ca
        .map(|p| format!("ca_file = \"{}\"\n", p.display()))
        .unwrap_or_default();
    config_toml(db, "", "")
        .replace(
            &format!("address = \"127.0.0.1:{}\"", db.port()),
            &format!("address = \"{host}:{}\"\n{ca}", db.port()),
        )
        .replace("tls = \"disabled\"", &format!("tls = \"{mode}\""))
}

async fn cipher_through(toml: &str) -> Result<String, String> {
    let r = start_with(toml).await;
    let res = match mysql_async::Conn::new(proxy_opts(&r, None)).await {
        Ok(mut c) => {
            let row: Option<(String, String)> = mysql_async::prelude::Queryable::query_first(
                &mut c,
                "SHOW SESSION STATUS LIKE 'Ssl_cipher'",
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok(row.map(|(_, v)| v).unwrap_or_default())
        }
        Err(e) => Err(e.to_string()),
    };
    r.shutdown(std::time::Duration::from_secs(1)).await;
    res
}

#[tokio::test]
async fn every_upstream_tls_mode() {
    let pki = pki();
    let db = tls_db(&pki);
    // disabled: plain; preferred and required: encrypted, not verified.
    assert_eq!(
        cipher_through(&config(&db, "127.0.0.1", "disabled", None))
            .await
            .unwrap(),
        ""
    );
    for mode in ["preferred", "required"] {
        let c = cipher_through(&config(&db, "127.0.0.1", mode, None))
            .await
            .unwrap();
        assert!(!c.is_empty(), "{mode}: not encrypted");
    }
    // verify_ca: the chain must lead to the configured CA (any name).
    let c = cipher_through(&config(&db, "127.0.0.1", "verify_ca", Some(&pki.ca))).await;
    assert!(c.is_ok_and(|c| !c.is_empty()));
    let e = cipher_through(&config(&db, "127.0.0.1", "verify_ca", Some(&pki.other_ca))).await;
    assert!(e.is_err(), "a certificate from another CA was accepted");
    // verify_identity: the chain and the name.
    let c = cipher_through(&config(&db, "localhost", "verify_identity", Some(&pki.ca))).await;
    assert!(c.is_ok_and(|c| !c.is_empty()));
    let toml = config(&db, "localhost", "verify_identity", Some(&pki.ca)).replace(
        "tls = \"verify_identity\"",
        "tls = \"verify_identity\"\nserver_name = \"db.example.net\"",
    );
    let e = cipher_through(&toml).await.unwrap_err();
    assert!(
        e.contains("2003") || e.to_lowercase().contains("tls"),
        "{e}"
    );
}

#[tokio::test]
async fn required_tls_against_a_server_without_tls_is_refused() {
    let db = db();
    let e = cipher_through(&config(db, "127.0.0.1", "required", None))
        .await
        .unwrap_err();
    assert!(e.contains("does not offer TLS"), "{e}");
}
