//! The storage contract every backend keeps, as one sequence of operations on an empty store: the
//! conformance suite runs it on every backend the tests load (tests/all/storage.rs,
//! etcd_storage.rs) and on the examples' (host/spearlet/tests/all/examples.rs).

use spear_plugin_api::StorageBackend;
use spear_plugin_api::storage::BatchOp;

fn put(k: &str, v: &str) -> BatchOp {
    BatchOp::Put {
        key: k.into(),
        value: v.into(),
    }
}

fn check(k: &str, v: Option<&str>) -> BatchOp {
    BatchOp::Check {
        key: k.into(),
        value: v.map(Into::into),
    }
}

/// The storage contract, on an empty store `s`: every backend passes the same operations.
pub fn keeps_the_contract(name: &str, s: &dyn StorageBackend) {
    {
        assert_eq!(s.get(b"a").unwrap(), None, "{name}");
        s.put(b"a", b"1").unwrap();
        s.put(b"a", b"2").unwrap();
        assert_eq!(
            s.get(b"a").unwrap().as_deref(),
            Some(&b"2"[..]),
            "{name}: put replaces"
        );
        assert!(s.delete(b"a").unwrap(), "{name}");
        assert!(
            !s.delete(b"a").unwrap(),
            "{name}: second delete finds nothing"
        );

        for i in 0..25u8 {
            s.put(format!("node/{i:02}").as_bytes(), &[i]).unwrap();
        }
        s.put(b"nodf", b"after the prefix").unwrap();
        s.put(b"nod", b"before the prefix").unwrap();
        // Paging through a prefix: 10, 10, 5, then nothing.
        let mut seen = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = s.scan(b"node/", after.as_deref(), 10).unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 10);
            after = Some(page.last().unwrap().0.clone());
            seen.extend(page.into_iter().map(|(_, v)| v[0]));
        }
        assert_eq!(
            seen,
            (0..25).collect::<Vec<u8>>(),
            "{name}: pages in key order, nothing twice"
        );

        s.batch(&[
            BatchOp::Put {
                key: b"x".to_vec(),
                value: b"1".to_vec(),
            },
            BatchOp::Put {
                key: b"y".to_vec(),
                value: b"2".to_vec(),
            },
            BatchOp::Delete {
                key: b"node/00".to_vec(),
            },
        ])
        .unwrap();
        assert_eq!(s.get(b"y").unwrap().as_deref(), Some(&b"2"[..]), "{name}");
        assert_eq!(s.get(b"node/00").unwrap(), None, "{name}");

        assert!(
            !s.compare_and_swap(b"x", Some(b"0"), Some(b"9")).unwrap(),
            "{name}: wrong expectation"
        );
        assert_eq!(s.get(b"x").unwrap().as_deref(), Some(&b"1"[..]));
        assert!(
            s.compare_and_swap(b"x", Some(b"1"), Some(b"9")).unwrap(),
            "{name}"
        );
        assert!(
            !s.compare_and_swap(b"z", Some(b"1"), Some(b"1")).unwrap(),
            "{name}: absent ≠ expected"
        );
        assert!(
            s.compare_and_swap(b"z", None, Some(b"new")).unwrap(),
            "{name}: create if absent"
        );
        assert!(
            !s.compare_and_swap(b"z", None, Some(b"again")).unwrap(),
            "{name}"
        );
        assert!(
            s.compare_and_swap(b"z", Some(b"new"), None).unwrap(),
            "{name}: delete by CAS"
        );
        assert_eq!(s.get(b"z").unwrap(), None);

        // Checks: a batch applies only if every check holds, all of it or nothing.
        assert!(
            s.batch(&[
                check("x", Some("9")),
                check("absent", None),
                put("w", "1"),
                BatchOp::Delete { key: b"x".to_vec() },
            ])
            .unwrap(),
            "{name}: every check holds"
        );
        assert_eq!(s.get(b"w").unwrap().as_deref(), Some(&b"1"[..]), "{name}");
        assert_eq!(s.get(b"x").unwrap(), None, "{name}");
        assert!(
            !s.batch(&[
                check("w", Some("1")),
                check("y", Some("not its value")),
                put("v", "1"),
                BatchOp::Delete { key: b"w".to_vec() },
            ])
            .unwrap(),
            "{name}: one check fails"
        );
        assert_eq!(s.get(b"v").unwrap(), None, "{name}: nothing applied");
        assert_eq!(s.get(b"w").unwrap().as_deref(), Some(&b"1"[..]), "{name}");
        assert!(
            !s.batch(&[check("w", None), put("v", "1")]).unwrap(),
            "{name}: a present key is not absent"
        );
        assert!(
            s.batch(&[put("q", "1"), check("q", None), put("q", "2")])
                .unwrap(),
            "{name}: checks see the state before the batch's writes"
        );
        assert_eq!(
            s.get(b"q").unwrap().as_deref(),
            Some(&b"2"[..]),
            "{name}: the last write of a key wins"
        );
    }
}
