//! `wasi:filesystem/types` as a plugin instance gets it: wasmtime-wasi's, except that every call
//! that can make the scratch directory grow is charged to the instance's [`Quota`] first, and
//! every call is refused (`access`) once the grant is taken away. An instance without a scratch
//! directory has no preopened directory and so no descriptor to call anything on.
//!
//! Growing calls: `write`, `set-size`, the streams of `write-via-stream` and `append-via-stream`
//! ([`ScratchWriter`]), `open-at` making a file, `create-directory-at` and `symlink-at`; `link-at`
//! is refused. Shrinking calls (`unlink-file-at`, `remove-directory-at`, `rename-at` over a name,
//! `open-at` with `truncate`, a smaller `set-size`) give back what they freed. `open-at` past
//! [`super::MAX_OPEN`] open files and directories answers `quota`.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::FilePerms;
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;
use wasmtime_wasi::p2::bindings::sync::filesystem::types as sync_fs;
use wasmtime_wasi::p2::bindings::sync::io::streams;
use wasmtime_wasi::p2::{DynOutputStream, FsError, FsResult};

use super::writer::{At, ScratchWriter};
use super::{MAX_PATH, New, Quota};

use sync_fs::HostDescriptor as Inner;

/// Store data whose instance may have a scratch directory.
pub(crate) trait ScratchView: WasiFilesystemView {
    /// The quota of its scratch directory, if it has one.
    fn scratch(&self) -> Option<Arc<Quota>>;
}

/// Link the bounded `wasi:filesystem/types` over wasmtime-wasi's (call after it).
pub(crate) fn add_to_linker<T: ScratchView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let linked = sync_fs::add_to_linker::<T, ScratchFsData>(linker, project::<T>);
    linker.allow_shadowing(false);
    linked
}

fn project<T: ScratchView>(s: &mut T) -> ScratchFs<'_> {
    let quota = s.scratch();
    ScratchFs {
        fs: s.filesystem(),
        quota,
    }
}

struct ScratchFsData;

impl HasData for ScratchFsData {
    type Data<'a> = ScratchFs<'a>;
}

/// wasmtime-wasi's filesystem view with the instance's quota.
pub(crate) struct ScratchFs<'a> {
    fs: WasiFilesystemCtxView<'a>,
    quota: Option<Arc<Quota>>,
}

