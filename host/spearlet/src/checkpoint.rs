//! Checkpoints on the node. A process execution that declares `checkpoint` runs with
//! `SPEAR_CHECKPOINT_DIR` naming a private directory for its state, filled with its last
//! checkpoint when it runs again. When SMS preempts it, it gets SIGTERM and the grace SMS gives
//! to write its state there; the directory is then zipped and goes to SMS with the report of its
//! stop (SMS keeps it in its blob store and sends it with the next attempt, on any node).
//!
//! Both ways are bounded: at most [`MAX_FILES`] entries, [`MAX_DEPTH`] levels, twice
//! [`MAX_BYTES`] of files and [`MAX_BYTES`] zipped (a larger state is not sent: the next attempt
//! starts from the checkpoint before), and at most [`MAX_UNPACKED`] written when one is restored
//! (one that cannot be restored is dropped: the run starts afresh). Links are not packed; an entry that would land
//! outside the directory is refused, and every entry is restored as a plain file or directory.

use std::io::{Read, Write};
use std::path::Path;

use crate::agent::Agent;
use crate::store::PendingReport;
use crate::workdir::WorkDir;

/// The variable naming the checkpoint directory.
pub const ENV: &str = "SPEAR_CHECKPOINT_DIR";
/// The largest checkpoint sent (zipped), as SMS takes it.
pub const MAX_BYTES: usize = 16 * 1024 * 1024;
/// The most files and directories in one.
pub const MAX_FILES: usize = 4096;
/// The most bytes a restored checkpoint may unpack to.
pub const MAX_UNPACKED: u64 = 256 * 1024 * 1024;
/// The deepest a checkpoint's directories may nest.
pub const MAX_DEPTH: usize = 64;

/// Make execution `id`'s checkpoint directory and restore `data` (a checkpoint; empty: none)
/// into it.
pub async fn prepare(agent: &Agent, id: &str, data: &[u8]) -> Result<WorkDir, String> {
    let dir = agent
        .workdirs
        .create(&format!("{id}-checkpoint"))
        .map_err(|e| e.to_string())?;
    if data.is_empty() {
        return Ok(dir);
    }
    let (path, data) = (dir.path().to_owned(), data.to_vec());
    let restored = tokio::task::spawn_blocking(move || unpack(&data, &path))
        .await
        .map_err(|e| e.to_string())?;
    match restored {
        Ok(()) => Ok(dir),
        Err(e) => {
            // What it was sent cannot be restored (the node that packed it is not trusted): the
            // run starts afresh, in a new empty directory, rather than fail every attempt.
            tracing::warn!(execution = %id, "its checkpoint cannot be restored, it starts afresh: {e}");
            drop(dir);
            agent
                .workdirs
                .create(&format!("{id}-checkpoint"))
                .map_err(|e| e.to_string())
        }
    }
}

/// Turn `report` into the report of a preempted run, with the state it saved in `dir`.
pub async fn preempted(report: &mut PendingReport, dir: Option<&WorkDir>) {
    report.preempted = true;
    report.success = false;
    report.error = if report.error.is_empty() {
        "preempted".into()
    } else {
        format!("preempted ({})", report.error)
    };
    let Some(dir) = dir else { return };
    let path = dir.path().to_owned();
    match tokio::task::spawn_blocking(move || pack(&path)).await {
        Ok(Ok(zipped)) => report.checkpoint = zipped,
        Ok(Err(e)) => tracing::warn!(
            execution = %report.execution_id,
            "its checkpoint is not sent (the next attempt starts from the one before): {e}"
        ),
        Err(e) => tracing::warn!(execution = %report.execution_id, "packing its checkpoint: {e}"),
    }
}

/// `dir` zipped (empty when it holds nothing).
pub fn pack(dir: &Path) -> Result<Vec<u8>, String> {
    let entries = walk(dir)?;
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut raw = 0u64;
    for (name, path) in entries {
        let Some(path) = path else {
            zip.add_directory(name, options)
                .map_err(|e| e.to_string())?;
            continue;
        };
        // Files past twice the zipped cap are not packed (deflate seldom does better than
        // halving a program's state; it is not tried).
        let left = (2 * MAX_BYTES as u64).saturating_sub(raw);
        let Some(bytes) = read_plain(&path, left)? else {
            continue;
        };
        raw += bytes.len() as u64;
        if raw > 2 * MAX_BYTES as u64 {
            return Err(format!("its state is over {MAX_BYTES} bytes"));
        }
        zip.start_file(name, options).map_err(|e| e.to_string())?;
        zip.write_all(&bytes).map_err(|e| e.to_string())?;
    }
    let zipped = zip.finish().map_err(|e| e.to_string())?.into_inner();
    if zipped.len() > MAX_BYTES {
        return Err(format!(
            "its state zips to {} bytes, over {MAX_BYTES}",
            zipped.len()
        ));
    }
    Ok(zipped)
}

