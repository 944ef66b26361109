"""Generated protobuf and gRPC code for package xinrong.v1 (do not edit)."""
