//! The SPEAR gRPC contract, generated from `proto/spear/v1/*.proto`. Nothing else defines wire types:
//! hosts convert these to their domain types once, at the boundary.

/// Package `spear.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic, reason = "generated code")]
pub mod v1 {
    tonic::include_proto!("spear.v1");
}

/// Package `sms`: SPEAR-Next's node and task services, with its field numbers, served beside
/// `spear.v1` so that its clients work unchanged.
#[allow(missing_docs, clippy::all, clippy::pedantic, reason = "generated code")]
pub mod sms {
    tonic::include_proto!("sms");
}

/// Package `spearlet`: SPEAR-Next's `ObjectService`, with its field numbers, served by the
/// Spearlet so that its clients work unchanged.
#[allow(missing_docs, clippy::all, clippy::pedantic, reason = "generated code")]
pub mod spearlet {
    tonic::include_proto!("spearlet");
}

/// The encoded `FileDescriptorSet` of every service SMS serves, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/spear_descriptor.bin"));

/// The encoded `FileDescriptorSet` of the services the Spearlet serves (SPEAR's `spearlet`).
pub const SPEARLET_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/spearlet_descriptor.bin"));

pub mod codec;
