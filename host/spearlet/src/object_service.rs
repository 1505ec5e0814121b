//! SPEAR's `spearlet.ObjectService` on the Spearlet's gRPC listener: named byte objects with
//! metadata, a reference count and a pin, kept in the Spearlet's memory as SPEAR's are (a restart
//! forgets them), with SPEAR's answers and messages.
//!
//! Unlike SPEAR's, everything is bounded: a key is 1 to 1,024 bytes, metadata at most 64 entries
//! of 1,024 bytes, a value at most `spearlet.storage.max_object_size`, all values together at most
//! `spearlet.objects.max_total_mb` and the objects at most `spearlet.objects.max_count` (a put past
//! a bound answers `success: false` saying which). A list page holds at most 1,000 objects and,
//! past its first object, at most [`PAGE_BYTES`] (keys, values and metadata); the cursor it
//! answers is `k:<last key>`, and SPEAR's page index is accepted too (one past the end gives an
//! empty page; SPEAR's server panics). `max_total_mb` counts keys, values and metadata, and a
//! stored value is a copy (never the request buffer it came in). Each call takes one lock for
//! the read-modify-write it does, so concurrent calls on a key never lose an update.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

use bytes::Bytes;
use spear_proto::spearlet as pb;
use spear_proto::spearlet::object_service_server::ObjectService;
use tonic::{Request, Response, Status};

/// Longest key.
pub const MAX_KEY: usize = 1024;
/// Most metadata entries of an object.
pub const MAX_METADATA: usize = 64;
/// Longest metadata key or value.
pub const MAX_METADATA_TEXT: usize = 1024;
/// Most objects in one list page.
pub const MAX_PAGE: usize = 1000;
/// Most bytes (keys, values, metadata) in one list page past its first object.
pub const PAGE_BYTES: u64 = 4 * 1024 * 1024;

/// What the store may hold.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Largest value.
    pub max_object_size: u64,
    /// Most bytes of values at once.
    pub max_total_bytes: u64,
    /// Most objects at once.
    pub max_count: u64,
}

#[derive(Debug, Clone)]
struct Stored {
    value: Bytes,
    created_at: i64,
    updated_at: i64,
    ref_count: i32,
    pinned: bool,
    metadata: HashMap<String, String>,
}

#[derive(Debug, Default)]
struct Inner {
    objects: BTreeMap<String, Stored>,
    total_bytes: u64,
}

/// The objects, and the service over them.
#[derive(Debug)]
pub struct Objects {
    bounds: Bounds,
    inner: Mutex<Inner>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn meta(key: &str, o: &Stored) -> pb::ObjectMeta {
    pb::ObjectMeta {
        key: key.to_owned(),
        size: o.value.len() as i64,
        created_at: o.created_at,
        updated_at: o.updated_at,
        ref_count: o.ref_count,
        pinned: o.pinned,
        metadata: o.metadata.clone(),
    }
}

fn object(key: &str, o: &Stored) -> pb::Object {
    pb::Object {
        key: key.to_owned(),
        // SPEAR's server always sends the value (`include_value` is not acted on there either:
        // its clients rely on that).
        value: o.value.clone(),
        size: o.value.len() as i64,
        created_at: o.created_at,
        updated_at: o.updated_at,
        ref_count: o.ref_count,
        pinned: o.pinned,
        metadata: o.metadata.clone(),
    }
}

/// A key's problem, if any.
fn bad_key(key: &str) -> Option<String> {
    if key.is_empty() {
        Some("Object key cannot be empty".into())
    } else if key.len() > MAX_KEY {
        Some(format!("Object key is longer than {MAX_KEY} bytes"))
    } else {
        None
    }
}

fn not_found() -> String {
    "Object not found".into()
}

/// What an object costs the store: its key, value and metadata bytes (all count against
/// `spearlet.objects.max_total_mb` and a list page's budget).
fn footprint(key: &str, value: usize, metadata: &HashMap<String, String>) -> u64 {
    (key.len()
        + value
        + metadata
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()) as u64
}

impl Objects {
    /// An empty store within `bounds`.
    pub fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `PutObject`: `Ok(meta)` or `Err((message, meta of the object kept))`.
    fn put(
        &self,
        req: pb::PutObjectRequest,
    ) -> Result<pb::ObjectMeta, (String, Option<Box<pb::ObjectMeta>>)> {
        if let Some(e) = bad_key(&req.key) {
            return Err((e, None));
        }
        let size = req.value.len() as u64;
        if size > self.bounds.max_object_size {
            return Err((
                format!(
                    "Object size {size} exceeds maximum size {}",
                    self.bounds.max_object_size
                ),
                None,
            ));
        }
        if req.metadata.len() > MAX_METADATA
            || req
                .metadata
                .iter()
                .any(|(k, v)| k.len() > MAX_METADATA_TEXT || v.len() > MAX_METADATA_TEXT)
        {
            return Err((
                format!(
                    "Object metadata exceeds {MAX_METADATA} entries of {MAX_METADATA_TEXT} bytes"
                ),
                None,
            ));
        }
        let mut inner = self.lock();
        let old = inner.objects.get(&req.key);
        if let Some(o) = old
            && !req.overwrite
        {
            return Err((
                "Object already exists and overwrite is false".into(),
                Some(Box::new(meta(&req.key, o))),
            ));
        }
        let old_size = old.map_or(0, |o| footprint(&req.key, o.value.len(), &o.metadata));
        let new_size = footprint(&req.key, req.value.len(), &req.metadata);
        if old.is_none() && inner.objects.len() as u64 >= self.bounds.max_count {
            return Err((
                format!(
                    "The Spearlet holds {} objects, its limit (spearlet.objects.max_count)",
                    self.bounds.max_count
                ),
                None,
            ));
        }
        let total = inner.total_bytes.saturating_sub(old_size) + new_size;
        if total > self.bounds.max_total_bytes {
            return Err((
                format!(
                    "Storing {new_size} bytes would pass the Spearlet's {} bytes of objects (spearlet.objects.max_total_mb)",
                    self.bounds.max_total_bytes
                ),
                None,
            ));
        }
        let t = now();
        // A copy: the request's value shares its whole decode buffer, which may be far larger.
        let value = Bytes::copy_from_slice(&req.value);
        // An overwrite keeps the reference count, the pin and the creation time (as SPEAR's).
        let stored = match old {
            Some(o) => Stored {
                value,
                updated_at: t,
                metadata: req.metadata,
                ..o.clone()
            },
            None => Stored {
                value,
                created_at: t,
                updated_at: t,
                ref_count: 1,
                pinned: false,
                metadata: req.metadata,
            },
        };
        let answer = meta(&req.key, &stored);
        inner.total_bytes = total;
        inner.objects.insert(req.key, stored);
        Ok(answer)
    }

