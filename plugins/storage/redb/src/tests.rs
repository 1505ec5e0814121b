//! The write-ahead log as the store uses it (a crash with `kill -9` is tested against the built
//! plugin in `tests/all/storage.rs`).

use super::*;

fn open(path: &std::path::Path) -> Redb {
    let mut r = Redb::default();
    r.open(&format!(r#"{{"path": {:?}}}"#, path.display().to_string()))
        .unwrap();
    r
}

fn wal_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(format!("{}.wal", path.display()))
        .unwrap()
        .len()
}

#[test]
fn what_a_log_left_behind_holds_is_applied_at_open_and_a_cut_record_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    drop(open(&path));
    // The log a crash leaves: two whole records, then half of a third.
    let put = |k: &str, v: &str| BatchOp::Put {
        key: k.into(),
        value: v.into(),
    };
    let first = wal::encode(&[put("a", "1"), put("b", "1")]).unwrap();
    let second = wal::encode(&[put("a", "2"), BatchOp::Delete { key: b"b".to_vec() }]).unwrap();
    let cut = wal::encode(&[put("c", "never acknowledged")]).unwrap();
    let log = [first, second, cut[..cut.len() - 3].to_vec()].concat();
    std::fs::write(format!("{}.wal", path.display()), log).unwrap();
    let s = open(&path);
    assert_eq!(s.get(b"a").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(s.get(b"b").unwrap(), None);
    assert_eq!(s.get(b"c").unwrap(), None);
    assert_eq!(wal_len(&path), 0, "applied durably, then emptied");
    // Later writes are not hidden behind the cut record.
    s.put(b"d", b"1").unwrap();
    drop(s);
    assert_eq!(open(&path).get(b"d").unwrap().as_deref(), Some(&b"1"[..]));
}

#[test]
fn writes_go_to_the_log_and_a_checkpoint_or_a_close_empties_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = open(&path);
    s.put(b"k", b"v").unwrap();
    assert!(wal_len(&path) > 0, "a write is in the log");
    assert!(!s.compare_and_swap(b"k", Some(b"x"), None).unwrap());
    assert!(!s.delete(b"absent").unwrap());
    let before = wal_len(&path);
    assert!(
        s.compare_and_swap(b"k", Some(b"v"), Some(b"w")).unwrap(),
        "a swap that happens is logged"
    );
    assert!(wal_len(&path) > before);
    for i in 0..wal::CHECKPOINT_RECORDS {
        s.put(format!("n{i:05}").as_bytes(), b"x").unwrap();
    }
    assert!(
        wal_len(&path) < 4096 * 20,
        "checkpointed on the way: {} bytes",
        wal_len(&path)
    );
    drop(s);
    assert_eq!(wal_len(&path), 0, "closing takes the log in");
    let s = open(&path);
    assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"w"[..]));
    assert_eq!(
        s.scan(b"n", None, 10_000).unwrap().len(),
        wal::CHECKPOINT_RECORDS as usize
    );
}
