//! Generates the gRPC code from `spear/v1/*.proto` (and SPEAR-Next's `sms/*.proto` and
//! `spearlet/object.proto`, served for compatibility) with protox (a pure-Rust protobuf compiler), so
//! that building needs no `protoc` on the machine.

fn main() {
    println!("cargo:rerun-if-changed=spear");
    println!("cargo:rerun-if-changed=sms");
    println!("cargo:rerun-if-changed=spearlet");
    // What SMS serves (its reflection lists exactly these), and what the Spearlet serves.
    generate(
        &[
            "spear/v1/common.proto",
            "spear/v1/nodes.proto",
            "spear/v1/tasks.proto",
            "spear/v1/executions.proto",
            "spear/v1/files.proto",
            "spear/v1/plugins.proto",
            "spear/v1/events.proto",
            "sms/node.proto",
            "sms/task.proto",
        ],
        "spear_descriptor.bin",
        false,
    );
    // Object values are `bytes::Bytes`: the Spearlet hands out what it holds without copying.
    generate(
        &["spearlet/object.proto", "spearlet/function.proto"],
        "spearlet_descriptor.bin",
        true,
    );
}

/// Compile `files` into gRPC code (`bytes` fields as `bytes::Bytes` when `shared_bytes`), and
/// their descriptor set into `descriptor` in `OUT_DIR`.
fn generate(files: &[&str], descriptor: &str, shared_bytes: bool) {
    let fds = protox::compile(files, ["."]).expect("the .proto files compile");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(out.join(descriptor), prost::Message::encode_to_vec(&fds)).unwrap();
    let mut config = tonic_prost_build::configure();
    if shared_bytes {
        config = config.bytes(".");
    }
    config
        .build_server(true)
        .build_client(true)
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(fds)
        .expect("generate gRPC code");
}
