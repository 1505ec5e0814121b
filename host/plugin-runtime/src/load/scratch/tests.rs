//! The quota's counting, driven directly on a real directory (the guest's side is tested with a
//! component in tests/all/scratch.rs).

use std::sync::Arc;

use super::*;

fn quota(limit: u64) -> (tempfile::TempDir, Arc<Quota>) {
    let root = tempfile::tempdir().unwrap();
    let dir = ScratchRoot::new(root.path()).make("p/lugin").unwrap();
    assert!(dir.ends_with(format!("{}/p_lugin-{}", std::process::id(), {
        let name = dir.file_name().unwrap().to_str().unwrap();
        name.rsplit('-').next().unwrap().to_owned()
    })));
    (root, Quota::new("p".into(), dir, limit))
}

fn open(q: &Quota, name: &str) -> Arc<cap_std::fs::File> {
    let dir = cap_std::fs::Dir::open_ambient_dir(q.dir(), cap_std::ambient_authority()).unwrap();
    let file = Arc::new(dir.create(name).unwrap());
    q.track(&file);
    file
}

fn write(q: &Quota, file: &cap_std::fs::File, at: u64, n: usize) -> FsResult<()> {
    use cap_std::fs::FileExt;
    q.grow(
        file,
        |_| at + n as u64,
        || Ok(file.write_all_at(&vec![7; n], at)?),
    )
}

fn full(r: FsResult<()>) -> bool {
    matches!(
        r.map_err(|e| e.downcast()),
        Err(Ok(ErrorCode::InsufficientSpace))
    )
}

#[test]
fn writes_are_charged_by_growth_and_refused_past_the_quota() {
    let (_root, q) = quota(10_000);
    let f = q.entry(0, || Ok(open(&q, "a"))).unwrap();
    assert_eq!(q.used(), ENTRY);
    write(&q, &f, 0, 3000).unwrap();
    // Rewriting what is there costs nothing; growing costs the growth.
    write(&q, &f, 0, 3000).unwrap();
    write(&q, &f, 2000, 2000).unwrap();
    assert_eq!(q.used(), ENTRY + 4000);
    assert!(full(write(&q, &f, 4000, 2000)));
    assert_eq!(
        f.metadata().unwrap().len(),
        4000,
        "a refused write is not made"
    );
    // A sparse write far out counts its whole length.
    assert!(full(write(&q, &f, 1 << 40, 1)));
    assert_eq!(q.used(), ENTRY + 4000);
}

#[test]
fn removals_are_found_by_a_recount_when_a_write_would_not_fit() {
    let (_root, q) = quota(3 * ENTRY + 8000);
    let a = q.entry(0, || Ok(open(&q, "a"))).unwrap();
    write(&q, &a, 0, 8000).unwrap();
    drop(a);
    let b = q.entry(0, || Ok(open(&q, "b"))).unwrap();
    assert!(full(write(&q, &b, 0, 8000)));
    std::fs::remove_file(q.dir().join("a")).unwrap();
    q.freed();
    write(&q, &b, 0, 8000).unwrap();
    assert_eq!(q.used(), ENTRY + 8000, "recounted: only b");
}

#[test]
fn a_file_unlinked_while_open_stays_counted_until_closed() {
    let (_root, q) = quota(2 * ENTRY + 8000);
    let a = q.entry(0, || Ok(open(&q, "a"))).unwrap();
    write(&q, &a, 0, 8000).unwrap();
    std::fs::remove_file(q.dir().join("a")).unwrap();
    q.freed();
    let b = q.entry(0, || Ok(open(&q, "b"))).unwrap();
    assert!(
        full(write(&q, &b, 0, 8000)),
        "a's bytes are still on the disk"
    );
    drop(a);
    write(&q, &b, 0, 8000).unwrap();
}

#[test]
fn a_failed_entry_is_given_back_and_taking_the_grant_away_refuses() {
    let (_root, q) = quota(ENTRY);
    let failed: FsResult<()> = q.entry(0, || Err(ErrorCode::Exist.into()));
    assert!(failed.is_err());
    assert_eq!(q.used(), 0);
    q.entry(0, || Ok(())).unwrap();
    assert!(full(q.entry(0, || Ok(()))));
    q.set_limit(0);
    let refused = q.granted().map_err(|e| e.downcast());
    assert!(matches!(refused, Err(Ok(ErrorCode::Access))));
}

#[test]
fn the_directory_goes_with_the_quota_and_dead_processes_directories_are_swept() {
    let (root, q) = quota(1 << 20);
    let dir = q.dir().to_path_buf();
    let f = q.entry(0, || Ok(open(&q, "a"))).unwrap();
    write(&q, &f, 0, 100).unwrap();
    drop((f, q));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while dir.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(!dir.exists());
    // A pid no process has (above Linux's pid_max), and one that is not a pid.
    let stale = root.path().join("4194305");
    std::fs::create_dir_all(stale.join("x-1")).unwrap();
    std::fs::create_dir_all(root.path().join("keep")).unwrap();
    let _again = ScratchRoot::new(root.path());
    while stale.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(!stale.exists());
    assert!(root.path().join("keep").exists());
    assert!(root.path().join(std::process::id().to_string()).exists());
}
