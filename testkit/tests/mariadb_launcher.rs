//! The private MariaDB launcher starts, restarts and serves the admin user.

use sqlease_testkit::mariadb::MariaDb;

#[test]
fn starts_restarts_and_answers() {
    let db = MariaDb::start().expect("start");
    assert_eq!(db.cli("SELECT 40+2").unwrap().trim(), "42");
    db.cli("CREATE DATABASE IF NOT EXISTS t1").unwrap();
    db.restart().expect("restart");
    assert!(db.cli("SHOW DATABASES").unwrap().contains("t1"));
}
