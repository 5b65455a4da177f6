"""The control plane: desired state (store), the gRPC API over it, and signed snapshots
published to Redis for the gateways (docs/architecture.md, "Snapshot")."""
