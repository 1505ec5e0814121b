//! What can go wrong talking to SMS, each variant naming its subject and, where there is one, the
//! fix; and the exit code each maps to (2: usage or transport, 1: a refused or failed operation).

/// Errors of the SMS commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// SMS could not be reached at all.
    #[error(
        "cannot reach SMS at {url}: {reason}; is it running? start one with ./run-dev.sh, \
         or point --sms / SPEAR_SMS at it"
    )]
    Unreachable {
        /// The base URL tried.
        url: String,
        /// Why (`connection refused`, `no answer within 120 s`, …).
        reason: String,
    },
    /// An id named on the command line does not exist.
    #[error("no {what} `{id}`; list them with `{list}`")]
    NotFound {
        /// `execution`, `task`, `node`, `file`.
        what: &'static str,
        /// The id given.
        id: String,
        /// The command that lists them.
        list: &'static str,
    },
    /// SMS answered with its JSON error body.
    #[error("{}", api_message(.code, .message, .field.as_deref()))]
    Api {
        /// HTTP status.
        status: u16,
        /// `invalid_argument`, `not_found`, `conflict`, `too_large`, `unavailable`.
        code: String,
        /// SMS's message.
        message: String,
        /// The request field at fault, when one is.
        field: Option<String>,
    },
    /// The events asked for were removed by SMS's retention (`410`, code `compacted`).
    #[error("{message}")]
    Compacted {
        /// SMS's message.
        message: String,
        /// The cursor to resume after instead.
        resume_from: u64,
    },
    /// SMS (or whatever listens there) answered something this client does not understand.
    #[error(
        "unexpected answer from {url}: {reason}; is --sms / SPEAR_SMS pointing at SMS's HTTP address?"
    )]
    Protocol {
        /// The URL requested.
        url: String,
        /// What was wrong with the answer.
        reason: String,
    },
    /// A bad command line that clap could not catch.
    #[error("{0}")]
    Usage(String),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// This crate's result.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::NotFound { .. } | CliError::Api { .. } | CliError::Compacted { .. } => 1,
            CliError::Unreachable { .. }
            | CliError::Protocol { .. }
            | CliError::Usage(_)
            | CliError::Io { .. } => 2,
        }
    }

    /// A file error.
    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        CliError::Io {
            path: path.to_string(),
            source,
        }
    }
}

/// `SMS refused `field`: reason (hint)`, or `SMS refused the request (code): message`.
fn api_message(code: &str, message: &str, field: Option<&str>) -> String {
    match field {
        Some(field) => {
            // SMS's message repeats the field first ("port: 70000 is not a port").
            let reason = message
                .strip_prefix(&format!("{field}: "))
                .unwrap_or(message);
            match flag_hint(field) {
                Some(hint) => format!("SMS refused `{field}`: {reason} ({hint})"),
                None => format!("SMS refused `{field}`: {reason}"),
            }
        }
        None => format!("SMS refused the request ({code}): {message}"),
    }
}

/// The command-line flag that sets a request field.
fn flag_hint(field: &str) -> Option<&'static str> {
    Some(match field {
        "name" => "give the task's NAME",
        "executable" => "give --type with --name, --uri or --file, or a TASK_ID",
        "executable.type" => "set it with --type wasm|process|container|<plugin type>",
        "executable.uri" => "set it with --uri, --file or --name",
        "executable.name" => "set it with --name",
        "task_id" => "list tasks with `spear task list`",
        "priority" => "set it with --priority low|normal|high|urgent",
        "timeout_ms" => "set it with --timeout-ms",
        "max_attempts" => "set it with --max-attempts (1 to 10)",
        "node_uuid" => "list nodes with `spear node list`",
        "status" => "see `spear --help` for the values",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_name_the_field_once_and_the_flag_that_sets_it() {
        let e = CliError::Api {
            status: 400,
            code: "invalid_argument".into(),
            message: "executable.type: `X` is not an executable type".into(),
            field: Some("executable.type".into()),
        };
        assert_eq!(
            e.to_string(),
            "SMS refused `executable.type`: `X` is not an executable type \
             (set it with --type wasm|process|container|<plugin type>)"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn errors_without_a_field_show_the_code() {
        let e = CliError::Api {
            status: 409,
            code: "conflict".into(),
            message: "execution e1 already succeeded".into(),
            field: None,
        };
        assert_eq!(
            e.to_string(),
            "SMS refused the request (conflict): execution e1 already succeeded"
        );
    }
}
