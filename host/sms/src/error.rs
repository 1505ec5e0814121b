//! SMS errors, and their one mapping to HTTP and gRPC statuses.

use axum::http::StatusCode;

/// Result alias of SMS.
pub type Result<T, E = SmsError> = std::result::Result<T, E>;

/// What went wrong, naming the field or the object.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SmsError {
    /// A request field is missing or wrong.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The field, as the client spelt it (`executable.type`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No such object.
    #[error("{what} `{id}` not found")]
    NotFound {
        /// The kind of object (`node`, `task`, `file`).
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// An upload is over the limit.
    #[error("upload too large: the limit is {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The request did not arrive in time (its body was too slow).
    #[error("request timeout: {0}")]
    Timeout(String),
    /// The storage backend failed; nothing was changed.
    #[error("storage failed: {0}")]
    Storage(String),
    /// No valid token came with the request.
    #[error("{0}")]
    Unauthenticated(String),
    /// The token's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// An invocation answered no output; `code` says why (the gRPC code the node or SMS gave:
    /// over capacity, past its deadline, the function failed, the instance lost…).
    #[error("{message}")]
    Invocation {
        /// Why, as a gRPC code.
        code: tonic::Code,
        /// What happened.
        message: String,
    },
    /// What the request asks for was removed by retention (the event log's history before a
    /// cursor).
    #[error(
        "compacted: the events after cursor {after} were removed by retention; resume from cursor {resume_from}"
    )]
    Compacted {
        /// The cursor asked to resume after.
        after: u64,
        /// The cursor to resume after instead (the last one removed).
        resume_from: u64,
    },
}

impl SmsError {
    /// An invalid-argument error.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A not-found error.
    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            what,
            id: id.into(),
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            SmsError::InvalidArgument { .. } => "invalid_argument",
            SmsError::NotFound { .. } => "not_found",
            SmsError::Conflict(_) => "conflict",
            SmsError::TooLarge { .. } => "too_large",
            SmsError::Timeout(_) => "timeout",
            SmsError::Storage(_) => "unavailable",
            SmsError::Unauthenticated(_) => "unauthenticated",
            SmsError::Forbidden(_) => "permission_denied",
            SmsError::Compacted { .. } => "compacted",
            SmsError::Invocation { code, .. } => match code {
                tonic::Code::InvalidArgument => "invalid_argument",
                tonic::Code::NotFound => "not_found",
                tonic::Code::FailedPrecondition => "failed_precondition",
                tonic::Code::ResourceExhausted => "over_capacity",
                tonic::Code::DeadlineExceeded => "deadline_exceeded",
                tonic::Code::Aborted => "function_failed",
                tonic::Code::Internal => "instance_lost",
                tonic::Code::Unavailable => "unavailable",
                _ => "internal",
            },
        }
    }

    /// An invocation's error with `code`.
    pub fn invocation(code: tonic::Code, message: impl Into<String>) -> Self {
        Self::Invocation {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn http_status(&self) -> StatusCode {
        match self {
            SmsError::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
            SmsError::NotFound { .. } => StatusCode::NOT_FOUND,
            SmsError::Conflict(_) => StatusCode::CONFLICT,
            SmsError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            SmsError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            SmsError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            SmsError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            SmsError::Forbidden(_) => StatusCode::FORBIDDEN,
            SmsError::Compacted { .. } => StatusCode::GONE,
            SmsError::Invocation { code, .. } => match code {
                tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                tonic::Code::NotFound => StatusCode::NOT_FOUND,
                tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
                tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
                tonic::Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
                tonic::Code::Aborted => StatusCode::UNPROCESSABLE_ENTITY,
                tonic::Code::Internal => StatusCode::BAD_GATEWAY,
                tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// The gRPC status.
    pub fn grpc_status(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            SmsError::InvalidArgument { .. } => tonic::Status::invalid_argument(message),
            SmsError::NotFound { .. } => tonic::Status::not_found(message),
            SmsError::Conflict(_) => tonic::Status::failed_precondition(message),
            SmsError::TooLarge { .. } => tonic::Status::resource_exhausted(message),
            SmsError::Timeout(_) => tonic::Status::deadline_exceeded(message),
            SmsError::Storage(_) => tonic::Status::unavailable(message),
            SmsError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            SmsError::Forbidden(_) => tonic::Status::permission_denied(message),
            SmsError::Compacted { .. } => tonic::Status::out_of_range(message),
            SmsError::Invocation { code, .. } => tonic::Status::new(*code, message),
        }
    }

    /// The field concerned, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            SmsError::InvalidArgument { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<SmsError> for tonic::Status {
    fn from(e: SmsError) -> Self {
        e.grpc_status()
    }
}
