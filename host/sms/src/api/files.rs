//! The file routes, answering with SPEAR's fields beside SMS's (see docs/spear-compat.md): an upload
//! takes its name from `?name=` or SPEAR's `x-file-name` header and answers `success` and `id`
//! besides the file's metadata; lists and metadata carry SPEAR's `id`, `len` and times in seconds;
//! metadata says `found`; a delete answers 200 `{"success": true, …}`; `presign-upload` says where
//! and how to upload.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::body::{ApiBytes, ApiPath, ApiQuery};
use crate::api::nodes::Done;
use crate::api::rest::{AppState, ErrorBody, created};
use crate::error::SmsError;
use crate::model::FileMeta;

/// `?name=` of an upload.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// The file's name (default: the `x-file-name` header, else `upload`): 1 to 255 bytes, no
    /// `/`, `\` or control character, not `.` or `..`.
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = r"^(?!\.{1,2}$)[^/\\\x00-\x1f\x7f-\x9f]+$"
    )]
    pub name: Option<String>,
}

/// A file as the API shows it: its metadata, and SPEAR's `id`, `len` and `modified_at`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FileView {
    /// The metadata.
    #[serde(flatten)]
    pub meta: FileMeta,
    /// SPEAR's: the id (`file_id`).
    pub id: String,
    /// SPEAR's: the size in bytes (`size`).
    pub len: u64,
    /// SPEAR's: the upload time, seconds since the Unix epoch.
    pub modified_at: i64,
}

impl From<FileMeta> for FileView {
    fn from(meta: FileMeta) -> Self {
        Self {
            id: meta.file_id.clone(),
            len: meta.size,
            modified_at: meta.uploaded_at_ms.div_euclid(1000),
            meta,
        }
    }
}

/// A list of files.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileList {
    /// The files.
    pub files: Vec<FileView>,
}

/// The answer to an upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct Uploaded {
    /// Always `true`.
    pub success: bool,
    /// The file.
    #[serde(flatten)]
    pub file: FileView,
}

/// The answer about a stored file's metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileFound {
    /// Always `true` (an unknown file is 404 with `found: false`).
    pub found: bool,
    /// SPEAR's: how the bytes are served.
    pub content_type: String,
    /// SPEAR's: the upload time, seconds since the Unix epoch.
    pub created_at: i64,
    /// The file.
    #[serde(flatten)]
    pub file: FileView,
}

/// `POST /api/v1/files/presign-upload`'s body (SPEAR's; every field optional, none needed here).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresignRequest {
    /// Accepted, not used: SMS keeps one file store.
    #[serde(default)]
    pub bucket: Option<String>,
    /// Accepted, not used: a file's id is its sha256.
    #[serde(default)]
    pub key: Option<String>,
    /// Accepted, not used: files are served as `application/octet-stream`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Refused when over the upload limit.
    #[serde(default)]
    pub max_size_bytes: Option<u64>,
}

/// Where and how to upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct Presign {
    /// The upload route (its answer carries the file's `id` and `uri`).
    pub upload_url: String,
    /// `POST`.
    pub method: String,
    /// Seconds the answer holds (the route needs the caller's own token, not a signed URL).
    pub expires_in: u64,
    /// The largest upload, in bytes.
    pub max_upload_bytes: u64,
}

/// SPEAR's `x-file-name`, when given and valid UTF-8.
fn header_name(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-file-name")
        .and_then(|v| v.to_str().ok())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

#[utoipa::path(post, path = "/api/v1/files", params(UploadParams,
        ("x-file-name" = Option<String>, Header, description = "SPEAR's way to name the file (`?name=` wins)")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = Uploaded), (status = 413, body = ErrorBody)), tag = "files")]
pub(crate) async fn upload_file(
    State(sms): State<AppState>,
    ApiQuery(p): ApiQuery<UploadParams>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Response, SmsError> {
    let name = p
        .name
        .or_else(|| header_name(&headers))
        .unwrap_or_else(|| "upload".into());
    let meta = sms.upload_file(&name, body.to_vec()).await?;
    Ok(created(Uploaded {
        success: true,
        file: meta.into(),
    }))
}

#[utoipa::path(get, path = "/api/v1/files", responses((status = 200, body = FileList)), tag = "files")]
pub(crate) async fn list_files(State(sms): State<AppState>) -> Result<Json<FileList>, SmsError> {
    Ok(Json(FileList {
        files: sms.files().await?.into_iter().map(FileView::from).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/files/{file_id}",
    params(("file_id" = String, Path, description = "the file's sha256", pattern = r"^[0-9a-f]{64}$")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = ErrorBody)), tag = "files")]
pub(crate) async fn download_file(
    State(sms): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, SmsError> {
    let (meta, bytes) = sms.download_file(&id).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                crate::files::content_disposition(&meta.name),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/files/{file_id}/meta",
    params(("file_id" = String, Path, description = "the file's sha256", pattern = r"^[0-9a-f]{64}$")),
    responses((status = 200, body = FileFound), (status = 404, body = ErrorBody)), tag = "files")]
pub(crate) async fn file_meta(
    State(sms): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Response {
    match sms.file_meta(&id).await {
        Ok(meta) => Json(found(meta)).into_response(),
        Err(e) => not_found(e),
    }
}

/// A file's metadata as `GET …/meta` answers it.
pub fn found(meta: FileMeta) -> FileFound {
    FileFound {
        found: true,
        content_type: "application/octet-stream".into(),
        created_at: meta.uploaded_at_ms.div_euclid(1000),
        file: meta.into(),
    }
}

/// An error answer; a 404 also says SPEAR's `found: false`.
pub fn not_found(e: SmsError) -> Response {
    let status = e.http_status();
    if status != StatusCode::NOT_FOUND {
        return e.into_response();
    }
    let mut body = serde_json::to_value(ErrorBody::of(&e)).unwrap_or_default();
    body["found"] = false.into();
    (status, Json(body)).into_response()
}

#[utoipa::path(delete, path = "/api/v1/files/{file_id}",
    params(("file_id" = String, Path, description = "the file's sha256", pattern = r"^[0-9a-f]{64}$")),
    responses((status = 200, body = Done), (status = 404, body = ErrorBody)), tag = "files")]
pub(crate) async fn delete_file(
    State(sms): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Done>, SmsError> {
    sms.delete_file(&id).await?;
    Ok(Json(Done {
        success: true,
        message: "File deleted".into(),
    }))
}

#[utoipa::path(post, path = "/api/v1/files/presign-upload", request_body = Option<PresignRequest>,
    responses((status = 200, body = Presign), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)), tag = "files")]
pub(crate) async fn presign_upload(
    State(sms): State<AppState>,
    ApiBytes(body): ApiBytes,
) -> Result<Json<Presign>, SmsError> {
    let req: PresignRequest = crate::api::body::optional_json(&body, "a presign request")?;
    if req.max_size_bytes.is_some_and(|n| n > i64::MAX as u64) {
        return Err(SmsError::invalid(
            "max_size_bytes",
            format!("at most {}", i64::MAX),
        ));
    }
    if let Some(n) = req.max_size_bytes
        && n > sms.max_upload_bytes
    {
        return Err(SmsError::TooLarge {
            limit: sms.max_upload_bytes,
        });
    }
    Ok(Json(Presign {
        upload_url: "/api/v1/files".into(),
        method: "POST".into(),
        expires_in: 900,
        max_upload_bytes: sms.max_upload_bytes,
    }))
}