impl ScratchFs<'_> {
    /// Refuse a call once the grant is taken away.
    fn granted(&self) -> FsResult<()> {
        self.quota.as_ref().map_or(Ok(()), |q| q.granted())
    }

    /// Refuse a call once the grant is taken away, or naming a path past [`MAX_PATH`].
    fn granted_path(&self, path: &str) -> FsResult<()> {
        self.granted()?;
        if self.quota.is_some() && path.len() > MAX_PATH {
            return Err(ErrorCode::NameTooLong.into());
        }
        Ok(())
    }

    /// [`granted_path`](Self::granted_path) for a call that makes, replaces or removes the
    /// name `path`: it must end in a plain name (not `/`, `.` or `..`), so that the look before
    /// the call and the call resolve it alike (a trailing `/` follows a final symlink in one and
    /// not the other).
    fn granted_name(&self, path: &str) -> FsResult<()> {
        self.granted_path(path)?;
        let plain = matches!(
            std::path::Path::new(path).components().next_back(),
            Some(std::path::Component::Normal(_))
        ) && !path.ends_with('/')
            && !path.ends_with("/.");
        if self.quota.is_some() && !plain {
            return Err(ErrorCode::Invalid.into());
        }
        Ok(())
    }

    /// The open directory behind `fd`.
    fn dir(&mut self, fd: &Resource<Descriptor>) -> FsResult<Arc<cap_std::fs::Dir>> {
        match self.fs.table.get(fd)? {
            Descriptor::Dir(d) => Ok(d.dir.clone()),
            Descriptor::File(_) => Err(ErrorCode::NotDirectory.into()),
        }
    }

    /// Run `op`, which removes the name `path` in directory `fd` (unless it is `same_as`),
    /// giving back what it was counted for.
    fn removing(
        &mut self,
        fd: &Resource<Descriptor>,
        path: &str,
        same_as: Option<(u64, u64)>,
        op: impl FnOnce(&mut Self) -> FsResult<()>,
    ) -> FsResult<()> {
        let Some(quota) = self.quota.clone() else {
            return op(self);
        };
        self.granted_name(path)?;
        let dir = self.dir(fd)?;
        quota.remove(&dir, path, same_as, || op(self))
    }

    /// The open file behind `fd`.
    fn file(&mut self, fd: &Resource<Descriptor>) -> FsResult<(Arc<cap_std::fs::File>, FilePerms)> {
        match self.fs.table.get(fd)? {
            Descriptor::File(f) => Ok((f.file.clone(), f.perms)),
            Descriptor::Dir(_) => Err(ErrorCode::BadDescriptor.into()),
        }
    }

    /// A stream writing to the file behind `fd` at `at`, bounded by the quota.
    fn writer(&mut self, fd: Resource<Descriptor>, at: At) -> FsResult<Resource<DynOutputStream>> {
        let Some(quota) = self.quota.clone() else {
            return Err(ErrorCode::BadDescriptor.into());
        };
        quota.granted()?;
        let (file, perms) = self.file(&fd)?;
        if !perms.contains(FilePerms::WRITE) {
            return Err(ErrorCode::BadDescriptor.into());
        }
        let stream: DynOutputStream = Box::new(ScratchWriter::new(file, at, quota));
        Ok(self.fs.table.push(stream)?)
    }
}

/// A second handle on a borrowed resource, for a call that needs it after another.
fn again<T: 'static>(r: &Resource<T>) -> Resource<T> {
    Resource::new_borrow(r.rep())
}

impl sync_fs::Host for ScratchFs<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<sync_fs::ErrorCode> {
        sync_fs::Host::convert_error_code(&mut self.fs, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<streams::Error>,
    ) -> wasmtime::Result<Option<sync_fs::ErrorCode>> {
        sync_fs::Host::filesystem_error_code(&mut self.fs, err)
    }
}

