"""accesspoint.controlplane.v1: the .proto sources and their generated modules
(`python -m controlplane.api.generate` rewrites the *_pb2*.py files; never edit them by hand)."""
