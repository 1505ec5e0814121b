//! A component's scratch directory (`[plugins.grants.<name>] scratch_mb`), through a real
//! component (the echo executor's `scratch` mode runs a script of file operations with Rust's
//! `std::fs`) and real files: granted, it has a private directory that goes with the instance;
//! not granted, none; a guest that fills it, floods it with entries or hides bytes in a file it
//! unlinked while open is stopped at the quota, and the host's disk holds no more than that.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spear_plugin_api::Executor;
use spear_plugin_api::executor::ExecSpec;
use spear_plugin_runtime::engine::WasmEngine;
use spear_plugin_runtime::grants::{Grant, GrantTable};
use spear_plugin_runtime::load::scratch::ENTRY;
use spear_plugin_runtime::{LimitValues, Limits, load_file};
use spear_tests::guest;

const MIB: u64 = 1024 * 1024;

/// A write refused at the quota, as the guest's libc reports it: `insufficient-space` where the
/// host's answer reaches it (creating a file or directory, a `write` at an offset), and EIO
/// (Rust's `Uncategorized`) from a file's output stream, whose failures wasi-libc turns into
/// EIO whatever the host said (it never asks `filesystem-error-code`).
fn refused(answer: &str) -> bool {
    answer == "err StorageFull" || answer == "err Uncategorized"
}

/// Limits with room for a call that writes a MiB, granting `echo` `scratch_mb`.
fn limits(scratch_mb: Option<u64>) -> Arc<Limits> {
    let limits = Arc::new(Limits::new(LimitValues {
        call_timeout_ms: 5_000,
        setup_timeout_ms: 5_000,
        ..LimitValues::default()
    }));
    limits.set_grants(grants(scratch_mb));
    limits
}

fn grants(scratch_mb: Option<u64>) -> GrantTable {
    GrantTable::from([(
        "echo".to_owned(),
        Grant {
            scratch_mb,
            ..Grant::default()
        },
    )])
}

/// An echo executor in `scratch` mode whose scratch directories are made under `root`.
fn echo(limits: &Arc<Limits>, root: &Path) -> Box<dyn Executor> {
    let engine = WasmEngine::new().unwrap().with_scratch(root);
    let plugin = load_file(&guest("component", "echo-executor.wasm"), &engine, limits).unwrap();
    let mut x = plugin.executor().unwrap();
    x.configure(r#"{"mode": "scratch"}"#).unwrap();
    x
}

/// Run `script` as one execution; its answers, a line each.
fn run(x: &dyn Executor, id: &str, script: &str) -> Vec<String> {
    let spec = ExecSpec {
        execution_id: id.into(),
        task: "t".into(),
        entry: "echo".into(),
        stdin: script.as_bytes().to_vec(),
        ..ExecSpec::default()
    };
    let handle = x.start(&spec).unwrap();
    let result = x.wait(&handle, 5_000).unwrap().expect("finished");
    x.destroy(&handle).unwrap();
    String::from_utf8(result.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The instance directories under `root` (`<root>/host-<pid>-<n>/<name>-<n>`).
fn instance_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(hosts) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    hosts
        .flatten()
        .filter_map(|h| std::fs::read_dir(h.path()).ok())
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.path())
        .collect()
}

/// Bytes of the files under `dir`, and its entries.
fn on_disk(dir: &Path) -> (u64, u64) {
    let (mut bytes, mut entries) = (0, 0);
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        entries += 1;
        let meta = e.metadata().unwrap();
        if meta.is_dir() {
            let (b, n) = on_disk(&e.path());
            bytes += b;
            entries += n;
        } else {
            bytes += meta.len();
        }
    }
    (bytes, entries)
}

fn wait_gone(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!dir.exists(), "{} is still there", dir.display());
}