/// The bytes of the regular file at `path`, at most `left + 1` of them (the program may still be
/// running and change it: a link or another kind put there since the walk is skipped, `None`,
/// never followed or waited on).
fn read_plain(path: &Path, left: u64) -> Result<Option<Vec<u8>>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let Ok(file) = file else { return Ok(None) };
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Ok(None);
    }
    if meta.len() > left {
        return Err(format!("its state is over {MAX_BYTES} bytes"));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(left.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(bytes))
}

/// Every directory and regular file under `root` (relative to it, with `/`), at most
/// [`MAX_DEPTH`] levels down; links and other kinds are left out.
fn walk(root: &Path) -> Result<Vec<(String, Option<std::path::PathBuf>)>, String> {
    let mut out = Vec::new();
    // Directories still to read, with their depth (no recursion: a program may nest deep).
    let mut todo = vec![(root.to_owned(), 0usize)];
    while let Some((at, depth)) = todo.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&at)
            .map_err(|e| format!("{}: {e}", at.display()))?
            .filter_map(|e| e.ok())
            .collect();
        names.sort_by_key(|e| e.file_name());
        for entry in names {
            if out.len() >= MAX_FILES {
                return Err(format!("its state has over {MAX_FILES} files"));
            }
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let Some(rel) = rel.to_str() else {
                return Err(format!("{}: not a UTF-8 name", path.display()));
            };
            if kind.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    return Err(format!("its state nests over {MAX_DEPTH} directories deep"));
                }
                out.push((format!("{rel}/"), None));
                todo.push((path, depth + 1));
            } else if kind.is_file() {
                out.push((rel.to_owned(), Some(path)));
            }
        }
    }
    Ok(out)
}

/// Restore the checkpoint `data` into `dir`.
pub fn unpack(data: &[u8], dir: &Path) -> Result<(), String> {
    let bad = |e: zip::result::ZipError| format!("not a checkpoint: {e}");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(data)).map_err(bad)?;
    if archive.len() > MAX_FILES {
        return Err(format!("over {MAX_FILES} entries"));
    }
    let mut left = MAX_UNPACKED;
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).map_err(bad)?;
        let Some(rel) = file.enclosed_name() else {
            return Err(format!("entry `{}` leaves the directory", file.name()));
        };
        let target = dir.join(rel);
        if file.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut out = std::fs::File::create(&target).map_err(|e| e.to_string())?;
        let copied = std::io::copy(&mut (&mut file).take(left + 1), &mut out)
            .map_err(|e| format!("entry `{}`: {e}", file.name()))?;
        if copied > left {
            return Err(format!("it unpacks to over {MAX_UNPACKED} bytes"));
        }
        left -= copied;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_comes_back_as_it_was_packed() {
        let from = tempfile::tempdir().unwrap();
        std::fs::write(from.path().join("counter"), b"41").unwrap();
        std::fs::create_dir(from.path().join("deep")).unwrap();
        std::fs::write(from.path().join("deep/state.bin"), vec![7u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", from.path().join("link")).unwrap();
        let zipped = pack(from.path()).unwrap();
        assert!(zipped.len() < 10_000, "deflated: {}", zipped.len());
        let to = tempfile::tempdir().unwrap();
        unpack(&zipped, to.path()).unwrap();
        assert_eq!(std::fs::read(to.path().join("counter")).unwrap(), b"41");
        assert_eq!(
            std::fs::read(to.path().join("deep/state.bin")).unwrap(),
            vec![7u8; 100_000]
        );
        assert!(!to.path().join("link").exists(), "links are not packed");
        let empty = tempfile::tempdir().unwrap();
        assert!(pack(empty.path()).unwrap().is_empty(), "nothing saved");
    }

    #[test]
    fn an_entry_outside_the_directory_or_garbage_is_refused() {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        zip.start_file("../escape", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"x").unwrap();
        let evil = zip.finish().unwrap().into_inner();
        let to = tempfile::tempdir().unwrap();
        let err = unpack(&evil, &to.path().join("inner")).unwrap_err();
        assert!(err.contains("leaves the directory"), "{err}");
        assert!(!to.path().join("escape").exists());
        assert!(unpack(b"not a zip", to.path()).is_err());
    }

    #[test]
    fn a_state_nested_too_deep_is_not_packed() {
        let from = tempfile::tempdir().unwrap();
        let mut deep = from.path().to_owned();
        for _ in 0..=MAX_DEPTH {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        let err = pack(from.path()).unwrap_err();
        assert!(err.contains("deep"), "{err}");
    }

    #[test]
    fn a_state_past_the_cap_is_not_packed() {
        let from = tempfile::tempdir().unwrap();
        for i in 0..=MAX_FILES {
            std::fs::write(from.path().join(format!("f{i}")), b"").unwrap();
        }
        let err = pack(from.path()).unwrap_err();
        assert!(err.contains("files"), "{err}");
    }
}
