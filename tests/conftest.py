"""Fixtures shared by every test folder: the real PostgreSQL and S3 servers (tests/cluster.py)."""

from tests.cluster import postgres_server, s3_server, shared_store

__all__ = ["postgres_server", "s3_server", "shared_store"]