#[test]
fn a_granted_instance_has_a_private_directory_that_goes_with_it() {
    let root = tempfile::tempdir().unwrap();
    let limits = limits(Some(1));
    let a = echo(&limits, root.path());
    let answers = run(
        a.as_ref(),
        "e1",
        "write a 1000\nsize a\nappend a 24\nsize a\nmkdir d\nls\nrm a\nls\nsize a\n",
    );
    assert_eq!(
        answers,
        [
            "ok",
            "1000",
            "ok",
            "1024",
            "ok",
            "2",
            "ok",
            "1",
            "err NotFound"
        ]
    );
    // Files outlive a call: the directory is the instance's, not the execution's.
    assert_eq!(run(a.as_ref(), "e2", "write kept 7\n"), ["ok"]);
    assert_eq!(run(a.as_ref(), "e3", "size kept\n"), ["7"]);
    let dirs = instance_dirs(root.path());
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert_eq!(std::fs::read(dirs[0].join("kept")).unwrap(), b"wwwwwww");
    // Another instance of the same plugin sees a directory of its own.
    let b = echo(&limits, root.path());
    assert_eq!(
        run(b.as_ref(), "e4", "size kept\nls\n"),
        ["err NotFound", "0"]
    );
    assert_eq!(instance_dirs(root.path()).len(), 2);
    drop(a);
    wait_gone(&dirs[0]);
    assert_eq!(instance_dirs(root.path()).len(), 1);
}

#[test]
fn without_the_grant_an_instance_has_no_directory_and_one_granted_later_reaches_new_instances() {
    let root = tempfile::tempdir().unwrap();
    let limits = limits(None);
    let x = echo(&limits, root.path());
    let answers = run(x.as_ref(), "e1", "write a 10\nls\n");
    assert!(answers.iter().all(|a| a.starts_with("err ")), "{answers:?}");
    assert!(instance_dirs(root.path()).is_empty());
    limits.set_grants(grants(Some(1)));
    let answers = run(x.as_ref(), "e2", "write a 10\n");
    assert!(answers[0].starts_with("err "), "{answers:?}");
    let y = echo(&limits, root.path());
    assert_eq!(run(y.as_ref(), "e3", "write a 10\nsize a\n"), ["ok", "10"]);
    assert_eq!(instance_dirs(root.path()).len(), 1);
}

#[test]
fn a_guest_filling_its_directory_is_stopped_at_the_quota_and_space_it_frees_is_reusable() {
    let root = tempfile::tempdir().unwrap();
    let x = echo(&limits(Some(1)), root.path());
    let mut answers = Vec::new();
    let log = spear_tests::logs::logged_at(tracing::Level::WARN, || {
        answers = run(x.as_ref(), "e1", "fill big\n");
        run(x.as_ref(), "e1b", "fill again\n");
    });
    // The first refusal of an instance is logged at warn, once.
    let warned = log.matches("scratch directory is full").count();
    assert_eq!(warned, 1, "{log}");
    let (written, error) = answers[0].split_once(' ').unwrap();
    let written: u64 = written.parse().unwrap();
    assert!(refused(error), "{answers:?}");
    assert!(
        written <= MIB - ENTRY && written > MIB - ENTRY - 64 * 1024,
        "{written}"
    );
    let dir = &instance_dirs(root.path())[0];
    let (bytes, entries) = on_disk(dir);
    assert!(
        bytes + entries * ENTRY <= MIB,
        "{bytes} bytes in {entries} entries"
    );
    // Full: not another piece fits.
    let answers = run(x.as_ref(), "e2", "fill more\n");
    let _ = run(x.as_ref(), "e2b", "rm again\n");
    assert!(
        answers[0].strip_prefix("0 ").is_some_and(refused),
        "{answers:?}"
    );
    // Freed, the space is there again.
    assert_eq!(
        run(x.as_ref(), "e3", "rm big\nwrite more 500000\nsize more\n"),
        ["ok", "ok", "500000"]
    );
}

#[test]
fn a_flood_of_empty_entries_is_stopped_at_the_quota() {
    let root = tempfile::tempdir().unwrap();
    let x = echo(&limits(Some(1)), root.path());
    let script: String = (0..300).map(|i| format!("mkdir d{i}\n")).collect();
    let answers = run(x.as_ref(), "e1", &script);
    let made = answers.iter().filter(|a| *a == "ok").count() as u64;
    assert!(
        answers[made as usize..]
            .iter()
            .all(|a| a == "err StorageFull"),
        "{answers:?}"
    );
    // Each directory costs 4 KiB and its own size; the one holding them, its growth.
    let dir = &instance_dirs(root.path())[0];
    let (_, entries) = on_disk(dir);
    assert_eq!(entries, made);
    let own = std::fs::metadata(dir.join("d0")).unwrap().len();
    let growth = std::fs::metadata(dir).unwrap().len() - own;
    assert!(made * (ENTRY + own) + growth <= MIB, "{made} made");
    assert!((made + 1) * (ENTRY + own) + growth > MIB, "{made} made");
}