    fn remove(inner: &mut Inner, key: &str) {
        if let Some(o) = inner.objects.remove(key) {
            let size = footprint(key, o.value.len(), &o.metadata);
            debug_assert!(inner.total_bytes >= size, "the store's byte count drifted");
            inner.total_bytes = inner.total_bytes.saturating_sub(size);
        }
    }

    fn list(&self, req: &pb::ListObjectsRequest) -> pb::ListObjectsResponse {
        let limit = match usize::try_from(req.limit) {
            Ok(0) | Err(_) => MAX_PAGE,
            Ok(n) => n.min(MAX_PAGE),
        };
        let inner = self.lock();
        // Our cursor, `k:<the last key sent>`, resumes right after that key; SPEAR's, a number, is
        // the index of the page's first object (walked to); anything else starts at the start.
        let (from, skip) = match req.start_after.strip_prefix("k:") {
            Some(key) => (Bound::Excluded(key.to_owned()), 0),
            None => (
                Bound::Included(req.prefix.clone()),
                req.start_after.parse().unwrap_or(0),
            ),
        };
        let matching = inner
            .objects
            .range((from, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&req.prefix))
            .skip(skip);
        let mut objects = Vec::new();
        let mut bytes = 0u64;
        let mut has_more = false;
        for (k, o) in matching {
            let size = footprint(k, o.value.len(), &o.metadata);
            if objects.len() == limit || (!objects.is_empty() && bytes + size > PAGE_BYTES) {
                has_more = true;
                break;
            }
            bytes += size;
            objects.push(object(k, o));
        }
        let next_start_after = match objects.last() {
            Some(last) if has_more => format!("k:{}", last.key),
            _ => String::new(),
        };
        pb::ListObjectsResponse {
            objects,
            has_more,
            next_start_after,
        }
    }
}

#[tonic::async_trait]
impl ObjectService for Objects {
    async fn put_object(
        &self,
        request: Request<pb::PutObjectRequest>,
    ) -> Result<Response<pb::PutObjectResponse>, Status> {
        Ok(Response::new(match self.put(request.into_inner()) {
            Ok(m) => pb::PutObjectResponse {
                success: true,
                message: "Object stored successfully".into(),
                object_meta: Some(m),
            },
            Err((message, kept)) => pb::PutObjectResponse {
                success: false,
                message,
                object_meta: kept.map(|m| *m),
            },
        }))
    }

