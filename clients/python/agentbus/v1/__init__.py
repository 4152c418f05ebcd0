"""Generated protobuf and gRPC modules for agentbus.v1 (see generate.sh)."""