#[test]
fn bytes_in_a_file_unlinked_while_open_count_until_it_is_closed() {
    let root = tempfile::tempdir().unwrap();
    let x = echo(&limits(Some(1)), root.path());
    let answers = run(
        x.as_ref(),
        "e1",
        "hold h\nheld 600000\nrm h\nls\nwrite c 600000\n",
    );
    assert_eq!(answers[..4], ["ok", "ok", "ok", "0"]);
    assert!(refused(&answers[4]), "{answers:?}");
    // Still open across calls: still counted. Closed, the space is free.
    let answers = run(x.as_ref(), "e2", "write c 600000\n");
    assert!(refused(&answers[0]), "{answers:?}");
    assert_eq!(
        run(x.as_ref(), "e3", "release\nwrite c 600000\nsize c\n"),
        ["ok", "ok", "600000"]
    );
}

#[test]
fn the_quota_follows_the_grant_at_each_call_and_taking_it_away_refuses_every_call() {
    let root = tempfile::tempdir().unwrap();
    let limits = limits(Some(2));
    let x = echo(&limits, root.path());
    assert_eq!(run(x.as_ref(), "e1", "write a 1500000\n"), ["ok"]);
    // Lowered below what it holds: nothing more fits, what is there stays readable.
    limits.set_grants(grants(Some(1)));
    let answers = run(x.as_ref(), "e2", "append a 1\nsize a\n");
    assert!(refused(&answers[0]), "{answers:?}");
    assert_eq!(answers[1], "1500000");
    limits.set_grants(GrantTable::new());
    assert_eq!(
        run(x.as_ref(), "e3", "size a\nwrite b 1\nls\n"),
        [
            "err PermissionDenied",
            "err PermissionDenied",
            "err PermissionDenied"
        ]
    );
    limits.set_grants(grants(Some(2)));
    assert_eq!(
        run(x.as_ref(), "e4", "append a 1\nsize a\n"),
        ["ok", "1500001"]
    );
}

#[test]
fn an_instance_whose_directory_cannot_be_made_is_not_made_and_says_why() {
    let root = tempfile::tempdir().unwrap();
    let not_a_dir = root.path().join("file");
    std::fs::write(&not_a_dir, b"").unwrap();
    let engine = WasmEngine::new().unwrap().with_scratch(&not_a_dir);
    let limits = limits(Some(1));
    let plugin = load_file(&guest("component", "echo-executor.wasm"), &engine, &limits).unwrap();
    let error = plugin.executor().err().expect("refused").to_string();
    assert!(
        error.contains("the host could not set it up: cannot make its scratch directory"),
        "{error}"
    );
}

#[test]
fn a_host_makes_scratch_directories_where_its_config_says() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(
        guest("component", "echo-executor.wasm"),
        plugins.join("echo.wasm"),
    )
    .unwrap();
    let config = root.path().join("spear.toml");
    std::fs::write(
        &config,
        "[plugins]\ndir = \"plugins\"\nwatch = false\nscratch_dir = \"scr\"\n\
         call_timeout_ms = 5000\nsetup_timeout_ms = 5000\n\
         [plugins.grants.echo]\nscratch_mb = 1\n",
    )
    .unwrap();
    let host = spear_plugin_runtime::PluginHost::start(&config).unwrap();
    let plugin = host
        .plugin(spear_plugin_api::PluginKind::Executor, "echo")
        .expect("registered");
    let mut x = plugin.executor().unwrap();
    x.configure(r#"{"mode": "scratch"}"#).unwrap();
    assert_eq!(run(x.as_ref(), "e1", "write a 5\n"), ["ok"]);
    let dirs = instance_dirs(&root.path().join("scr"));
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert_eq!(std::fs::read(dirs[0].join("a")).unwrap(), b"wwwww");
}

