//! A small statement classifier for the session state the server's
//! trackers do not report: user variables, temporary tables, named locks,
//! LOCK TABLES, text-protocol PREPARE, HANDLER, XA, SQL_CALC_FOUND_ROWS,
//! next-transaction characteristics, and KILL (translated by the proxy).
//!
//! It errs on the side of pinning: a false positive only delays a swap.

/// What a statement does to session state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    TempTableCreated,
    TempTablesDropped(u32),
    UserVariable,
    NamedLock,
    NamedLocksReleased,
    LockTables,
    UnlockTables,
    SqlPrepare(String),
    SqlDeallocate(String),
    HandlerOpen,
    HandlerClose,
    XaStart,
    XaEnd,
    /// State that only lives until the next statement (FOUND_ROWS, SET TRANSACTION).
    Transient,
    /// `KILL [CONNECTION|QUERY] <id>`.
    Kill {
        query: bool,
        id: u64,
    },
}

/// Lower-cased text with comments removed (executable comments kept) and
/// string literals blanked, so that keywords inside strings do not count.
fn normalize(sql: &[u8]) -> String {
    const LIMIT: usize = 64 * 1024;
    let sql = &sql[..sql.len().min(LIMIT)];
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < sql.len() {
        let c = sql[i];
        match c {
            b'\'' | b'"' | b'`' => {
                let q = c;
                out.push(if q == b'`' { 'i' } else { 's' });
                i += 1;
                while i < sql.len() {
                    if sql[i] == b'\\' && q != b'`' {
                        i += 2;
                        continue;
                    }
                    if sql[i] == q {
                        if sql.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                if sql.get(i + 2) == Some(&b'!') || sql.get(i + 2) == Some(&b'M') {
                    // Executable comment: keep its body, drop the version.
                    i += 3;
                    while i < sql.len() && sql[i].is_ascii_digit() {
                        i += 1;
                    }
                    out.push(' ');
                } else {
                    i += 2;
                    while i + 1 < sql.len() && !(sql[i] == b'*' && sql[i + 1] == b'/') {
                        i += 1;
                    }
                    i += 2;
                    out.push(' ');
                }
            }
            b'*' if sql.get(i + 1) == Some(&b'/') => {
                i += 2;
                out.push(' ');
            }
            b'#' => {
                while i < sql.len() && sql[i] != b'\n' {
                    i += 1;
                }
            }
            b'-' if sql.get(i + 1) == Some(&b'-')
                && sql.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                while i < sql.len() && sql[i] != b'\n' {
                    i += 1;
                }
            }
            _ => {
                out.push(char::from(c.to_ascii_lowercase()));
                i += 1;
            }
        }
    }
    out
}

fn words(s: &str) -> Vec<&str> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '@' || c == '$'))
        .filter(|w| !w.is_empty())
        .collect()
}

fn has_user_var(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len()).any(|i| {
        b[i] == b'@'
            && (i == 0 || b[i - 1] != b'@')
            && b.get(i + 1).is_some_and(|c| {
                c.is_ascii_alphanumeric() || *c == b'_' || *c == b's' || *c == b'i'
            })
    })
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The common statements that cannot create session state, recognised
/// without allocating: a single DML / transaction statement with no user
/// variable, no locking function and no FOUND_ROWS.
fn obviously_stateless(sql: &[u8]) -> bool {
    const SHORT: usize = 4096;
    if sql.len() > SHORT || sql.contains(&b'@') || sql.contains(&b';') || sql.contains(&b'/') {
        return false;
    }
    let start = sql
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(sql.len());
    let word_end = sql[start..]
        .iter()
        .position(|c| !c.is_ascii_alphabetic())
        .map_or(sql.len(), |n| start + n);
    let word = &sql[start..word_end];
    let dml = [
        &b"select"[..],
        b"insert",
        b"update",
        b"delete",
        b"replace",
        b"begin",
        b"commit",
        b"rollback",
    ];
    dml.iter().any(|k| word.eq_ignore_ascii_case(k))
        && !contains_ci(sql, b"lock")
        && !contains_ci(sql, b"sql_calc")
        && !contains_ci(sql, b"#")
        && !contains_ci(sql, b"--")
}

/// Classifies one COM_QUERY text (possibly several statements).
pub fn classify(sql: &[u8]) -> Vec<Effect> {
    if obviously_stateless(sql) {
        return Vec::new();
    }
    let norm = normalize(sql);
    let mut out = Vec::new();
    for stmt in norm.split(';') {
        classify_one(stmt, &mut out);
    }
    out
}

