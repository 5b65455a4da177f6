"""The gRPC API: protos and generated stubs in v1/, servicers, interceptors, conversions."""