#[test]
fn positional_writes_sizes_symlinks_and_renames_are_charged_and_hard_links_refused() {
    let root = tempfile::tempdir().unwrap();
    let x = echo(&limits(Some(1)), root.path());
    assert_eq!(
        run(
            x.as_ref(),
            "e1",
            "pwrite p 0 1000\nsize p\npwrite p 2000000 1\nsetsize p 2000000\nsetsize p 10\n\
             size p\nsymlink p s\nlink p h\nmv p q\nsize q\n"
        ),
        [
            "ok 1000",
            "1000",
            "err insufficient-space",
            "err insufficient-space",
            "ok",
            "10",
            "ok",
            "err not-permitted",
            "ok",
            "10"
        ]
    );
    // A rename over a name frees what that name held.
    let answers = run(
        x.as_ref(),
        "e2",
        "write big 900000\nwrite other 900000\nrm other\nwrite x 10\nmv x big\n\
         write other 900000\nsize big\n",
    );
    assert_eq!(answers[0], "ok");
    assert!(refused(&answers[1]), "{answers:?}");
    assert_eq!(answers[2..], ["ok", "ok", "ok", "ok", "10"]);
    let (bytes, entries) = on_disk(&instance_dirs(root.path())[0]);
    assert!(
        bytes + entries * ENTRY <= MIB,
        "{bytes} bytes in {entries} entries"
    );
}

#[test]
fn a_tree_deeper_than_a_host_path_can_name_is_counted_and_removed_like_any_other() {
    let root = tempfile::tempdir().unwrap();
    let x = echo(&limits(Some(1)), root.path());
    // 25 levels of 200-byte names: past PATH_MAX (4,096 bytes) on the host.
    let answers = run(x.as_ref(), "e1", "deep 25\n");
    let (written, error) = answers[0].split_once(' ').unwrap();
    assert_eq!(error, "err insufficient-space", "{answers:?}");
    let written: u64 = written.parse().unwrap();
    assert!(written <= MIB - 26 * ENTRY, "{written}");
    // Making and removing something elsewhere frees nothing of it.
    let answers = run(x.as_ref(), "e2", "write top 10\nrm top\nfill more\n");
    assert_eq!(answers[..2], ["ok", "ok"]);
    assert!(
        answers[2].strip_prefix("0 ").is_some_and(refused),
        "{answers:?}"
    );
    let dir = instance_dirs(root.path())[0].clone();
    drop(x);
    wait_gone(&dir);
}

#[test]
fn open_files_and_listings_are_bounded_per_instance() {
    let root = tempfile::tempdir().unwrap();
    let x = echo(&limits(Some(1)), root.path());
    assert_eq!(
        run(
            x.as_ref(),
            "e1",
            "openmany 200\ncloseall\nopenmany 5\nlistmany 20\nunlistall\nlistmany 3\n"
        ),
        [
            "opened 128 err quota",
            "ok",
            "opened 5",
            "listed 8 err quota",
            "ok",
            "listed 3"
        ]
    );
}

#[test]
fn directories_are_bounded_in_number_so_in_depth_and_a_deep_tree_still_goes_with_its_instance() {
    let root = tempfile::tempdir().unwrap();
    let x = echo(&limits(Some(16)), root.path());
    // 300 levels asked: the 257th directory is refused (at 8 KiB a level, 16 MiB would hold
    // more), and what was made is removed with the instance, 256 levels of 200-byte names.
    assert_eq!(
        run(x.as_ref(), "e1", "deep 300\n"),
        ["err insufficient-space"]
    );
    let dir = instance_dirs(root.path())[0].clone();
    drop(x);
    wait_gone(&dir);
}

#[test]
fn names_the_count_could_misread_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let x = echo(&limits(Some(1)), root.path());
    assert_eq!(
        run(
            x.as_ref(),
            "e1",
            "mkdir D\nmkdir x\nsymlink ../D x/L\nwrite a 10\nrename a x/L/\nrename a ./x/L/.\n\
             symlink D/new dangling\nwrite dangling 5\nsize a\n"
        ),
        [
            "ok",
            "ok",
            "ok",
            "ok",
            // A trailing `/` follows the symlink in a look and not in the rename.
            "err invalid",
            "err invalid",
            "ok",
            // A file made through a dangling symlink lands in another directory.
            "err PermissionDenied",
            "10"
        ]
    );
}
