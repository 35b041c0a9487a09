//! The response state machine: knows where each command's response ends.
//!
//! It decides on packet boundaries from the negotiated capabilities and the
//! command, never by guessing from a first byte alone:
//! - a text row may begin with 0x00 or 0xFB; in row state 0xFE ends the
//!   result only in a short packet (classic EOF, < 9 bytes) or, with
//!   DEPRECATE_EOF, in an OK packet shorter than 16 MiB − 1;
//! - SERVER_MORE_RESULTS_EXISTS chains result sets (multi-statements,
//!   stored procedures); SERVER_STATUS_CURSOR_EXISTS ends an execute that
//!   opened a cursor right after its metadata;
//! - 0xFB as the first packet of a response is a LOCAL INFILE request: the
//!   client then streams the file and the server answers with OK or ERR;
//! - a physical packet of 16 MiB − 1 bytes continues in the next one, which
//!   is never interpreted on its own.

use super::caps::status;
use super::frame::MAX_PAYLOAD;
use super::read_lenenc;

/// What kind of response a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// OK, ERR, LOCAL INFILE request or result set(s) (COM_QUERY, COM_STMT_EXECUTE...).
    Generic,
    /// COM_STMT_PREPARE.
    Prepare,
    /// COM_FIELD_LIST: column definitions ended by EOF.
    FieldList,
    /// COM_STMT_FETCH: rows ended by EOF/OK.
    Fetch,
    /// Exactly one packet (COM_STATISTICS, COM_PING, unknown commands...).
    Single,
    /// No response (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA, COM_QUIT).
    Nothing,
}

/// What one packet was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// OK packet (0x00) ending a response or a statement.
    Ok {
        status: u16,
    },
    /// Result-set terminator: classic EOF or DEPRECATE_EOF OK (0xFE).
    Terminator {
        status: u16,
        ok: bool,
    },
    /// EOF after column definitions (classic protocol only).
    MetaEof {
        status: u16,
    },
    Err,
    ColumnCount(u64),
    ColumnDef,
    Row,
    PrepareOk {
        stmt_id: u32,
        columns: u16,
        params: u16,
    },
    LocalInfileRequest,
    /// Continuation of a packet of 16 MiB − 1 bytes.
    Continuation,
    /// The single packet of a `Single` response.
    Other,
}

/// The outcome of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub kind: PacketKind,
    /// The response is complete after this packet.
    pub done: bool,
    /// The client must now send LOCAL INFILE data (ended by an empty packet).
    pub client_turn: bool,
}

/// The server sent something the protocol does not allow here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected packet from the server in state {state}: first byte {first:#04x}, {len} bytes")]
pub struct ResponseError {
    pub state: &'static str,
    pub first: u8,
    pub len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    PrepOk,
    Columns { left: u64 },
    MetaEof,
    Rows,
    PrepParams { left: u16, columns: u16 },
    PrepParamsEof { columns: u16 },
    PrepColumns { left: u16 },
    PrepColumnsEof,
    FieldList,
    Fetch,
    Single,
    LocalInfile,
    Done,
}

/// Tracks one command's response packet by packet.
#[derive(Debug, Clone)]
pub struct ResponseMachine {
    deprecate_eof: bool,
    state: State,
    continuation: bool,
}

