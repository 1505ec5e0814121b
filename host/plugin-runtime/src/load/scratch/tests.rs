//! The quota's counting, driven directly on a real directory (the guest's side is tested with a
//! component in tests/all/scratch.rs).

use std::sync::Arc;

use cap_std::fs::FileExt;

use super::*;

struct Fixture {
    _root: tempfile::TempDir,
    host: ScratchRoot,
    quota: Arc<Quota>,
    dir: cap_std::fs::Dir,
}

fn fixture(limit: u64) -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let host = ScratchRoot::new(root.path()).unwrap();
    let path = host.make("p/lugin").unwrap();
    assert!(
        path.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("p_lugin-")
    );
    let dir = cap_std::fs::Dir::open_ambient_dir(&path, cap_std::ambient_authority()).unwrap();
    Fixture {
        _root: root,
        host,
        quota: Quota::new("p".into(), path, limit),
        dir,
    }
}

impl Fixture {
    /// Make `name` (charged) and open it.
    fn create(&self, name: &str) -> FsResult<Arc<cap_std::fs::File>> {
        let file = self
            .quota
            .entry(0, || Ok(Arc::new(self.dir.create(name)?)))?;
        self.quota.opened_file(&file);
        Ok(file)
    }

    fn write(&self, file: &cap_std::fs::File, at: u64, n: usize) -> FsResult<()> {
        Ok(self.quota.grow(
            file,
            |_| at + n as u64,
            || file.write_all_at(&vec![7; n], at),
        )??)
    }

    fn unlink(&self, name: &str) -> FsResult<()> {
        self.quota
            .remove(&self.dir, name, None, || Ok(self.dir.remove_file(name)?))
    }
}

fn full(r: FsResult<()>) -> bool {
    matches!(
        r.map_err(|e| e.downcast()),
        Err(Ok(ErrorCode::InsufficientSpace))
    )
}

#[test]
fn writes_are_charged_by_growth_and_refused_past_the_quota() {
    let f = fixture(10_000);
    let a = f.create("a").unwrap();
    assert_eq!(f.quota.counted(), (ENTRY, 1));
    f.write(&a, 0, 3000).unwrap();
    // Rewriting what is there costs nothing; growing costs the growth.
    f.write(&a, 0, 3000).unwrap();
    f.write(&a, 2000, 2000).unwrap();
    assert_eq!(f.quota.counted(), (ENTRY + 4000, 1));
    assert!(full(f.write(&a, 4000, 2000)));
    assert_eq!(
        a.metadata().unwrap().len(),
        4000,
        "a refused write is not made"
    );
    // A sparse write far out counts its whole length.
    assert!(full(f.write(&a, 1 << 40, 1)));
    // Shrinking gives back.
    f.quota
        .grow(&a, |_| 1000, || a.set_len(1000))
        .unwrap()
        .unwrap();
    assert_eq!(f.quota.counted(), (ENTRY + 1000, 1));
}

#[test]
fn a_removal_gives_back_what_its_name_held_at_once() {
    let f = fixture(2 * ENTRY + 8000);
    let a = f.create("a").unwrap();
    f.write(&a, 0, 8000).unwrap();
    drop(a);
    assert!(full(f.create("b").and_then(|b| f.write(&b, 0, 8000))));
    f.unlink("a").unwrap();
    assert_eq!(f.quota.counted(), (ENTRY, 1), "only b");
    let b = f
        .dir
        .open_with("b", cap_std::fs::OpenOptions::new().write(true))
        .map(Arc::new)
        .unwrap();
    f.write(&b, 0, 8000).unwrap();
    // A failed removal gives nothing back.
    assert!(f.unlink("nothing").is_err());
    assert_eq!(f.quota.counted(), (ENTRY + 8000, 1));
}

#[test]
fn a_file_unlinked_while_open_stays_counted_until_its_last_handle_goes() {
    let f = fixture(2 * ENTRY + 8000);
    let a = f.create("a").unwrap();
    f.write(&a, 0, 4000).unwrap();
    f.unlink("a").unwrap();
    // Still growing through its handle: still counted.
    f.write(&a, 4000, 4000).unwrap();
    assert_eq!(f.quota.counted(), (ENTRY + 8000, 0));
    let b = f.create("b").unwrap();
    assert!(
        full(f.write(&b, 0, 8000)),
        "a's bytes are still on the disk"
    );
    drop(a);
    f.write(&b, 0, 8000).unwrap();
    assert_eq!(f.quota.counted(), (ENTRY + 8000, 1));
}

#[test]
fn names_are_bounded_a_failed_entry_is_given_back_and_taking_the_grant_away_refuses() {
    let f = fixture(ENTRY);
    let failed: FsResult<()> = f.quota.entry(0, || Err(ErrorCode::Exist.into()));
    assert!(failed.is_err());
    assert_eq!(f.quota.counted(), (0, 0));
    f.quota.entry(0, || Ok(())).unwrap();
    assert!(full(f.quota.entry(0, || Ok(()))));
    f.quota.set_limit(u64::MAX);
    {
        let mut usage = f.quota.lock();
        usage.entries = MAX_ENTRIES;
    }
    assert!(
        full(f.quota.entry(0, || Ok(()))),
        "at most MAX_ENTRIES names"
    );
    f.quota.set_limit(0);
    let refused = f.quota.granted().map_err(|e| e.downcast());
    assert!(matches!(refused, Err(Ok(ErrorCode::Access))));
}

#[test]
fn directories_go_with_their_instance_and_their_host_and_dead_hosts_are_swept() {
    let f = fixture(1 << 20);
    let path = f.quota.dir().to_path_buf();
    let a = f.create("a").unwrap();
    f.write(&a, 0, 100).unwrap();
    let mine = path.parent().unwrap().to_path_buf();
    let scratch_dir = mine.parent().unwrap().to_path_buf();
    let Fixture {
        _root,
        host,
        quota,
        dir,
    } = f;
    drop((a, quota, dir));
    wait_gone(&path);
    // A host that died: its lock is free. Another live one's is held; other names are not ours.
    let dead = scratch_dir.join("host-1-1");
    std::fs::create_dir_all(dead.join("p-1")).unwrap();
    std::fs::write(dead.join(".lock"), b"").unwrap();
    let live = ScratchRoot::new(&scratch_dir).unwrap();
    std::fs::create_dir_all(scratch_dir.join("keep")).unwrap();
    std::fs::create_dir_all(scratch_dir.join("host-2-2")).unwrap();
    let again = ScratchRoot::new(&scratch_dir).unwrap();
    wait_gone(&dead);
    assert!(mine.exists() && live.dir.exists() && again.dir.exists());
    assert!(scratch_dir.join("keep").exists() && scratch_dir.join("host-2-2").exists());
    drop(host);
    wait_gone(&mine);
}

fn wait_gone(path: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while path.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(!path.exists(), "{} is still there", path.display());
}
