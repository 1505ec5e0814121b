//! The write-ahead log beside the redb file: each write is one appended, checksummed record made
//! durable with one `fdatasync`, while redb applies it without syncing; a checkpoint (a durable
//! redb commit) empties the log. At open, the records the log holds are applied again, which is
//! safe because they are plain puts and deletes: applying a prefix of them twice ends in the
//! same state. A record cut short by a crash (or failing its checksum) ends the log: it was never
//! acknowledged, because a write returns only once its record is synced.
//!
//! The log starts with `SPWAL001` and the generation of the database it belongs to (`u64` LE):
//! each checkpoint moves the database to the next generation in its durable commit, then empties
//! the log and writes the new generation. At open, a log of the database's generation is applied;
//! one of the generation before is already in the database (a checkpoint ended before the log
//! was emptied) and is dropped; any other belongs to another database file (a backup restored,
//! the file replaced) and is refused, not applied to the wrong data.
//!
//! Record: `len: u32 LE` (never 0), `crc32(payload): u32 LE`, `payload`; the payload is a list
//! of operations, each `1, key` (put, followed by `value`) or `2, key` (delete), where a byte
//! string is `len: u32 LE` and the bytes.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use spear_plugin_api::storage::BatchOp;

/// Checkpoint once the log holds this many bytes…
pub const CHECKPOINT_BYTES: u64 = 16 << 20;
/// …or this many records.
pub const CHECKPOINT_RECORDS: u64 = 4096;

const PUT: u8 = 1;
const DELETE: u8 = 2;
const HEADER: usize = 8;
const MAGIC: &[u8; 8] = b"SPWAL001";
/// The log's own header: [`MAGIC`] and a generation.
const LOG_HEADER: usize = 16;

/// The log file.
pub struct Wal {
    file: File,
    path: PathBuf,
    len: u64,
    records: u64,
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) -> Result<(), String> {
    let n = u32::try_from(b.len()).map_err(|_| "a key or value over 4 GiB".to_owned())?;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(b);
    Ok(())
}

/// The record of `ops` (a check is not a write: it is not logged).
pub fn encode(ops: &[BatchOp]) -> Result<Vec<u8>, String> {
    let mut payload = Vec::new();
    for op in ops {
        match op {
            BatchOp::Put { key, value } => {
                payload.push(PUT);
                bytes(&mut payload, key)?;
                bytes(&mut payload, value)?;
            }
            BatchOp::Delete { key } => {
                payload.push(DELETE);
                bytes(&mut payload, key)?;
            }
            BatchOp::Check { .. } => {}
        }
    }
    let len = u32::try_from(payload.len()).map_err(|_| "a batch over 4 GiB".to_owned())?;
    let mut record = Vec::with_capacity(HEADER + payload.len());
    record.extend_from_slice(&len.to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    record.extend_from_slice(&payload);
    Ok(record)
}

/// Read a byte string at `*at`, advancing it.
fn take<'a>(payload: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let n = u32::from_le_bytes(payload.get(*at..*at + 4)?.try_into().ok()?) as usize;
    let b = payload.get(*at + 4..(*at + 4).checked_add(n)?)?;
    *at += 4 + n;
    Some(b)
}

fn decode(payload: &[u8]) -> Option<Vec<BatchOp>> {
    let mut ops = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let tag = payload[at];
        at += 1;
        let key = take(payload, &mut at)?.to_vec();
        ops.push(match tag {
            PUT => BatchOp::Put {
                key,
                value: take(payload, &mut at)?.to_vec(),
            },
            DELETE => BatchOp::Delete { key },
            _ => return None,
        });
    }
    Some(ops)
}

/// The whole records at the start of `data`, each as its operations; the rest is a cut or
/// damaged tail.
fn records(data: &[u8]) -> Vec<Vec<BatchOp>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(header) = data.get(at..at + HEADER) {
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let Some(payload) = data.get(at + HEADER..(at + HEADER).saturating_add(len)) else {
            break;
        };
        if len == 0 {
            break;
        }
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(ops) = decode(payload) else { break };
        out.push(ops);
        at += HEADER + len;
    }
    out
}

