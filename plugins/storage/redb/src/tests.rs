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

fn put(k: &str, v: &str) -> BatchOp {
    BatchOp::Put {
        key: k.into(),
        value: v.into(),
    }
}

/// The generation of the (closed) database at `path`.
fn generation(path: &std::path::Path) -> u64 {
    let db = Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    meta.get(GENERATION).unwrap().unwrap().value()
}

/// Leave at `path` the log a crash would leave: `records` written for `generation`.
fn leave_log(path: &std::path::Path, generation: u64, records: &[Vec<u8>]) {
    let log = [vec![wal::header(generation)], records.to_vec()]
        .concat()
        .concat();
    std::fs::write(format!("{}.wal", path.display()), log).unwrap();
}

#[test]
fn what_a_log_left_behind_holds_is_applied_at_open_and_a_cut_record_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    drop(open(&path));
    // The log a crash leaves: two whole records, then half of a third.
    let first = wal::encode(&[put("a", "1"), put("b", "1")]).unwrap();
    let second = wal::encode(&[put("a", "2"), BatchOp::Delete { key: b"b".to_vec() }]).unwrap();
    let cut = wal::encode(&[put("c", "never acknowledged")]).unwrap();
    leave_log(
        &path,
        generation(&path),
        &[first, second, cut[..cut.len() - 3].to_vec()],
    );
    let s = open(&path);
    assert_eq!(s.get(b"a").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(s.get(b"b").unwrap(), None);
    assert_eq!(s.get(b"c").unwrap(), None);
    assert_eq!(
        wal_len(&path),
        16,
        "applied durably, then emptied (its header only)"
    );
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
    assert!(
        wal_len(&path) > 16,
        "a write is in the log, after its header"
    );
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
    assert_eq!(wal_len(&path), 16, "closing takes the log in");
    let s = open(&path);
    assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"w"[..]));
    assert_eq!(
        s.scan(b"n", None, 10_000).unwrap().len(),
        wal::CHECKPOINT_RECORDS as usize
    );
}

#[test]
fn a_log_of_another_state_of_the_database_is_dropped_or_refused_never_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    drop(open(&path));
    let now = generation(&path);
    let record = wal::encode(&[put("x", "from another state")]).unwrap();

    // A checkpoint ended before emptying the log: what it holds is in the database already.
    leave_log(&path, now - 1, std::slice::from_ref(&record));
    let s = open(&path);
    assert_eq!(
        s.get(b"x").unwrap(),
        None,
        "the log before the checkpoint is dropped"
    );
    drop(s);

    // The database file restored from a backup, or replaced, beside a newer log: refused.
    let now = generation(&path);
    leave_log(&path, now + 7, std::slice::from_ref(&record));
    let mut r = Redb::default();
    let refused = r
        .open(&format!(r#"{{"path": {:?}}}"#, path.display().to_string()))
        .unwrap_err()
        .to_string();
    assert!(refused.contains("belongs to another state"), "{refused}");
    assert!(refused.contains("move the log aside"), "{refused}");
    drop(r);
    // Moved aside, the database opens without it.
    std::fs::remove_file(format!("{}.wal", path.display())).unwrap();
    assert_eq!(open(&path).get(b"x").unwrap(), None);
}

#[test]
fn the_page_cache_is_configured_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb").display().to_string();
    for bad in [0, 65_537] {
        let err = Redb::default()
            .open(&format!(r#"{{"path": {path:?}, "cache_mb": {bad}}}"#))
            .unwrap_err();
        assert!(err.to_string().contains("cache_mb"), "{err}");
    }
    let mut r = Redb::default();
    r.open(&format!(r#"{{"path": {path:?}, "cache_mb": 1}}"#))
        .unwrap();
    r.batch(&[put("k", "v")]).unwrap();
    assert_eq!(r.get(b"k").unwrap(), Some(b"v".to_vec()));
}
