"""Receivers: OTLP over gRPC and HTTP (and later the native JSON APIs).

Each is thin: it authenticates, bounds and decompresses the payload, and hands an
`IngestRequest` to the pipeline's `consume`; errors map to protocol codes in `outcome.py`.
"""