impl sync_fs::HostDescriptor for ScratchFs<'_> {
    fn advise(
        &mut self,
        fd: Resource<Descriptor>,
        offset: u64,
        len: u64,
        advice: sync_fs::Advice,
    ) -> FsResult<()> {
        self.granted()?;
        Inner::advise(&mut self.fs, fd, offset, len, advice)
    }

    fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.granted()?;
        Inner::sync_data(&mut self.fs, fd)
    }

    fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<sync_fs::DescriptorFlags> {
        self.granted()?;
        Inner::get_flags(&mut self.fs, fd)
    }

    fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<sync_fs::DescriptorType> {
        self.granted()?;
        Inner::get_type(&mut self.fs, fd)
    }

    fn set_size(&mut self, fd: Resource<Descriptor>, size: u64) -> FsResult<()> {
        let Some(quota) = self.quota.clone() else {
            return Inner::set_size(&mut self.fs, fd, size);
        };
        quota.granted()?;
        let (file, _) = self.file(&fd)?;
        quota.grow(&file, |_| size, || Inner::set_size(&mut self.fs, fd, size))?
    }

    fn set_times(
        &mut self,
        fd: Resource<Descriptor>,
        atim: sync_fs::NewTimestamp,
        mtim: sync_fs::NewTimestamp,
    ) -> FsResult<()> {
        self.granted()?;
        Inner::set_times(&mut self.fs, fd, atim, mtim)
    }

    fn read(
        &mut self,
        fd: Resource<Descriptor>,
        len: u64,
        offset: u64,
    ) -> FsResult<(Vec<u8>, bool)> {
        self.granted()?;
        Inner::read(&mut self.fs, fd, len, offset)
    }

    fn write(&mut self, fd: Resource<Descriptor>, buf: Vec<u8>, offset: u64) -> FsResult<u64> {
        let Some(quota) = self.quota.clone() else {
            return Inner::write(&mut self.fs, fd, buf, offset);
        };
        quota.granted()?;
        let (file, _) = self.file(&fd)?;
        let end = offset.saturating_add(buf.len() as u64);
        quota.grow(
            &file,
            |_| end,
            || Inner::write(&mut self.fs, fd, buf, offset),
        )?
    }

    fn read_directory(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<sync_fs::DirectoryEntryStream>> {
        let Some(quota) = self.quota.clone() else {
            return Inner::read_directory(&mut self.fs, fd);
        };
        quota.granted()?;
        quota.listing(|| Inner::read_directory(&mut self.fs, fd))
    }

    fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.granted()?;
        Inner::sync(&mut self.fs, fd)
    }

    fn create_directory_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        let Some(quota) = self.quota.clone() else {
            return Inner::create_directory_at(&mut self.fs, fd, path);
        };
        self.granted_name(&path)?;
        let dir = self.dir(&fd)?;
        quota.entry(&dir, &path.clone(), New::Dir, || {
            Inner::create_directory_at(&mut self.fs, fd, path)
        })
    }

    fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<sync_fs::DescriptorStat> {
        self.granted()?;
        Inner::stat(&mut self.fs, fd)
    }

    fn stat_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: sync_fs::PathFlags,
        path: String,
    ) -> FsResult<sync_fs::DescriptorStat> {
        self.granted_path(&path)?;
        Inner::stat_at(&mut self.fs, fd, path_flags, path)
    }

    fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: sync_fs::PathFlags,
        path: String,
        atim: sync_fs::NewTimestamp,
        mtim: sync_fs::NewTimestamp,
    ) -> FsResult<()> {
        self.granted_path(&path)?;
        Inner::set_times_at(&mut self.fs, fd, path_flags, path, atim, mtim)
    }

    fn link_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path_flags: sync_fs::PathFlags,
        old_path: String,
        new_descriptor: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        if self.quota.is_some() {
            // A file has one name in a scratch directory, so that removing it frees it.
            return Err(ErrorCode::NotPermitted.into());
        }
        Inner::link_at(
            &mut self.fs,
            fd,
            old_path_flags,
            old_path,
            new_descriptor,
            new_path,
        )
    }

    fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: sync_fs::PathFlags,
        path: String,
        oflags: sync_fs::OpenFlags,
        flags: sync_fs::DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        let Some(quota) = self.quota.clone() else {
            return Inner::open_at(&mut self.fs, fd, path_flags, path, oflags, flags);
        };
        self.granted_path(&path)?;
        quota.may_open()?;
        let dir = self.dir(&fd)?;
        let follow = path_flags.contains(sync_fs::PathFlags::SYMLINK_FOLLOW);
        // Resolved as the open resolves it, so that a file made through a symlink is charged.
        let there = if follow {
            dir.metadata(&path)
        } else {
            dir.symlink_metadata(&path)
        };
        let creates = oflags.contains(sync_fs::OpenFlags::CREATE) && there.is_err();
        if creates {
            self.granted_name(&path)?;
            // A file made through a dangling symlink would land in another directory than the
            // one holding the name, whose growth is the one counted.
            if dir.symlink_metadata(&path).is_ok() {
                return Err(ErrorCode::NotPermitted.into());
            }
        }
        // The bytes a truncating open of a file that is there gives back.
        let truncated = match &there {
            Ok(meta) if oflags.contains(sync_fs::OpenFlags::TRUNCATE) && meta.is_file() => {
                Some(meta.len())
            }
            _ => None,
        };
        let open = |s: &mut Self, path: String| {
            Inner::open_at(&mut s.fs, fd, path_flags, path, oflags, flags)
        };
        let opened = if creates {
            quota.entry(&dir, &path.clone(), New::File, || open(self, path))?
        } else if let Some(held) = truncated {
            quota.truncate(held, || open(self, path))?
        } else {
            open(self, path)?
        };
        match self.fs.table.get(&again(&opened)) {
            Ok(Descriptor::File(f)) => quota.opened_file(&f.file),
            Ok(Descriptor::Dir(d)) => quota.opened_dir(&d.dir),
            Err(_) => {}
        }
        Ok(opened)
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        Inner::drop(&mut self.fs, fd)
    }

    fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        self.granted_path(&path)?;
        Inner::readlink_at(&mut self.fs, fd, path)
    }

    fn remove_directory_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        self.removing(&again(&fd), &path.clone(), None, |s| {
            Inner::remove_directory_at(&mut s.fs, fd, path)
        })
    }

    fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        // What is moved: a rename of a name that cannot be looked at is refused (the look and
        // the call must agree on what they name, or the count would give back what stays).
        let moved = match &self.quota {
            Some(_) => {
                self.granted_name(&old_path)?;
                let meta = self.dir(&fd)?.symlink_metadata(&old_path)?;
                Some(super::file_id(&meta))
            }
            None => None,
        };
        self.removing(&again(&new_fd), &new_path.clone(), moved, |s| {
            Inner::rename_at(&mut s.fs, fd, old_path, new_fd, new_path)
        })
    }

    fn symlink_at(
        &mut self,
        fd: Resource<Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        let Some(quota) = self.quota.clone() else {
            return Inner::symlink_at(&mut self.fs, fd, src_path, dest_path);
        };
        self.granted_name(&dest_path)?;
        self.granted_path(&src_path)?;
        let dir = self.dir(&fd)?;
        let target = src_path.len() as u64;
        quota.entry(&dir, &dest_path.clone(), New::Symlink(target), || {
            Inner::symlink_at(&mut self.fs, fd, src_path, dest_path)
        })
    }

    fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        self.removing(&again(&fd), &path.clone(), None, |s| {
            Inner::unlink_file_at(&mut s.fs, fd, path)
        })
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: u64,
    ) -> FsResult<Resource<streams::InputStream>> {
        self.granted()?;
        Inner::read_via_stream(&mut self.fs, fd, offset)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: u64,
    ) -> FsResult<Resource<streams::OutputStream>> {
        self.writer(fd, At::Offset(offset))
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<streams::OutputStream>> {
        self.writer(fd, At::End)
    }

    fn is_same_object(
        &mut self,
        a: Resource<Descriptor>,
        b: Resource<Descriptor>,
    ) -> wasmtime::Result<bool> {
        Inner::is_same_object(&mut self.fs, a, b)
    }

    fn metadata_hash(&mut self, fd: Resource<Descriptor>) -> FsResult<sync_fs::MetadataHashValue> {
        self.granted()?;
        Inner::metadata_hash(&mut self.fs, fd)
    }

    fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: sync_fs::PathFlags,
        path: String,
    ) -> FsResult<sync_fs::MetadataHashValue> {
        self.granted_path(&path)?;
        Inner::metadata_hash_at(&mut self.fs, fd, path_flags, path)
    }
}

impl sync_fs::HostDirectoryEntryStream for ScratchFs<'_> {
    fn read_directory_entry(
        &mut self,
        stream: Resource<sync_fs::DirectoryEntryStream>,
    ) -> FsResult<Option<sync_fs::DirectoryEntry>> {
        self.granted()?;
        sync_fs::HostDirectoryEntryStream::read_directory_entry(&mut self.fs, stream)
    }

    fn drop(&mut self, stream: Resource<sync_fs::DirectoryEntryStream>) -> wasmtime::Result<()> {
        sync_fs::HostDirectoryEntryStream::drop(&mut self.fs, stream)?;
        if let Some(q) = &self.quota {
            q.listing_closed();
        }
        Ok(())
    }
}
