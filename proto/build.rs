//! Generates the gRPC code from `spear/v1/*.proto` with protox (a pure-Rust protobuf compiler), so
//! that building needs no `protoc` on the machine.

fn main() {
    let files = [
        "spear/v1/common.proto",
        "spear/v1/nodes.proto",
        "spear/v1/tasks.proto",
        "spear/v1/executions.proto",
        "spear/v1/files.proto",
        "spear/v1/plugins.proto",
        "spear/v1/events.proto",
    ];
    println!("cargo:rerun-if-changed=spear");
    let fds = protox::compile(files, ["."]).expect("the .proto files compile");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(
        out.join("spear_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )
    .unwrap();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(fds)
        .expect("generate gRPC code");
}