fn classify_one(stmt: &str, out: &mut Vec<Effect>) {
    let w = words(stmt);
    let Some(&first) = w.first() else { return };
    let at = |i: usize| w.get(i).copied().unwrap_or("");
    match first {
        "create" if w.iter().take(4).any(|x| *x == "temporary") => {
            out.push(Effect::TempTableCreated);
        }
        "drop" if at(1) == "temporary" => {
            let names = stmt.split(',').count() as u32;
            out.push(Effect::TempTablesDropped(names.max(1)));
        }
        "drop" | "deallocate" if at(1) == "prepare" => {
            out.push(Effect::SqlDeallocate(at(2).to_string()));
        }
        "prepare" => out.push(Effect::SqlPrepare(at(1).to_string())),
        "lock" if at(1) == "tables" || at(1) == "table" => out.push(Effect::LockTables),
        "unlock" => out.push(Effect::UnlockTables),
        "flush" if stmt.contains("read lock") => out.push(Effect::LockTables),
        "handler" => {
            if w.contains(&"open") {
                out.push(Effect::HandlerOpen)
            } else if w.contains(&"close") {
                out.push(Effect::HandlerClose)
            }
        }
        "xa" => match at(1) {
            "start" | "begin" => out.push(Effect::XaStart),
            "commit" | "rollback" => out.push(Effect::XaEnd),
            _ => {}
        },
        "kill" => {
            let (query, idx) = match at(1) {
                "query" => (true, 2),
                "connection" => (false, 2),
                "hard" | "soft" => match at(2) {
                    "query" => (true, 3),
                    "connection" => (false, 3),
                    _ => (false, 2),
                },
                _ => (false, 1),
            };
            if let Ok(id) = at(idx).parse::<u64>() {
                if w.len() == idx + 1 {
                    out.push(Effect::Kill { query, id });
                }
            }
        }
        "set" if at(1) == "transaction" => out.push(Effect::Transient),
        _ => {}
    }
    let assigns = stmt.contains(":=")
        || (matches!(first, "set" | "call") && has_user_var(stmt))
        || (first == "select" && stmt.contains("into") && has_user_var(stmt));
    if assigns {
        out.push(Effect::UserVariable);
    }
    if stmt.contains("get_lock") {
        out.push(Effect::NamedLock);
    }
    if stmt.contains("release_all_locks") {
        out.push(Effect::NamedLocksReleased);
    }
    if stmt.contains("sql_calc_found_rows") {
        out.push(Effect::Transient);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Vec<Effect> {
        classify(s.as_bytes())
    }

    #[test]
    fn user_variables() {
        assert_eq!(c("SET @a = 1"), vec![Effect::UserVariable]);
        assert_eq!(c("select 1 into @x"), vec![Effect::UserVariable]);
        assert_eq!(c("SELECT @a := 5"), vec![Effect::UserVariable]);
        assert_eq!(c("CALL p(@out)"), vec![Effect::UserVariable]);
        assert!(c("SELECT @a").is_empty());
        assert!(c("SET @@session.sql_mode = ''").is_empty());
        assert!(c("SET SESSION time_zone = '+01:00'").is_empty());
        assert!(c("SELECT '@a := 1'").is_empty());
    }

    #[test]
    fn pins_and_unpins() {
        assert_eq!(
            c("CREATE TEMPORARY TABLE t (a int)"),
            vec![Effect::TempTableCreated]
        );
        assert_eq!(
            c("create or replace temporary table t (a int)"),
            vec![Effect::TempTableCreated]
        );
        assert_eq!(
            c("DROP TEMPORARY TABLE a, b"),
            vec![Effect::TempTablesDropped(2)]
        );
        assert_eq!(c("LOCK TABLES t WRITE"), vec![Effect::LockTables]);
        assert_eq!(c("UNLOCK TABLES"), vec![Effect::UnlockTables]);
        assert_eq!(c("SELECT GET_LOCK('x', 1)"), vec![Effect::NamedLock]);
        assert_eq!(
            c("SELECT RELEASE_ALL_LOCKS()"),
            vec![Effect::NamedLocksReleased]
        );
        assert_eq!(
            c("PREPARE s FROM 'select 1'"),
            vec![Effect::SqlPrepare("s".into())]
        );
        assert_eq!(
            c("DEALLOCATE PREPARE s"),
            vec![Effect::SqlDeallocate("s".into())]
        );
        assert_eq!(
            c("SELECT SQL_CALC_FOUND_ROWS * FROM t"),
            vec![Effect::Transient]
        );
        assert_eq!(
            c("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            vec![Effect::Transient]
        );
        assert!(c("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE").is_empty());
        assert_eq!(c("XA START 'x'"), vec![Effect::XaStart]);
        assert_eq!(c("HANDLER t OPEN"), vec![Effect::HandlerOpen]);
    }

    #[test]
    fn fast_path_agrees_with_the_full_classifier() {
        for s in [
            "SELECT c FROM sbtest1 WHERE id=42",
            "  select 1",
            "INSERT INTO t VALUES (1)",
            "COMMIT",
            "BEGIN",
            "SELECT GET_LOCK('x', 1)",
            "SELECT SQL_CALC_FOUND_ROWS * FROM t",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t LOCK IN SHARE MODE",
            "SELECT 1 INTO @x",
        ] {
            if obviously_stateless(s.as_bytes()) {
                let norm = normalize(s.as_bytes());
                let mut full = Vec::new();
                for st in norm.split(';') {
                    classify_one(st, &mut full);
                }
                assert!(full.is_empty(), "{s}: {full:?}");
            }
        }
        assert!(obviously_stateless(b"SELECT c FROM sbtest1 WHERE id=42"));
        assert!(!obviously_stateless(b"SELECT GET_LOCK('x', 1)"));
    }

    #[test]
    fn kill_and_comments() {
        assert_eq!(
            c("KILL QUERY 42"),
            vec![Effect::Kill {
                query: true,
                id: 42
            }]
        );
        assert_eq!(
            c("kill 7"),
            vec![Effect::Kill {
                query: false,
                id: 7
            }]
        );
        assert_eq!(
            c("KILL CONNECTION 7"),
            vec![Effect::Kill {
                query: false,
                id: 7
            }]
        );
        assert!(c("KILL QUERY ID 7").is_empty());
        assert_eq!(c("/* hi */ SET @a=1 -- x"), vec![Effect::UserVariable]);
        assert_eq!(
            c("/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE */"),
            vec![Effect::UserVariable]
        );
        assert_eq!(c("select 1; set @a=1"), vec![Effect::UserVariable]);
        assert!(c("select 'create temporary table'").is_empty());
    }
}
