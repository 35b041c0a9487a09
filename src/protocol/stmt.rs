//! COM_STMT_* packets: statement-id remapping and COM_STMT_EXECUTE walking.
//!
//! After a swap the upstream statement ids differ from the ones the client
//! knows, so the 4-byte id is rewritten in place in EXECUTE, SEND_LONG_DATA,
//! CLOSE, RESET and FETCH, and in the prepare-OK packet. The first EXECUTE
//! after a re-prepare may omit the parameter types (new-params-bound = 0,
//! relying on the types the old connection saw); it is rewritten to carry
//! them.

/// Offset of the statement id in every COM_STMT_* packet and in prepare-OK.
const ID_OFFSET: usize = 1;
/// Fixed part of COM_STMT_EXECUTE: command, id, flags, iteration count.
const EXEC_FIXED: usize = 10;

/// Rewrites the statement id of a COM_STMT_* or prepare-OK payload in place.
pub fn set_stmt_id(payload: &mut [u8], id: u32) -> bool {
    match payload.get_mut(ID_OFFSET..ID_OFFSET + 4) {
        Some(b) => {
            b.copy_from_slice(&id.to_le_bytes());
            true
        }
        None => false,
    }
}

/// Where the parameter block of an execute starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecLayout {
    /// Offset of the new-params-bound flag.
    pub bound_flag: usize,
    /// Whether the flag is non-zero. Only 0 means "no types": any other
    /// value is forwarded untouched (MariaDB rejects values other than 0
    /// and 1 as malformed, error 1835), never given a second type block.
    pub bound: bool,
    /// Offset and length of the type block when present.
    pub types: Option<(usize, usize)>,
}

/// Walks a COM_STMT_EXECUTE payload for a statement with `params` parameters.
/// `None` when the packet is too short for that many parameters.
pub fn exec_layout(payload: &[u8], params: u16) -> Option<ExecLayout> {
    if params == 0 {
        return None;
    }
    let bitmap = usize::from(params).div_ceil(8);
    let bound_flag = EXEC_FIXED + bitmap;
    let bound = *payload.get(bound_flag)? != 0;
    let types = if bound {
        let start = bound_flag + 1;
        let len = 2 * usize::from(params);
        payload.get(start..start + len)?;
        Some((start, len))
    } else {
        None
    };
    Some(ExecLayout {
        bound_flag,
        bound,
        types,
    })
}

/// The parameter types an execute carries, if it carries them.
pub fn param_types(payload: &[u8], params: u16) -> Option<&[u8]> {
    let l = exec_layout(payload, params)?;
    let (s, n) = l.types?;
    payload.get(s..s + n)
}

/// Rewrites an execute without types into one carrying `types`.
/// Returns `None` when the packet already has types or is malformed.
pub fn with_types(payload: &[u8], params: u16, types: &[u8]) -> Option<Vec<u8>> {
    let l = exec_layout(payload, params)?;
    if l.bound || types.len() != 2 * usize::from(params) {
        return None;
    }
    let mut out = Vec::with_capacity(payload.len() + types.len());
    out.extend_from_slice(payload.get(..l.bound_flag)?);
    out.push(1);
    out.extend_from_slice(types);
    out.extend_from_slice(payload.get(l.bound_flag + 1..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exec(id: u32, params: u16, bound: bool) -> Vec<u8> {
        let mut p = vec![0x17];
        p.extend_from_slice(&id.to_le_bytes());
        p.push(0);
        p.extend_from_slice(&1u32.to_le_bytes());
        p.extend(std::iter::repeat_n(0, usize::from(params).div_ceil(8)));
        p.push(u8::from(bound));
        if bound {
            for _ in 0..params {
                p.extend_from_slice(&[0x08, 0x00]);
            }
        }
        for _ in 0..params {
            p.extend_from_slice(&42u64.to_le_bytes());
        }
        p
    }

    #[test]
    fn remap_and_add_types() {
        let mut p = exec(5, 2, false);
        assert!(set_stmt_id(&mut p, 9));
        assert_eq!(&p[1..5], &9u32.to_le_bytes());
        assert_eq!(param_types(&p, 2), None);
        let q = with_types(&p, 2, &[8, 0, 8, 0]).unwrap();
        let mut want = exec(9, 2, true);
        want[1..5].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(q, want);
        assert_eq!(param_types(&q, 2), Some(&[8u8, 0, 8, 0][..]));
        assert_eq!(with_types(&q, 2, &[8, 0, 8, 0]), None);
    }

    /// Regression (found writing the `stmt_execute` fuzz target's
    /// invariants): new-params-bound = 2 was read as "no types", so after a
    /// swap such an execute got the flag set to 1 and a second type block
    /// inserted before the one it carried — the server would then have read
    /// the old types as parameter values. Now it is forwarded untouched and
    /// MariaDB answers 1835 (malformed packet), as on a direct connection.
    #[test]
    fn bound_flag_two_is_bound() {
        let mut p = exec(3, 2, true);
        p[11] = 2;
        assert!(exec_layout(&p, 2).unwrap().bound);
        assert_eq!(with_types(&p, 2, &[8, 0, 8, 0]), None);
        assert_eq!(param_types(&p, 2), Some(&[8u8, 0, 8, 0][..]));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40), params in 0u16..20) {
            let _ = exec_layout(&bytes, params);
            let _ = param_types(&bytes, params);
            let _ = with_types(&bytes, params, &vec![0; 2 * usize::from(params)]);
            let mut b = bytes.clone();
            let _ = set_stmt_id(&mut b, 1);
        }

        /// Only a zero new-params-bound flag means "no types": a packet
        /// with any other value is never rewritten to carry a second type
        /// block.
        #[test]
        fn nonzero_bound_flag_means_types(params in 1u16..40, flag in 1u8..=255, id in any::<u32>()) {
            let mut p = exec(id, params, true);
            let bf = 10 + usize::from(params).div_ceil(8);
            p[bf] = flag;
            let l = exec_layout(&p, params).unwrap();
            prop_assert!(l.bound);
            prop_assert_eq!(l.types, Some((bf + 1, 2 * usize::from(params))));
            prop_assert!(param_types(&p, params).is_some());
            prop_assert_eq!(with_types(&p, params, &vec![8; 2 * usize::from(params)]), None);
        }

        /// Rewriting the id changes bytes 1..5 only, and decodes back.
        #[test]
        fn set_stmt_id_round_trip(params in 0u16..40, bound in any::<bool>(), id in any::<u32>(), new_id in any::<u32>()) {
            let p = exec(id, params, bound && params > 0);
            let mut q = p.clone();
            prop_assert!(set_stmt_id(&mut q, new_id));
            prop_assert_eq!(&q[..1], &p[..1]);
            prop_assert_eq!(&q[5..], &p[5..]);
            prop_assert_eq!(
                crate::protocol::command::decode(&q),
                crate::protocol::command::Command::StmtExecute { stmt_id: new_id, flags: 0 }
            );
            prop_assert_eq!(exec_layout(&q, params), exec_layout(&p, params));
        }

        #[test]
        fn with_types_round_trip(params in 1u16..40, id in any::<u32>()) {
            let p = exec(id, params, false);
            let types: Vec<u8> = (0..params).flat_map(|_| [0x08u8, 0]).collect();
            let q = with_types(&p, params, &types).unwrap();
            prop_assert_eq!(q, exec(id, params, true));
        }
    }
}
