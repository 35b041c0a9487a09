//! The README's first command works: scripts/demo.sh shows one connection
//! moving through several MySQL users without an error.

use std::process::Command;

#[test]
fn demo_script_rotates_users_behind_one_connection() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/demo.sh"))
        .args(["--duration", "14"])
        .output()
        .expect("run scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let done = stdout
        .lines()
        .find(|l| l.starts_with("done: "))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}\n{stderr}"));
    let users: usize = done
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("user count");
    assert!(users >= 2, "the user never changed: {done}");
    assert!(done.ends_with(", 0 errors"), "{done}");
    let ids: std::collections::BTreeSet<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("connection id"))
        .map(|l| l.split('|').next().unwrap_or("").trim())
        .collect();
    assert_eq!(ids.len(), 1, "the connection id changed: {ids:?}");
    let tz_ok = stdout
        .lines()
        .filter(|l| l.starts_with("connection id"))
        .all(|l| l.ends_with("+05:30") || l.contains("+05:30   <-"));
    assert!(tz_ok, "the session variable was lost:\n{stdout}");
}
