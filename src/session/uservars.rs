//! Moving user variables (`SET @x = ...`) to a new upstream connection.
//!
//! MariaDB lists a session's user variables with their types in
//! `information_schema.USER_VARIABLES`, so a session holding user variables
//! need not stay pinned there: at the swap they are read from the old
//! connection (strings as hex, numbers as text) and re-created on the new
//! one with the same type and character set. MySQL's
//! `performance_schema.user_variables_by_thread` has no types, so on MySQL
//! user variables keep pinning the session.

use crate::backend::BackendError;
use crate::net::PacketConn;
use crate::protocol::command::com;
use crate::protocol::packets::{parse_err, MysqlError};
use crate::protocol::read_lenenc_str;
use crate::protocol::response::{Expect, PacketKind, ResponseMachine};

/// One text-protocol row: NULL or bytes per column.
pub type Row = Vec<Option<Vec<u8>>>;

/// Runs a query returning one result set and collects its rows (small
/// results only; used on the proxy's own connections).
pub async fn query_rows(
    conn: &mut PacketConn,
    deprecate_eof: bool,
    sql: &str,
) -> Result<Vec<Row>, BackendError> {
    let mut p = Vec::with_capacity(1 + sql.len());
    p.push(com::QUERY);
    p.extend_from_slice(sql.as_bytes());
    conn.write_packet(0, &p).await?;
    let mut m = ResponseMachine::new(Expect::Generic, deprecate_eof);
    let mut rows = Vec::new();
    let mut error = None;
    while !m.is_done() {
        let l = conn.read_logical(None, 1 << 24).await?;
        let ev = m
            .on_logical(&l.payload)
            .map_err(|e| BackendError::Protocol(e.to_string()))?;
        match ev.kind {
            PacketKind::Row => rows.push(parse_text_row(&l.payload)),
            PacketKind::Err => error = parse_err(&l.payload),
            _ => {}
        }
    }
    match error {
        Some(e) => Err(BackendError::Server(e)),
        None => Ok(rows),
    }
}

/// Parses a text-protocol row (length-encoded strings, 0xFB = NULL).
pub fn parse_text_row(mut p: &[u8]) -> Row {
    let mut row = Vec::new();
    while let Some(&first) = p.first() {
        if first == 0xFB {
            row.push(None);
            p = &p[1..];
            continue;
        }
        let Some((v, n)) = read_lenenc_str(p) else {
            break;
        };
        row.push(Some(v.to_vec()));
        p = &p[n..];
    }
    row
}

fn ident(name: &[u8]) -> String {
    format!("@`{}`", String::from_utf8_lossy(name).replace('`', "``"))
}

/// Reads the user variables of the connection and returns the assignments
/// (`@`name` = literal`) that re-create them, or `None` when one of them
/// cannot be reproduced exactly (then the session stays pinned).
pub async fn snapshot(
    conn: &mut PacketConn,
    deprecate_eof: bool,
) -> Result<Option<Vec<String>>, BackendError> {
    let vars = query_rows(
        conn,
        deprecate_eof,
        "SELECT VARIABLE_NAME, VARIABLE_TYPE, CHARACTER_SET_NAME FROM information_schema.USER_VARIABLES",
    )
    .await?;
    if vars.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let mut exprs = Vec::with_capacity(vars.len());
    for v in &vars {
        let (Some(Some(name)), Some(Some(ty))) = (v.first(), v.get(1)) else {
            return Ok(None);
        };
        let e = match ty.as_slice() {
            b"VARCHAR" => format!("HEX({})", ident(name)),
            b"INT" | b"INT UNSIGNED" | b"DECIMAL" | b"DOUBLE" => {
                format!("CAST({} AS CHAR)", ident(name))
            }
            _ => return Ok(None),
        };
        exprs.push(e);
    }
    let values = query_rows(conn, deprecate_eof, &format!("SELECT {}", exprs.join(", "))).await?;
    let Some(values) = values.first() else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(vars.len());
    for (v, value) in vars.iter().zip(values) {
        let name = v[0].as_deref().unwrap_or_default();
        let ty = v[1].as_deref().unwrap_or_default();
        let charset = v.get(2).cloned().flatten();
        let lit = match (value, ty) {
            (None, _) => "NULL".to_string(),
            (Some(hex), b"VARCHAR") => {
                let hex = String::from_utf8_lossy(hex);
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return Ok(None);
                }
                match charset.as_deref() {
                    Some(b"binary") | None => format!("X'{hex}'"),
                    Some(cs) if cs.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_') => {
                        format!("CONVERT(X'{hex}' USING {})", String::from_utf8_lossy(cs))
                    }
                    Some(_) => return Ok(None),
                }
            }
            (Some(num), t) => {
                let s = String::from_utf8_lossy(num);
                let ok = !s.is_empty()
                    && s.bytes().all(|c| {
                        c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E')
                    });
                if !ok {
                    return Ok(None);
                }
                if t == b"DOUBLE" {
                    format!("CAST('{s}' AS DOUBLE)")
                } else {
                    s.into_owned()
                }
            }
        };
        out.push(format!("{} = {lit}", ident(name)));
    }
    Ok(Some(out))
}

/// An error reading user variables, as the client would see it.
pub fn to_mysql(e: BackendError) -> MysqlError {
    match e {
        BackendError::Server(e) => e,
        other => MysqlError::new(
            2013,
            "HY000",
            format!("Lost connection to MySQL server during query (sqlease: {other})"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rows_and_identifiers() {
        let row = [2u8, b'a', b'b', 0xFB, 0, 1, b'x'];
        assert_eq!(
            parse_text_row(&row),
            vec![
                Some(b"ab".to_vec()),
                None,
                Some(vec![]),
                Some(b"x".to_vec())
            ]
        );
        assert_eq!(ident(b"we`ird"), "@`we``ird`");
    }
}
