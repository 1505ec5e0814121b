//! The output stream of `write-via-stream` and `append-via-stream` on a scratch file: each write
//! charged to the instance's quota before it is made (wasmtime-wasi's own file stream writes in
//! the background, after the call that asked for it has returned).

use std::sync::Arc;

use bytes::Bytes;
use cap_std::fs::FileExt;
use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

use super::Quota;
use crate::load::wasi::WRITE_PERMIT;

/// Where a [`ScratchWriter`] writes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum At {
    /// At this offset, moving on with each write.
    Offset(u64),
    /// At the end of the file, as it is at each write.
    End,
}

/// A file's output stream, bounded by its instance's quota. Writes are made at once (at most
/// [`WRITE_PERMIT`] bytes each, to a local file).
pub(crate) struct ScratchWriter {
    file: Arc<cap_std::fs::File>,
    at: At,
    quota: Arc<Quota>,
    /// The error that ended the stream, reported once; then closed.
    failed: Option<StreamError>,
    closed: bool,
}

impl ScratchWriter {
    pub(crate) fn new(file: Arc<cap_std::fs::File>, at: At, quota: Arc<Quota>) -> Self {
        Self {
            file,
            at,
            quota,
            failed: None,
            closed: false,
        }
    }

    fn state(&mut self) -> StreamResult<()> {
        if let Some(e) = self.failed.take() {
            self.closed = true;
            return Err(e);
        }
        if self.closed {
            return Err(StreamError::Closed);
        }
        Ok(())
    }
}

/// The quota's refusal as a stream's last-operation error (the guest may read it back with
/// `filesystem-error-code`).
fn failed(code: ErrorCode) -> StreamError {
    let errno = match code {
        ErrorCode::InsufficientSpace => libc::ENOSPC,
        ErrorCode::Access => libc::EACCES,
        // (`grow` refuses with these two; any other is a failed `fstat` of the file.)
        _ => libc::EIO,
    };
    StreamError::LastOperationFailed(std::io::Error::from_raw_os_error(errno).into())
}

impl OutputStream for ScratchWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.state()?;
        if bytes.len() > WRITE_PERMIT {
            return Err(StreamError::trap("write larger than check-write permitted"));
        }
        let len = bytes.len() as u64;
        let at = self.at;
        let file = self.file.clone();
        let written = self.quota.granted().and_then(|()| {
            self.quota.grow(
                &file,
                |size| match at {
                    At::Offset(o) => o.saturating_add(len),
                    At::End => size.saturating_add(len),
                },
                || -> std::io::Result<()> {
                    let offset = match at {
                        At::Offset(o) => o,
                        At::End => file.metadata()?.len(),
                    };
                    file.write_all_at(&bytes, offset)
                },
            )
        });
        // The quota's refusal as the code it carries; the write's own error as it is.
        let written = match written {
            Ok(done) => done.map_err(|e| StreamError::LastOperationFailed(e.into())),
            Err(refused) => Err(refused.downcast().map_or_else(StreamError::Trap, failed)),
        };
        match written {
            Ok(()) => {
                if let At::Offset(o) = &mut self.at {
                    *o = o.saturating_add(len);
                }
                Ok(())
            }
            Err(e) => {
                self.failed = Some(e);
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.state()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.state()?;
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for ScratchWriter {
    async fn ready(&mut self) {}
}
