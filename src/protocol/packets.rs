//! The few packets the proxy builds or inspects: OK, ERR, EOF and the
//! authentication exchange packets. Parsing is checked (never panics).

use super::{caps::CLIENT_PROTOCOL_41, put_lenenc, put_lenenc_str, read_lenenc, read_lenenc_str};

/// A parsed OK packet (0x00) or DEPRECATE_EOF result-set terminator (0xFE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OkPacket<'a> {
    pub header: u8,
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    pub info: &'a [u8],
    /// Session-state-change block (without its length prefix).
    pub session_state: Option<&'a [u8]>,
}

/// Parses an OK packet as sent to a peer with the given session-track capability.
pub fn parse_ok(payload: &[u8], session_track: bool) -> Option<OkPacket<'_>> {
    let header = *payload.first()?;
    if header != 0x00 && header != 0xFE {
        return None;
    }
    let mut p = 1;
    let (affected_rows, n) = read_lenenc(payload.get(p..)?)?;
    p += n;
    let (last_insert_id, n) = read_lenenc(payload.get(p..)?)?;
    p += n;
    let b = payload.get(p..p + 4)?;
    let status = u16::from_le_bytes([b[0], b[1]]);
    let warnings = u16::from_le_bytes([b[2], b[3]]);
    p += 4;
    let rest = payload.get(p..)?;
    let (info, session_state) = if session_track {
        if rest.is_empty() {
            (&rest[..0], None)
        } else {
            let (info, n) = read_lenenc_str(rest)?;
            let after = &rest[n..];
            if status & super::caps::status::SESSION_STATE_CHANGED != 0 && !after.is_empty() {
                let (ss, _) = read_lenenc_str(after)?;
                (info, Some(ss))
            } else {
                (info, None)
            }
        }
    } else {
        // MariaDB and MySQL send the message as a length-encoded string here too.
        match read_lenenc_str(rest) {
            Some((info, _)) => (info, None),
            None => (rest, None),
        }
    };
    Some(OkPacket {
        header,
        affected_rows,
        last_insert_id,
        status,
        warnings,
        info,
        session_state,
    })
}

/// Encodes an OK packet for a peer with the given session-track capability.
/// `session_state` is written only when given and the peer tracks sessions.
pub fn encode_ok(ok: &OkPacket<'_>, session_track: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + ok.info.len());
    out.push(ok.header);
    put_lenenc(&mut out, ok.affected_rows);
    put_lenenc(&mut out, ok.last_insert_id);
    let state = if session_track {
        ok.session_state
    } else {
        None
    };
    out.extend_from_slice(&ok.status.to_le_bytes());
    out.extend_from_slice(&ok.warnings.to_le_bytes());
    if let Some(ss) = state {
        put_lenenc_str(&mut out, ok.info);
        put_lenenc_str(&mut out, ss);
    } else if !ok.info.is_empty() {
        put_lenenc_str(&mut out, ok.info);
    }
    out
}

/// A simple OK with the given status flags.
pub fn ok_simple(status: u16) -> Vec<u8> {
    encode_ok(
        &OkPacket {
            header: 0,
            affected_rows: 0,
            last_insert_id: 0,
            status,
            warnings: 0,
            info: b"",
            session_state: None,
        },
        false,
    )
}

/// Classic EOF packet.
pub fn eof(warnings: u16, status: u16) -> Vec<u8> {
    let mut out = vec![0xFE];
    out.extend_from_slice(&warnings.to_le_bytes());
    out.extend_from_slice(&status.to_le_bytes());
    out
}

/// Status flags of a classic EOF packet.
pub fn eof_status(payload: &[u8]) -> Option<u16> {
    if payload.first() != Some(&0xFE) || payload.len() < 5 {
        return None;
    }
    Some(u16::from_le_bytes([payload[3], payload[4]]))
}

/// An error to send to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlError {
    pub code: u16,
    pub sqlstate: [u8; 5],
    pub message: String,
}

impl MysqlError {
    pub fn new(code: u16, sqlstate: &str, message: impl Into<String>) -> MysqlError {
        let mut s = [b'H', b'Y', b'0', b'0', b'0'];
        for (d, b) in s.iter_mut().zip(sqlstate.bytes()) {
            *d = b;
        }
        MysqlError {
            code,
            sqlstate: s,
            message: message.into(),
        }
    }

    /// Encodes the ERR packet; the `#`+SQLSTATE marker only with PROTOCOL_41.
    pub fn encode(&self, caps: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.message.len());
        out.push(0xFF);
        out.extend_from_slice(&self.code.to_le_bytes());
        if caps & CLIENT_PROTOCOL_41 != 0 {
            out.push(b'#');
            out.extend_from_slice(&self.sqlstate);
        }
        out.extend_from_slice(self.message.as_bytes());
        out
    }
}

impl std::fmt::Display for MysqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ERROR {} ({}): {}",
            self.code,
            String::from_utf8_lossy(&self.sqlstate),
            self.message
        )
    }
}

