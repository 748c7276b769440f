"""OTLP forwarding: committed spans re-encoded and sent to another OTLP endpoint over gRPC or
HTTP, behind a durable on-disk queue."""