/// The start of a log written for `generation`.
pub fn header(generation: u64) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&generation.to_le_bytes());
    h
}

/// What a log file holds, read at open.
pub enum Held {
    /// No generation (empty, or cut inside its header: nothing in it was acknowledged).
    Nothing,
    /// The log of generation `generation`, with its whole records.
    Records {
        /// The generation it was written for.
        generation: u64,
        /// Its records, each as its operations.
        records: Vec<Vec<BatchOp>>,
    },
}

impl Wal {
    /// Open (or create) the log at `path`; returns it with what it holds, to be applied (or
    /// dropped) and then [`reset`](Self::reset) to the database's generation.
    pub fn open(path: &Path) -> std::io::Result<(Self, Held)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // The file's name must survive a crash as well as what is written to it: its directory
        // is synced at every open (a crash after an earlier open created it may have left the
        // name unsynced).
        file.sync_all()?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        let held = match data.get(..LOG_HEADER) {
            Some(h) if &h[..8] == MAGIC => Held::Records {
                generation: u64::from_le_bytes(h[8..].try_into().expect("8 bytes")),
                records: records(&data[LOG_HEADER..]),
            },
            _ => Held::Nothing,
        };
        let wal = Self {
            file,
            path: path.to_owned(),
            len: data.len() as u64,
            records: 0,
        };
        Ok((wal, held))
    }

    /// Append `record` and make it durable. On failure the log is cut back to where it was (a
    /// half-written record must not hide the ones after it); `Err(Ok(e))` when that worked,
    /// `Err(Err(e))` when the log may now be damaged.
    pub fn append(&mut self, record: &[u8]) -> Result<(), Result<std::io::Error, std::io::Error>> {
        let written = self
            .file
            .write_all_at(record, self.len)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += record.len() as u64;
                self.records += 1;
                Ok(())
            }
            Err(e) => match self.file.set_len(self.len) {
                Ok(()) => Err(Ok(e)),
                Err(_) => Err(Err(e)),
            },
        }
    }

    /// Take the last `record` appended back out of the log (redb did not take it, so the
    /// write failed as a whole).
    pub fn take_back(&mut self, record: &[u8]) -> std::io::Result<()> {
        let len = self.len - record.len() as u64;
        self.file.set_len(len)?;
        self.file.sync_data()?;
        self.len = len;
        self.records -= 1;
        Ok(())
    }

    /// Whether the log has grown enough to checkpoint.
    pub fn due(&self) -> bool {
        self.len >= CHECKPOINT_BYTES || self.records >= CHECKPOINT_RECORDS
    }

    /// Whether the log holds records since its last reset.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Empty the log and start it for `generation` (once redb holds everything it had,
    /// durably, in that generation). On failure the log is in no known state: the caller must
    /// stop writing.
    pub fn reset(&mut self, generation: u64) -> std::io::Result<()> {
        self.records = 0;
        self.file.set_len(0)?;
        self.len = 0;
        self.file.write_all_at(&header(generation), 0)?;
        self.file.sync_data()?;
        self.len = LOG_HEADER as u64;
        Ok(())
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> BatchOp {
        BatchOp::Put {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
        }
    }

    #[test]
    fn records_read_back_up_to_a_cut_or_damaged_one() {
        let a = encode(&[put("a", "1"), BatchOp::Delete { key: b"b".to_vec() }]).unwrap();
        let b = encode(&[put("c", "")]).unwrap();
        let mut data = [a.clone(), b.clone()].concat();
        assert_eq!(records(&data).len(), 2);
        // Cut short anywhere in the second record: only the first.
        for cut in a.len()..data.len() {
            assert_eq!(records(&data[..cut]).len(), 1, "cut at {cut}");
        }
        // A flipped byte in the second record's payload: only the first.
        let last = data.len() - 1;
        data[last] ^= 0xff;
        assert_eq!(records(&data).len(), 1);
        // Garbage, or a length pointing past the end: nothing, and no panic.
        assert!(records(&[0xff; 64]).is_empty());
        assert!(records(b"\x05\0\0\0\0\0\0\0\x01").is_empty());
    }
}