/// Parses an ERR packet (with or without the SQLSTATE marker).
pub fn parse_err(payload: &[u8]) -> Option<MysqlError> {
    if payload.first() != Some(&0xFF) {
        return None;
    }
    let code = u16::from_le_bytes([*payload.get(1)?, *payload.get(2)?]);
    let rest = payload.get(3..)?;
    let (state, msg) = if rest.first() == Some(&b'#') && rest.len() >= 6 {
        (&rest[1..6], &rest[6..])
    } else {
        (&b"HY000"[..], rest)
    };
    Some(MysqlError::new(
        code,
        std::str::from_utf8(state).unwrap_or("HY000"),
        String::from_utf8_lossy(msg),
    ))
}

/// Error codes sqlease sends itself (MySQL's own codes and wording).
pub mod codes {
    pub const ER_CON_COUNT_ERROR: u16 = 1040;
    pub const ER_HANDSHAKE_ERROR: u16 = 1043;
    pub const ER_ACCESS_DENIED_ERROR: u16 = 1045;
    pub const ER_UNKNOWN_COM_ERROR: u16 = 1047;
    pub const ER_NET_PACKET_TOO_LARGE: u16 = 1153;
    pub const ER_NET_PACKETS_OUT_OF_ORDER: u16 = 1156;
    pub const ER_UNKNOWN_STMT_HANDLER: u16 = 1243;
    pub const ER_WRONG_ARGUMENTS: u16 = 1210;
    pub const ER_NO_SUCH_THREAD: u16 = 1094;
    pub const ER_SECURE_TRANSPORT_REQUIRED: u16 = 3159;
    pub const CR_SERVER_LOST: u16 = 2013;
    pub const CR_CONN_HOST_ERROR: u16 = 2003;
    pub const ER_QUERY_INTERRUPTED: u16 = 1317;
}

/// AuthSwitchRequest: 0xFE, plugin name NUL, plugin data (scramble + NUL).
pub fn auth_switch_request(plugin: &[u8], scramble: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + plugin.len() + scramble.len() + 1);
    out.push(0xFE);
    out.extend_from_slice(plugin);
    out.push(0);
    out.extend_from_slice(scramble);
    out.push(0);
    out
}

/// AuthMoreData: 0x01 followed by data.
pub fn auth_more_data(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + data.len());
    out.push(0x01);
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ok_round_trip_with_state() {
        let ok = OkPacket {
            header: 0,
            affected_rows: 3,
            last_insert_id: 300,
            status: 0x4002,
            warnings: 1,
            info: b"Rows matched: 3",
            session_state: Some(b"\x01\x05\x04test"),
        };
        let enc = encode_ok(&ok, true);
        assert_eq!(parse_ok(&enc, true).unwrap(), ok);
        let plain = encode_ok(&ok, false);
        let back = parse_ok(&plain, false).unwrap();
        assert_eq!(back.info, ok.info);
        assert_eq!(back.session_state, None);
    }

    #[test]
    fn err_with_and_without_marker() {
        let e = MysqlError::new(1045, "28000", "Access denied");
        let p = e.encode(CLIENT_PROTOCOL_41);
        assert_eq!(parse_err(&p).unwrap(), e);
        let p = e.encode(0);
        assert_eq!(&p[3..], b"Access denied");
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40), st in any::<bool>()) {
            let _ = parse_ok(&bytes, st);
            let _ = parse_err(&bytes);
            let _ = eof_status(&bytes);
        }

        /// Any OK packet encodes and parses back equal, for a peer with and
        /// without CLIENT_SESSION_TRACK.
        #[test]
        fn ok_round_trip(
            header in prop_oneof![Just(0x00u8), Just(0xFEu8)],
            affected_rows in any::<u64>(),
            last_insert_id in any::<u64>(),
            status in any::<u16>(),
            warnings in any::<u16>(),
            info in proptest::collection::vec(any::<u8>(), 0..300),
            state in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        ) {
            let status = if state.is_some() {
                status | super::super::caps::status::SESSION_STATE_CHANGED
            } else {
                status
            };
            let ok = OkPacket {
                header,
                affected_rows,
                last_insert_id,
                status,
                warnings,
                info: &info,
                session_state: state.as_deref(),
            };
            let tracked = encode_ok(&ok, true);
            prop_assert_eq!(parse_ok(&tracked, true), Some(ok.clone()));
            let plain = OkPacket { session_state: None, ..ok.clone() };
            let untracked = encode_ok(&ok, false);
            prop_assert_eq!(parse_ok(&untracked, false), Some(plain));
        }

        /// Parsing arbitrary bytes and re-encoding gives an OK that parses
        /// back to the same thing.
        #[test]
        fn parsed_ok_re_encodes(bytes in proptest::collection::vec(any::<u8>(), 0..60), st in any::<bool>()) {
            if let Some(ok) = parse_ok(&bytes, st) {
                let again = encode_ok(&ok, st);
                prop_assert_eq!(parse_ok(&again, st), Some(ok));
            }
        }

        #[test]
        fn err_round_trip(code in any::<u16>(), state in "[0-9A-Z]{5}", msg in "[ -~]{0,80}") {
            let e = MysqlError::new(code, &state, msg);
            prop_assert_eq!(parse_err(&e.encode(CLIENT_PROTOCOL_41)), Some(e));
        }
    }
}
