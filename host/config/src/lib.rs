//! Configuration layering for the SPEAR hosts (SMS and the Spearlet), in one place.
//!
//! A host describes its sources with [`Layers`] — built-in defaults (TOML), environment variables
//! mapped to keys, one config file, command-line flags mapped to keys — and loads its typed
//! configuration from them, highest first: flags › file › environment › defaults. What the load
//! cannot accept is reported all at once as [`ConfigError`], a list of typed [`Problem`]s, each
//! naming its key and the source that set it (`/etc/sms.toml: log.format: …`,
//! `SMS_GRPC_ADDR: grpc.addr: …`, `--heartbeat-timeout: …`). Unknown keys are problems too: a key
//! we accept either acts or is refused with its name.
//!
//! After the load, the host checks its values and reports what is wrong through [`Problems`],
//! which fills in each key's source, and resolves relative paths with [`Loaded::resolve_path`]
//! (relative to the config file when the file or the defaults set them).

mod compat;
mod error;
mod layers;

pub use compat::Compat;
pub use error::{ConfigError, Invalid, Origin, Problem, Problems};
pub use layers::{Layers, Loaded, Origins};