    async fn get_object(
        &self,
        request: Request<pb::GetObjectRequest>,
    ) -> Result<Response<pb::GetObjectResponse>, Status> {
        let key = request.into_inner().key;
        let inner = self.lock();
        Ok(Response::new(match inner.objects.get(&key) {
            Some(o) => pb::GetObjectResponse {
                found: true,
                object: Some(object(&key, o)),
                message: "Object retrieved successfully".into(),
            },
            None => pb::GetObjectResponse {
                found: false,
                object: None,
                message: not_found(),
            },
        }))
    }

    async fn list_objects(
        &self,
        request: Request<pb::ListObjectsRequest>,
    ) -> Result<Response<pb::ListObjectsResponse>, Status> {
        Ok(Response::new(self.list(request.get_ref())))
    }

    async fn add_object_ref(
        &self,
        request: Request<pb::AddObjectRefRequest>,
    ) -> Result<Response<pb::AddObjectRefResponse>, Status> {
        let req = request.into_inner();
        let mut inner = self.lock();
        Ok(Response::new(match inner.objects.get_mut(&req.key) {
            Some(o) => {
                o.ref_count = o.ref_count.saturating_add(req.count.max(1));
                pb::AddObjectRefResponse {
                    success: true,
                    message: "Reference count added successfully".into(),
                    new_ref_count: o.ref_count,
                }
            }
            None => pb::AddObjectRefResponse {
                success: false,
                message: not_found(),
                new_ref_count: 0,
            },
        }))
    }

    async fn remove_object_ref(
        &self,
        request: Request<pb::RemoveObjectRefRequest>,
    ) -> Result<Response<pb::RemoveObjectRefResponse>, Status> {
        let req = request.into_inner();
        let mut inner = self.lock();
        let Some(o) = inner.objects.get_mut(&req.key) else {
            return Ok(Response::new(pb::RemoveObjectRefResponse {
                success: false,
                message: not_found(),
                new_ref_count: 0,
                deleted: false,
            }));
        };
        o.ref_count = o.ref_count.saturating_sub(req.count.max(1)).max(0);
        let (count, pinned) = (o.ref_count, o.pinned);
        // The last reference gone, an unpinned object goes with it.
        let deleted = count == 0 && !pinned;
        if deleted {
            Self::remove(&mut inner, &req.key);
        }
        Ok(Response::new(pb::RemoveObjectRefResponse {
            success: true,
            message: if deleted {
                "Object deleted due to zero references".into()
            } else {
                "Reference count removed successfully".into()
            },
            new_ref_count: count,
            deleted,
        }))
    }

    async fn pin_object(
        &self,
        request: Request<pb::PinObjectRequest>,
    ) -> Result<Response<pb::PinObjectResponse>, Status> {
        let key = request.into_inner().key;
        let mut inner = self.lock();
        Ok(Response::new(match inner.objects.get_mut(&key) {
            Some(o) => {
                o.pinned = true;
                pb::PinObjectResponse {
                    success: true,
                    message: "Object pinned successfully".into(),
                }
            }
            None => pb::PinObjectResponse {
                success: false,
                message: not_found(),
            },
        }))
    }

    async fn unpin_object(
        &self,
        request: Request<pb::UnpinObjectRequest>,
    ) -> Result<Response<pb::UnpinObjectResponse>, Status> {
        let key = request.into_inner().key;
        let mut inner = self.lock();
        Ok(Response::new(match inner.objects.get_mut(&key) {
            Some(o) if !o.pinned => pb::UnpinObjectResponse {
                success: false,
                message: "Object is not pinned".into(),
            },
            Some(o) => {
                o.pinned = false;
                o.updated_at = now();
                pb::UnpinObjectResponse {
                    success: true,
                    message: "Object unpinned successfully".into(),
                }
            }
            None => pb::UnpinObjectResponse {
                success: false,
                message: not_found(),
            },
        }))
    }

    async fn delete_object(
        &self,
        request: Request<pb::DeleteObjectRequest>,
    ) -> Result<Response<pb::DeleteObjectResponse>, Status> {
        let req = request.into_inner();
        let mut inner = self.lock();
        let answer = |success: bool, message: &str, deleted: bool| {
            Ok(Response::new(pb::DeleteObjectResponse {
                success,
                message: message.into(),
                deleted,
            }))
        };
        match inner.objects.get(&req.key) {
            None => answer(false, "Object not found", false),
            Some(o) if o.pinned && !req.force => answer(
                false,
                "Cannot delete pinned object without force flag",
                false,
            ),
            Some(_) => {
                Self::remove(&mut inner, &req.key);
                answer(true, "Object deleted successfully", true)
            }
        }
    }
}
