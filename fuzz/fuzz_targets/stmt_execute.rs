//! The COM_STMT_EXECUTE rewriter: `protocol::stmt::{exec_layout,
//! with_types, param_types, set_stmt_id}` and `protocol::command::decode`
//! on arbitrary payloads and parameter counts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sqlease::protocol::command::{decode, Command};
use sqlease::protocol::stmt::{exec_layout, param_types, set_stmt_id, with_types};

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let params = u16::from_le_bytes([data[0], data[1]]) % 1024;
    let id = u32::from_le_bytes([data[2], data[3], data[4], data[5]]);
    let p = &data[6..];
    let _ = decode(p);

    let layout = exec_layout(p, params);
    if let Some(l) = &layout {
        assert!(params > 0);
        assert_eq!(l.bound_flag, 10 + usize::from(params).div_ceil(8));
        assert!(l.bound_flag < p.len());
        assert_eq!(l.bound, p[l.bound_flag] != 0);
        match l.types {
            Some((s, n)) => {
                assert!(l.bound);
                assert_eq!(s, l.bound_flag + 1);
                assert_eq!(n, 2 * usize::from(params));
                assert!(s + n <= p.len());
                assert_eq!(param_types(p, params), Some(&p[s..s + n]));
            }
            None => assert!(!l.bound),
        }
    }

    let types: Vec<u8> = (0..2 * usize::from(params)).map(|i| i as u8).collect();
    match with_types(p, params, &types) {
        Some(q) => {
            let l = layout.as_ref().expect("rewritten without a layout");
            assert!(!l.bound);
            let bf = l.bound_flag;
            assert_eq!(q.len(), p.len() + types.len());
            assert_eq!(&q[..bf], &p[..bf]);
            assert_eq!(q[bf], 1);
            assert_eq!(&q[bf + 1 + types.len()..], &p[bf + 1..]);
            assert_eq!(param_types(&q, params), Some(&types[..]));
            assert_eq!(with_types(&q, params, &types), None);
        }
        None => assert!(layout.as_ref().is_none_or(|l| l.bound)),
    }

    let mut m = p.to_vec();
    if set_stmt_id(&mut m, id) {
        assert_eq!(&m[1..5], &id.to_le_bytes());
        assert_eq!(&m[..1], &p[..1]);
        assert_eq!(&m[5..], &p[5..]);
        if p[0] == 0x17 && p.len() >= 6 {
            assert_eq!(
                decode(&m),
                Command::StmtExecute {
                    stmt_id: id,
                    flags: p[5]
                }
            );
        }
        // The rewrite does not move the parameter block.
        assert_eq!(exec_layout(&m, params), layout);
    } else {
        assert!(p.len() < 5);
        assert_eq!(m, p);
    }
});
