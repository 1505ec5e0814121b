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
    let host = ScratchRoot::new(root.path());
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
        let file = self.quota.entry(&self.dir, name, New::File, || {
            Ok(Arc::new(self.dir.create(name)?))
        })?;
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
    let nothing = || -> FsResult<()> { Ok(()) };
    let failed: FsResult<()> = f
        .quota
        .entry(&f.dir, "x", New::File, || Err(ErrorCode::Exist.into()));
    assert!(failed.is_err());
    assert_eq!(f.quota.counted(), (0, 0));
    f.quota.entry(&f.dir, "x", New::File, nothing).unwrap();
    assert!(full(f.quota.entry(&f.dir, "y", New::File, nothing)));
    f.quota.set_limit(u64::MAX);
    f.quota.lock().dirs_made = MAX_DIRS;
    assert!(
        full(f.quota.entry(&f.dir, "d", New::Dir, nothing)),
        "at most MAX_DIRS"
    );
    f.quota.entry(&f.dir, "y", New::File, nothing).unwrap();
    f.quota.lock().entries = MAX_ENTRIES;
    assert!(
        full(f.quota.entry(&f.dir, "z", New::File, nothing)),
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
    let mine = f.host.host_dir().unwrap();
    let scratch_dir = mine.parent().unwrap().to_path_buf();
    let Fixture {
        _root,
        host,
        quota,
        dir,
    } = f;
    drop((a, quota, dir));
    wait_gone(&path);
    // Hosts that died: their locks are free. Another live one's is held; other names are not
    // ours, nor a directory without a lock.
    let dead = scratch_dir.join("host-1-1");
    std::fs::create_dir_all(dead.join("p-1")).unwrap();
    std::fs::write(dead.join(".lock"), b"").unwrap();
    let half = scratch_dir.join(".new-1-2");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join(".lock"), b"").unwrap();
    let live = ScratchRoot::new(&scratch_dir);
    live.make("q").unwrap();
    std::fs::create_dir_all(scratch_dir.join("keep")).unwrap();
    std::fs::create_dir_all(scratch_dir.join("host-2-2")).unwrap();
    let again = ScratchRoot::new(&scratch_dir);
    wait_gone(&dead);
    wait_gone(&half);
    assert!(mine.exists() && live.host_dir().unwrap().exists());
    assert!(scratch_dir.join("keep").exists() && scratch_dir.join("host-2-2").exists());
    // Nothing is made until an instance needs it.
    assert!(again.host_dir().is_none());
    let untouched = tempfile::tempdir().unwrap();
    let never = untouched.path().join("scratch");
    drop(ScratchRoot::new(&never));
    assert!(!never.exists());
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

/// A directory counts its own size, which grows with the names it holds (and on ext4 never
/// shrinks): what the guest makes and removes is counted as the disk holds it.
#[test]
fn directories_count_their_own_size_as_it_changes() {
    let f = fixture(1 << 30);
    let root_before = f.dir.dir_metadata().unwrap().len();
    f.quota
        .entry(&f.dir, "d", New::Dir, || Ok(f.dir.create_dir("d")?))
        .unwrap();
    let empty = f.dir.symlink_metadata("d").unwrap().len();
    let long = "n".repeat(200);
    for i in 0..100 {
        let name = format!("d/{long}{i}");
        f.quota
            .entry(&f.dir, &name, New::File, || {
                f.dir.create(&name)?;
                Ok(())
            })
            .unwrap();
    }
    let sizes = |f: &Fixture| {
        let root = f.dir.dir_metadata().unwrap().len() - root_before;
        let d = f.dir.symlink_metadata("d").unwrap().len();
        (root, d)
    };
    let (root, d) = sizes(&f);
    assert!(
        d > empty,
        "a directory of 100 long names grew: {empty} to {d}"
    );
    assert_eq!(f.quota.counted(), (101 * ENTRY + d + root, 101));
    for i in 0..100 {
        let name = format!("d/{long}{i}");
        f.quota
            .remove(&f.dir, &name, None, || Ok(f.dir.remove_file(&name)?))
            .unwrap();
    }
    let (root, d) = sizes(&f);
    assert_eq!(f.quota.counted(), (ENTRY + d + root, 1));
    f.quota
        .remove(&f.dir, "d", None, || Ok(f.dir.remove_dir("d")?))
        .unwrap();
    let root = f.dir.dir_metadata().unwrap().len() - root_before;
    assert_eq!(f.quota.counted(), (root, 0));
}

/// What a removal gives back is what is gone: a call that succeeds without removing the name
/// (a rename onto itself, a path the look before it resolved otherwise) gives back nothing.
#[test]
fn a_removal_that_removed_nothing_gives_nothing_back() {
    let f = fixture(1 << 20);
    let a = f.create("a").unwrap();
    f.write(&a, 0, 5000).unwrap();
    let counted = f.quota.counted();
    f.quota.remove(&f.dir, "a", None, || Ok(())).unwrap();
    assert_eq!(f.quota.counted(), counted);
    let id = file_id(&f.dir.symlink_metadata("a").unwrap());
    f.quota
        .remove(&f.dir, "a", Some(id), || {
            Ok(f.dir.rename("a", &f.dir, "a")?)
        })
        .unwrap();
    assert_eq!(f.quota.counted(), counted);
}

/// A directory removed while the guest holds it open keeps its blocks until closed: it stays
/// counted until then, like a file.
#[test]
fn a_directory_removed_while_open_stays_counted_until_its_last_handle_goes() {
    let f = fixture(1 << 30);
    f.quota
        .entry(&f.dir, "d", New::Dir, || Ok(f.dir.create_dir("d")?))
        .unwrap();
    let d = Arc::new(f.dir.open_dir("d").unwrap());
    f.quota.opened_dir(&d);
    let counted = f.quota.counted();
    f.quota
        .remove(&f.dir, "d", None, || Ok(f.dir.remove_dir("d")?))
        .unwrap();
    f.quota.entry(&f.dir, "x", New::File, || Ok(())).unwrap();
    assert_eq!(f.quota.counted().0, counted.0 + ENTRY, "d still counted");
    drop(d);
    f.quota.entry(&f.dir, "y", New::File, || Ok(())).unwrap();
    assert_eq!(f.quota.counted().0, 2 * ENTRY, "d given back once closed");
}
