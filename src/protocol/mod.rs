//! Sans-IO MySQL protocol codec: framing, capabilities, the packets the
//! proxy builds or inspects, commands, and the response state machine.
//!
//! Nothing here touches a socket; everything takes the negotiated
//! capabilities as context and is tested on bytes.

pub mod caps;
pub mod command;
pub mod frame;
pub mod packets;
pub mod response;
pub mod stmt;
pub mod tracker;

/// Reads a length-encoded integer at the start of `buf`.
/// Returns the value and the number of bytes used, or `None` if `buf` is too short
/// or starts with a byte that is not a length-encoded integer.
pub fn read_lenenc(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    match first {
        0..=0xFA => Some((u64::from(first), 1)),
        0xFC => {
            let b = buf.get(1..3)?;
            Some((u64::from(u16::from_le_bytes([b[0], b[1]])), 3))
        }
        0xFD => {
            let b = buf.get(1..4)?;
            Some((
                u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16,
                4,
            ))
        }
        0xFE => {
            let b: [u8; 8] = buf.get(1..9)?.try_into().ok()?;
            Some((u64::from_le_bytes(b), 9))
        }
        _ => None,
    }
}

/// Reads a length-encoded string at the start of `buf`: (bytes, total length used).
pub fn read_lenenc_str(buf: &[u8]) -> Option<(&[u8], usize)> {
    let (len, n) = read_lenenc(buf)?;
    let len = usize::try_from(len).ok()?;
    let s = buf.get(n..n.checked_add(len)?)?;
    Some((s, n + len))
}

/// Appends a length-encoded integer.
pub fn put_lenenc(out: &mut Vec<u8>, v: u64) {
    if v < 0xFB {
        out.push(v as u8);
    } else if v <= 0xFFFF {
        out.push(0xFC);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v <= 0xFF_FFFF {
        out.push(0xFD);
        out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
    } else {
        out.push(0xFE);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Appends a length-encoded string.
pub fn put_lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
    put_lenenc(out, s.len() as u64);
    out.extend_from_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn lenenc_round_trip(v in any::<u64>()) {
            let mut out = Vec::new();
            put_lenenc(&mut out, v);
            prop_assert_eq!(read_lenenc(&out), Some((v, out.len())));
        }

        #[test]
        fn lenenc_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let _ = read_lenenc(&bytes);
            let _ = read_lenenc_str(&bytes);
        }
    }
}
