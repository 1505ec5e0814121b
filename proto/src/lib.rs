//! The SPEAR gRPC contract, generated from `proto/spear/v1/*.proto`. Nothing else defines wire types:
//! hosts convert these to their domain types once, at the boundary.

/// Package `spear.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic, reason = "generated code")]
pub mod v1 {
    tonic::include_proto!("spear.v1");
}

/// The encoded `FileDescriptorSet` of every service, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/spear_descriptor.bin"));

pub mod codec;
