//! Generated protobuf types and gRPC services. Lint exceptions for generated
//! code live here and nowhere else.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod agentbus {
    pub mod v1 {
        tonic::include_proto!("agentbus.v1");
    }
}

pub use agentbus::v1::*;

/// Encoded `FileDescriptorSet` of every proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/agentbus_descriptor.bin"));