fn ok_status(payload: &[u8]) -> Option<u16> {
    let mut p = 1;
    let (_, n) = read_lenenc(payload.get(p..)?)?;
    p += n;
    let (_, n) = read_lenenc(payload.get(p..)?)?;
    p += n;
    let b = payload.get(p..p + 2)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn classic_eof_status(payload: &[u8]) -> Option<u16> {
    let b = payload.get(3..5)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

impl ResponseMachine {
    pub fn new(expect: Expect, deprecate_eof: bool) -> ResponseMachine {
        let state = match expect {
            Expect::Generic => State::Start,
            Expect::Prepare => State::PrepOk,
            Expect::FieldList => State::FieldList,
            Expect::Fetch => State::Fetch,
            Expect::Single => State::Single,
            Expect::Nothing => State::Done,
        };
        ResponseMachine {
            deprecate_eof,
            state,
            continuation: false,
        }
    }

    /// The response is complete: its last packet has arrived, including the
    /// continuation packets of a last packet of 16 MiB − 1 bytes.
    pub fn is_done(&self) -> bool {
        self.state == State::Done && !self.continuation
    }

    /// Whether the relay must hold the whole packet before calling
    /// [`on_packet`](Self::on_packet). Rows and column definitions are judged
    /// on their first byte and may be streamed.
    pub fn needs_full(&self, len: usize, first: u8) -> bool {
        if self.continuation {
            return false;
        }
        match self.state {
            State::Rows | State::Fetch | State::FieldList => {
                first == 0xFF || (first == 0xFE && len < MAX_PAYLOAD)
            }
            State::Columns { .. } | State::PrepColumns { .. } => false,
            State::PrepParams { .. } => false,
            _ => true,
        }
    }

    /// Called when the client finished streaming a LOCAL INFILE file.
    pub fn local_infile_sent(&mut self) {
        if self.state == State::LocalInfile {
            self.state = State::Start;
        }
    }

    fn terminator(&self, len: usize, payload: &[u8]) -> Option<PacketKind> {
        if payload.first() != Some(&0xFE) {
            return None;
        }
        if self.deprecate_eof {
            if len < MAX_PAYLOAD {
                return Some(PacketKind::Terminator {
                    status: ok_status(payload).unwrap_or(0),
                    ok: true,
                });
            }
        } else if len < 9 {
            return Some(PacketKind::Terminator {
                status: classic_eof_status(payload).unwrap_or(0),
                ok: false,
            });
        }
        None
    }

    /// Feeds one physical packet of `len` bytes; `payload` holds the whole
    /// packet when [`needs_full`](Self::needs_full) said so, else at least
    /// its first byte.
    pub fn on_packet(&mut self, len: usize, payload: &[u8]) -> Result<Event, ResponseError> {
        let mut ev = self.step(len, payload)?;
        // A last packet of 16 MiB − 1 bytes continues in the next one: the
        // response is not over before that one has come.
        ev.done = self.is_done();
        Ok(ev)
    }

    /// Feeds one whole *logical* packet (physical packets already
    /// reassembled, e.g. by `PacketConn::read_logical`): no continuation
    /// follows it, whatever its length.
    pub fn on_logical(&mut self, payload: &[u8]) -> Result<Event, ResponseError> {
        let mut ev = self.step(payload.len(), payload)?;
        self.continuation = false;
        ev.done = self.is_done();
        Ok(ev)
    }

    fn step(&mut self, len: usize, payload: &[u8]) -> Result<Event, ResponseError> {
        let ev = |kind, done| Event {
            kind,
            done,
            client_turn: false,
        };
        if self.continuation {
            self.continuation = len == MAX_PAYLOAD;
            return Ok(ev(PacketKind::Continuation, self.state == State::Done));
        }
        self.continuation = len == MAX_PAYLOAD;
        let first = payload.first().copied().unwrap_or(0);
        let unexpected = |state: &'static str| ResponseError { state, first, len };
        match self.state {
            State::Done => Err(unexpected("done")),
            State::Single => {
                self.state = State::Done;
                Ok(ev(PacketKind::Other, true))
            }
            State::Start => match first {
                0x00 => {
                    let status = ok_status(payload).ok_or_else(|| unexpected("start"))?;
                    let more = status & status::MORE_RESULTS_EXISTS != 0;
                    self.state = if more { State::Start } else { State::Done };
                    Ok(ev(PacketKind::Ok { status }, !more))
                }
                0xFF => {
                    self.state = State::Done;
                    Ok(ev(PacketKind::Err, true))
                }
                0xFB => {
                    self.state = State::LocalInfile;
                    Ok(Event {
                        kind: PacketKind::LocalInfileRequest,
                        done: false,
                        client_turn: true,
                    })
                }
                0xFE if len < 9 => {
                    // An EOF where a response starts (e.g. COM_DEBUG, COM_SET_OPTION).
                    let status = classic_eof_status(payload).unwrap_or(0);
                    self.state = State::Done;
                    Ok(ev(PacketKind::Terminator { status, ok: false }, true))
                }
                _ => {
                    let (n, _) = read_lenenc(payload).ok_or_else(|| unexpected("start"))?;
                    if n == 0 {
                        return Err(unexpected("start"));
                    }
                    self.state = State::Columns { left: n };
                    Ok(ev(PacketKind::ColumnCount(n), false))
                }
            },
            State::Columns { left } => {
                let left = left - 1;
                self.state = if left > 0 {
                    State::Columns { left }
                } else if self.deprecate_eof {
                    State::Rows
                } else {
                    State::MetaEof
                };
                Ok(ev(PacketKind::ColumnDef, false))
            }
            State::MetaEof => match first {
                0xFE if len < 9 => {
                    let status = classic_eof_status(payload).unwrap_or(0);
                    if status & status::CURSOR_EXISTS != 0 {
                        self.state = State::Done;
                        Ok(ev(PacketKind::MetaEof { status }, true))
                    } else {
                        self.state = State::Rows;
                        Ok(ev(PacketKind::MetaEof { status }, false))
                    }
                }
                0xFF => {
                    self.state = State::Done;
                    Ok(ev(PacketKind::Err, true))
                }
                _ => Err(unexpected("metadata EOF")),
            },
            State::Rows | State::Fetch => {
                if first == 0xFF {
                    self.state = State::Done;
                    return Ok(ev(PacketKind::Err, true));
                }
                if let Some(kind) = self.terminator(len, payload) {
                    let PacketKind::Terminator { status, .. } = kind else {
                        unreachable!("terminator() returns terminators")
                    };
                    let more = self.state == State::Rows
                        && status & status::MORE_RESULTS_EXISTS != 0
                        && status & status::CURSOR_EXISTS == 0;
                    self.state = if more { State::Start } else { State::Done };
                    return Ok(ev(kind, !more));
                }
                Ok(ev(PacketKind::Row, false))
            }
            State::FieldList => {
                if first == 0xFF {
                    self.state = State::Done;
                    return Ok(ev(PacketKind::Err, true));
                }
                if let Some(kind) = self.terminator(len, payload) {
                    self.state = State::Done;
                    return Ok(ev(kind, true));
                }
                Ok(ev(PacketKind::ColumnDef, false))
            }
            State::PrepOk => {
                // The prepare-OK (or ERR) packet.
                if first == 0xFF {
                    self.state = State::Done;
                    return Ok(ev(PacketKind::Err, true));
                }
                let b = payload
                    .get(1..9)
                    .filter(|_| first == 0x00)
                    .ok_or_else(|| unexpected("prepare"))?;
                let stmt_id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                let cols = u16::from_le_bytes([b[4], b[5]]);
                let params = u16::from_le_bytes([b[6], b[7]]);
                self.state = self.after_prep_ok(params, cols);
                Ok(ev(
                    PacketKind::PrepareOk {
                        stmt_id,
                        columns: cols,
                        params,
                    },
                    self.state == State::Done,
                ))
            }
            State::PrepParams { left, columns } => {
                let left = left - 1;
                self.state = if left > 0 {
                    State::PrepParams { left, columns }
                } else if self.deprecate_eof {
                    self.prep_columns(columns)
                } else {
                    State::PrepParamsEof { columns }
                };
                Ok(ev(PacketKind::ColumnDef, self.state == State::Done))
            }
            State::PrepParamsEof { columns } => {
                let status = classic_eof_status(payload).unwrap_or(0);
                if first != 0xFE {
                    return Err(unexpected("prepare params EOF"));
                }
                self.state = self.prep_columns(columns);
                Ok(ev(
                    PacketKind::MetaEof { status },
                    self.state == State::Done,
                ))
            }
            State::PrepColumns { left } => {
                let left = left - 1;
                self.state = if left > 0 {
                    State::PrepColumns { left }
                } else if self.deprecate_eof {
                    State::Done
                } else {
                    State::PrepColumnsEof
                };
                Ok(ev(PacketKind::ColumnDef, self.state == State::Done))
            }
            State::PrepColumnsEof => {
                if first != 0xFE {
                    return Err(unexpected("prepare columns EOF"));
                }
                let status = classic_eof_status(payload).unwrap_or(0);
                self.state = State::Done;
                Ok(ev(PacketKind::MetaEof { status }, true))
            }
            State::LocalInfile => Err(unexpected("local infile")),
        }
    }

    fn after_prep_ok(&self, params: u16, columns: u16) -> State {
        if params > 0 {
            State::PrepParams {
                left: params,
                columns,
            }
        } else {
            self.prep_columns(columns)
        }
    }

    fn prep_columns(&self, columns: u16) -> State {
        if columns > 0 {
            State::PrepColumns { left: columns }
        } else {
            State::Done
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(m: &mut ResponseMachine, p: &[u8]) -> Event {
        m.on_packet(p.len(), p).unwrap()
    }

    const OK: &[u8] = &[0, 0, 0, 2, 0, 0, 0];
    const OK_MORE: &[u8] = &[0, 0, 0, 0x0A, 0, 0, 0];

    #[test]
    fn ok_and_multi_ok() {
        let mut m = ResponseMachine::new(Expect::Generic, false);
        assert!(!feed(&mut m, OK_MORE).done);
        assert!(feed(&mut m, OK).done);
        assert!(m.is_done());
    }

    #[test]
    fn text_result_rows_starting_with_00_fb_fe() {
        let mut m = ResponseMachine::new(Expect::Generic, false);
        assert_eq!(feed(&mut m, &[1]).kind, PacketKind::ColumnCount(1));
        assert_eq!(feed(&mut m, b"\x03def...").kind, PacketKind::ColumnDef);
        assert!(!feed(&mut m, &[0xFE, 0, 0, 2, 0]).done); // metadata EOF
        assert_eq!(feed(&mut m, &[0x00]).kind, PacketKind::Row); // empty string
        assert_eq!(feed(&mut m, &[0xFB]).kind, PacketKind::Row); // NULL
        assert!(feed(&mut m, &[0xFE, 0, 0, 2, 0]).done);
    }

    #[test]
    fn deprecate_eof_terminator_and_more_results() {
        let mut m = ResponseMachine::new(Expect::Generic, true);
        feed(&mut m, &[1]);
        feed(&mut m, b"\x03def");
        assert_eq!(feed(&mut m, &[0x01, b'x']).kind, PacketKind::Row);
        let e = feed(&mut m, &[0xFE, 0, 0, 0x0A, 0, 0, 0]);
        assert!(!e.done);
        let e = feed(
            &mut m,
            &[0xFF, 0x28, 0x04, b'#', b'4', b'2', b'0', b'0', b'0'],
        );
        assert!(e.done);
    }

    #[test]
    fn big_row_starting_with_fe_is_a_row() {
        let mut m = ResponseMachine::new(Expect::Generic, true);
        feed(&mut m, &[1]);
        feed(&mut m, b"\x03def");
        assert!(!m.needs_full(MAX_PAYLOAD, 0xFE));
        let e = m.on_packet(MAX_PAYLOAD, &[0xFE]).unwrap();
        assert_eq!(e.kind, PacketKind::Row);
        // Continuation starting with 0xFE and short: still part of the row.
        let e = m.on_packet(3, &[0xFE, 0, 0]).unwrap();
        assert_eq!(e.kind, PacketKind::Continuation);
        assert!(feed(&mut m, &[0xFE, 0, 0, 2, 0, 0, 0]).done);
    }

    #[test]
    fn cursor_ends_after_metadata() {
        let mut m = ResponseMachine::new(Expect::Generic, false);
        feed(&mut m, &[1]);
        feed(&mut m, b"\x03def");
        let e = feed(&mut m, &[0xFE, 0, 0, 0x42, 0]);
        assert!(e.done);
        let mut m = ResponseMachine::new(Expect::Fetch, false);
        assert_eq!(feed(&mut m, &[0x00, 0x00, 1]).kind, PacketKind::Row);
        assert!(feed(&mut m, &[0xFE, 0, 0, 0x82, 0]).done);
    }

    #[test]
    fn local_infile_turn() {
        let mut m = ResponseMachine::new(Expect::Generic, false);
        let e = feed(&mut m, b"\xFB/tmp/x.csv");
        assert!(e.client_turn && !e.done);
        m.local_infile_sent();
        assert!(feed(&mut m, OK).done);
    }

    #[test]
    fn prepare_with_params_and_columns() {
        for dep in [false, true] {
            let mut m = ResponseMachine::new(Expect::Prepare, dep);
            let e = feed(&mut m, &[0, 7, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0]);
            assert_eq!(
                e.kind,
                PacketKind::PrepareOk {
                    stmt_id: 7,
                    columns: 1,
                    params: 2
                }
            );
            feed(&mut m, b"\x03def");
            feed(&mut m, b"\x03def");
            if !dep {
                feed(&mut m, &[0xFE, 0, 0, 2, 0]);
            }
            let e = feed(&mut m, b"\x03def");
            if !dep {
                assert!(!e.done);
                assert!(feed(&mut m, &[0xFE, 0, 0, 2, 0]).done);
            } else {
                assert!(e.done);
            }
        }
        let mut m = ResponseMachine::new(Expect::Prepare, false);
        assert!(feed(&mut m, &[0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).done);
        let mut m = ResponseMachine::new(Expect::Prepare, false);
        assert!(feed(&mut m, &[0xFF, 1, 2]).done);
    }

    /// One part of a generated (multi-)result response.
    #[derive(Debug, Clone)]
    enum Part {
        Ok,
        Set {
            columns: u8,
            /// (first byte, a 16 MiB − 1 byte row continued in a second packet)
            rows: Vec<(u8, bool)>,
        },
    }

    fn part() -> impl proptest::strategy::Strategy<Value = Part> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Part::Ok),
            (
                1u8..6,
                proptest::collection::vec((any::<u8>(), proptest::bool::weighted(0.1)), 0..12)
            )
                .prop_map(|(columns, rows)| Part::Set { columns, rows }),
        ]
    }

    /// The packets a server sends for `parts`: (length, bytes given to the
    /// machine — the whole packet, or the first bytes of a big one).
    fn server_packets(parts: &[Part], dep: bool) -> Vec<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let more = if i + 1 < parts.len() {
                status::MORE_RESULTS_EXISTS
            } else {
                0
            };
            let st = (status::AUTOCOMMIT | more).to_le_bytes();
            let ok = |h: u8| vec![h, 0, 0, st[0], st[1], 0, 0];
            match p {
                Part::Ok => out.push((7, ok(0))),
                Part::Set { columns, rows } => {
                    out.push((1, vec![*columns]));
                    for _ in 0..*columns {
                        out.push((7, b"\x03def\x01a\x01".to_vec()));
                    }
                    if !dep {
                        out.push((5, vec![0xFE, 0, 0, st[0], st[1]]));
                    }
                    for &(first, big) in rows {
                        let first = if first == 0xFF { 0x00 } else { first };
                        if big {
                            out.push((MAX_PAYLOAD, vec![first, 1, 2]));
                            out.push((3, vec![0xFE, 0, 0]));
                        } else if first == 0xFE {
                            // A text row starting with 0xFE holds a string of
                            // 2^24 bytes or more: a big packet with DEPRECATE_EOF;
                            // at least 9 bytes in any case.
                            if dep {
                                out.push((MAX_PAYLOAD, vec![0xFE, 0, 0, 0, 1]));
                                out.push((1, vec![b'x']));
                            } else {
                                out.push((12, vec![0xFE; 12]));
                            }
                        } else {
                            out.push((6, vec![first, 1, 2, 3, 4, 5]));
                        }
                    }
                    out.push(if dep {
                        (7, ok(0xFE))
                    } else {
                        (5, vec![0xFE, 0, 0, st[0], st[1]])
                    });
                }
            }
        }
        out
    }

    proptest::proptest! {
        /// The machine ends a generated response exactly at its last
        /// packet, whatever the rows start with, and judges streamed packets
        /// on their first byte alone (the relay's contract).
        #[test]
        fn generated_responses_end_exactly(parts in proptest::collection::vec(part(), 1..5), dep in proptest::prelude::any::<bool>()) {
            let packets = server_packets(&parts, dep);
            let mut m = ResponseMachine::new(Expect::Generic, dep);
            let last = packets.len() - 1;
            for (i, (len, bytes)) in packets.iter().enumerate() {
                let full = m.needs_full(*len, bytes[0]);
                proptest::prop_assert!(!full || bytes.len() == *len, "packet {} must be whole but is big", i);
                let ev = if full {
                    m.on_packet(*len, bytes).unwrap()
                } else {
                    let mut other = m.clone();
                    let a = m.on_packet(*len, bytes).unwrap();
                    let b = other.on_packet(*len, &bytes[..1]).unwrap();
                    proptest::prop_assert_eq!(a, b);
                    a
                };
                proptest::prop_assert_eq!(ev.done, i == last, "packet {} of {}: {:?}", i, last, ev);
                proptest::prop_assert_eq!(m.is_done(), i == last);
            }
        }

        /// Arbitrary packet sequences: never a panic; once done, every
        /// further packet is refused.
        #[test]
        fn arbitrary_sequences(
            expect in 0usize..6,
            dep in proptest::prelude::any::<bool>(),
            packets in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12), 0..20),
        ) {
            let e = [Expect::Generic, Expect::Prepare, Expect::FieldList, Expect::Fetch, Expect::Single, Expect::Nothing][expect];
            let mut m = ResponseMachine::new(e, dep);
            for p in &packets {
                if m.is_done() {
                    proptest::prop_assert!(m.on_packet(p.len(), p).is_err());
                    break;
                }
                // Odd lengths as logical packets (as the proxy's own helpers
                // feed them), even ones as physical packets.
                let r = if p.len() % 2 == 1 { m.on_logical(p) } else { m.on_packet(p.len(), p) };
                match r {
                    Ok(ev) => {
                        proptest::prop_assert_eq!(ev.done, m.is_done());
                        if ev.client_turn {
                            m.local_infile_sent();
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }

    /// Regression (fuzz target `response`, input `ff f8 01 ff 1d 00`): an
    /// ERR packet of 16 MiB − 1 bytes ended a COM_STMT_FETCH response while
    /// its continuation packet was still to come; the relay stopped there
    /// and left the continuation to be read as the next command's response.
    #[test]
    fn big_last_packet_waits_for_its_continuation() {
        let mut m = ResponseMachine::new(Expect::Fetch, true);
        assert!(m.needs_full(MAX_PAYLOAD, 0xFF));
        let mut err = vec![0u8; MAX_PAYLOAD];
        err[0] = 0xFF;
        let e = m.on_packet(MAX_PAYLOAD, &err).unwrap();
        assert_eq!(e.kind, PacketKind::Err);
        assert!(!e.done && !m.is_done());
        assert!(!m.needs_full(0, 0));
        let e = m.on_packet(0, &[]).unwrap();
        assert_eq!(e.kind, PacketKind::Continuation);
        assert!(e.done && m.is_done());
        assert!(m.on_packet(1, &[0]).is_err());
        // The same for the one packet of a `Single` response.
        let mut m = ResponseMachine::new(Expect::Single, false);
        assert!(!m.on_packet(MAX_PAYLOAD, b"x").unwrap().done);
        assert!(!m.on_packet(MAX_PAYLOAD, b"x").unwrap().done);
        assert!(m.on_packet(5, b"x").unwrap().done);
    }

    /// Logical packets of exactly 16 MiB − 1 bytes (a row, a last packet)
    /// are whole: no continuation is awaited after them.
    #[test]
    fn logical_packets_of_16_mib_minus_1() {
        let row = vec![b'x'; MAX_PAYLOAD];
        for dep in [false, true] {
            let mut m = ResponseMachine::new(Expect::Generic, dep);
            m.on_logical(&[1]).unwrap();
            m.on_logical(b"\x03def").unwrap();
            if !dep {
                m.on_logical(&[0xFE, 0, 0, 2, 0]).unwrap();
            }
            assert_eq!(m.on_logical(&row).unwrap().kind, PacketKind::Row);
            let end: &[u8] = if dep {
                &[0xFE, 0, 0, 2, 0, 0, 0]
            } else {
                &[0xFE, 0, 0, 2, 0]
            };
            let e = m.on_logical(end).unwrap();
            assert!(matches!(e.kind, PacketKind::Terminator { .. }), "{e:?}");
            assert!(e.done && m.is_done());
        }
        let mut m = ResponseMachine::new(Expect::Single, false);
        assert!(m.on_logical(&row).unwrap().done);
    }

    #[test]
    fn never_panics_on_garbage() {
        for expect in [
            Expect::Generic,
            Expect::Prepare,
            Expect::FieldList,
            Expect::Fetch,
            Expect::Single,
        ] {
            for dep in [false, true] {
                let mut m = ResponseMachine::new(expect, dep);
                for i in 0..=255u8 {
                    let p = [i, i, 0xFF, 0xFE];
                    if m.is_done() {
                        break;
                    }
                    let _ = m.on_packet(p.len(), &p);
                    let _ = m.on_packet(0, &[]);
                }
            }
        }
    }
}
