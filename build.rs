//! Compiles `proto/` with protox (pure Rust, no system protoc), generates the
//! prost messages and tonic services, and keeps the encoded descriptor set
//! for gRPC server reflection.

use std::{env, fs, io, path::PathBuf};

use prost::Message;

const PROTO_ROOT: &str = "proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = proto_files(PROTO_ROOT.as_ref())?;
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let fds = protox::compile(&files, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("agentbus_descriptor.bin"), fds.encode_to_vec())?;

    // Type names let the HTTP gateway find each message's descriptor.
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Decode errors are INVALID_ARGUMENT, not tonic-prost's INTERNAL.
        .codec_path("crate::transport::codec::AgentbusCodec")
        .compile_fds_with_config(fds, config)?;
    Ok(())
}

/// Every `.proto` file under `dir`, sorted so the build is deterministic.
fn proto_files(dir: &std::path::Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            found.extend(proto_files(&path)?);
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}
