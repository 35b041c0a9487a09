//! The response state machine (`protocol::response::ResponseMachine`) fed
//! arbitrary packet sequences for every `Expect`, with and without
//! DEPRECATE_EOF, under the relay's contract:
//! - when `needs_full(len, first)` is true the whole packet is passed;
//! - otherwise only what has arrived (at least the first byte) is passed,
//!   and the outcome must not depend on how much that is;
//! - a packet of 16 MiB − 1 bytes continues in the next one.
//!
//! Input: one byte choosing `Expect` and DEPRECATE_EOF, then packets as
//! `[control, n, n bytes]`: control bit 7 makes the packet a 16 MiB − 1
//! byte one (its first n bytes given), the low bits choose how many bytes
//! have arrived when it is streamed.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use sqlease::protocol::frame::MAX_PAYLOAD;
use sqlease::protocol::response::{Expect, ResponseMachine};

const EXPECTS: [Expect; 6] = [
    Expect::Generic,
    Expect::Prepare,
    Expect::FieldList,
    Expect::Fetch,
    Expect::Single,
    Expect::Nothing,
];

thread_local! {
    /// Backing store for 16 MiB − 1 byte packets the machine wants whole.
    static BIG: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_PAYLOAD]);
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, mut rest)) = data.split_first() else {
        return;
    };
    let expect = EXPECTS[usize::from(sel % 6)];
    let deprecate_eof = sel & 0x80 != 0;
    let mut m = ResponseMachine::new(expect, deprecate_eof);
    assert_eq!(m.is_done(), expect == Expect::Nothing);
    while rest.len() >= 2 {
        let ctl = rest[0];
        let n = usize::from(rest[1]).min(rest.len() - 2);
        let bytes = &rest[2..2 + n];
        rest = &rest[2 + n..];
        let big = ctl & 0x80 != 0;
        let len = if big { MAX_PAYLOAD } else { bytes.len() };
        if big && bytes.is_empty() {
            continue;
        }
        let first = bytes.first().copied().unwrap_or(0);
        if m.is_done() {
            assert!(
                m.clone().on_packet(len, bytes).is_err(),
                "packet accepted after the end"
            );
            return;
        }
        let full = m.needs_full(len, first);
        let result = if full {
            if big {
                BIG.with(|b| {
                    let mut b = b.borrow_mut();
                    b[..bytes.len()].copy_from_slice(bytes);
                    m.on_packet(len, &b[..])
                })
            } else {
                m.on_packet(len, bytes)
            }
        } else {
            // Streamed: the outcome is decided by what arrived, at least
            // one byte of a non-empty packet.
            let arrived = if bytes.is_empty() {
                0
            } else {
                1 + usize::from(ctl & 0x7F) % bytes.len()
            };
            let mut other = m.clone();
            let a = m.on_packet(len, &bytes[..arrived]);
            let b = other.on_packet(len, &bytes[..1.min(bytes.len())]);
            assert_eq!(
                a, b,
                "a streamed packet was judged on more than its first byte"
            );
            assert_eq!(format!("{m:?}"), format!("{other:?}"));
            a
        };
        match result {
            Ok(ev) => {
                assert_eq!(ev.done, m.is_done(), "{ev:?}");
                if ev.client_turn {
                    assert!(!ev.done);
                    m.local_infile_sent();
                    assert!(!m.is_done());
                }
            }
            Err(_) => return,
        }
    }
});
