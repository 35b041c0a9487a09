//! Client commands, decoded once from the first bytes of a command packet.

/// Command bytes.
pub mod com {
    pub const SLEEP: u8 = 0x00;
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const STATISTICS: u8 = 0x09;
    pub const PROCESS_INFO: u8 = 0x0A;
    pub const PROCESS_KILL: u8 = 0x0C;
    pub const DEBUG: u8 = 0x0D;
    pub const PING: u8 = 0x0E;
    pub const CHANGE_USER: u8 = 0x11;
    pub const BINLOG_DUMP: u8 = 0x12;
    pub const REGISTER_SLAVE: u8 = 0x15;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1A;
    pub const SET_OPTION: u8 = 0x1B;
    pub const STMT_FETCH: u8 = 0x1C;
    pub const RESET_CONNECTION: u8 = 0x1F;
    pub const BINLOG_DUMP_GTID: u8 = 0x1E;
    pub const STMT_BULK_EXECUTE: u8 = 0xFA;
}

/// A decoded command. Borrowed slices point into the command payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    Quit,
    InitDb(&'a [u8]),
    Query(&'a [u8]),
    FieldList,
    Statistics,
    ProcessInfo,
    ProcessKill(u32),
    Debug,
    Ping,
    ChangeUser,
    StmtPrepare(&'a [u8]),
    StmtExecute {
        stmt_id: u32,
        flags: u8,
    },
    StmtSendLongData {
        stmt_id: u32,
    },
    StmtClose {
        stmt_id: u32,
    },
    StmtReset {
        stmt_id: u32,
    },
    SetOption(u16),
    StmtFetch {
        stmt_id: u32,
    },
    ResetConnection,
    /// Replication stream commands: not relayed (the response never ends).
    Replication(u8),
    /// Anything else: forwarded, one response packet expected.
    Other(u8),
    /// A command whose fixed fields are truncated.
    Malformed(u8),
}

fn u32_at(p: &[u8], off: usize) -> Option<u32> {
    let b: [u8; 4] = p.get(off..off + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// Decodes a command payload (the first byte is the command).
pub fn decode(payload: &[u8]) -> Command<'_> {
    let Some(&c) = payload.first() else {
        return Command::Malformed(0);
    };
    let body = &payload[1..];
    let stmt = |f: fn(u32) -> Command<'static>| match u32_at(payload, 1) {
        Some(id) => f(id),
        None => Command::Malformed(c),
    };
    match c {
        com::QUIT => Command::Quit,
        com::INIT_DB => Command::InitDb(body),
        com::QUERY => Command::Query(body),
        com::FIELD_LIST => Command::FieldList,
        com::STATISTICS => Command::Statistics,
        com::PROCESS_INFO => Command::ProcessInfo,
        com::PROCESS_KILL => match u32_at(payload, 1) {
            Some(id) => Command::ProcessKill(id),
            None => Command::Malformed(c),
        },
        com::DEBUG => Command::Debug,
        com::PING => Command::Ping,
        com::CHANGE_USER => Command::ChangeUser,
        com::STMT_PREPARE => Command::StmtPrepare(body),
        com::STMT_EXECUTE => match (u32_at(payload, 1), payload.get(5)) {
            (Some(stmt_id), Some(&flags)) => Command::StmtExecute { stmt_id, flags },
            _ => Command::Malformed(c),
        },
        com::STMT_SEND_LONG_DATA => stmt(|stmt_id| Command::StmtSendLongData { stmt_id }),
        com::STMT_CLOSE => stmt(|stmt_id| Command::StmtClose { stmt_id }),
        com::STMT_RESET => stmt(|stmt_id| Command::StmtReset { stmt_id }),
        com::STMT_FETCH => stmt(|stmt_id| Command::StmtFetch { stmt_id }),
        com::SET_OPTION => match payload.get(1..3) {
            Some(b) => Command::SetOption(u16::from_le_bytes([b[0], b[1]])),
            None => Command::Malformed(c),
        },
        com::RESET_CONNECTION => Command::ResetConnection,
        com::BINLOG_DUMP | com::BINLOG_DUMP_GTID | com::REGISTER_SLAVE => Command::Replication(c),
        _ => Command::Other(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        assert_eq!(decode(b"\x03SELECT 1"), Command::Query(b"SELECT 1"));
        assert_eq!(
            decode(&[0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0]),
            Command::StmtExecute {
                stmt_id: 1,
                flags: 0
            }
        );
        assert_eq!(decode(&[0x17, 1, 0]), Command::Malformed(0x17));
        assert_eq!(decode(&[0x0C, 5, 0, 0, 0]), Command::ProcessKill(5));
        assert_eq!(decode(&[]), Command::Malformed(0));
        assert_eq!(decode(&[0x99]), Command::Other(0x99));
    }
}
