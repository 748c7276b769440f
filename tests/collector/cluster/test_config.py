"""The `cluster:` section and what a shared store asks of the rest of the config."""

from __future__ import annotations

from collector.cluster.config import ClusterConfig, cluster_issues
from collector.store.config import StorageConfig


def test_a_shared_catalog_needs_a_configured_sealing_key() -> None:
    shared = StorageConfig(catalog="postgres:host=db dbname=al")
    assert [i.path for i in cluster_issues(shared, None)] == ["secrets.key"]
    assert cluster_issues(shared, "k") == []
    assert cluster_issues(StorageConfig(), None) == []  # one node: its own key file is fine


def test_defaults_and_bounds() -> None:
    assert ClusterConfig().lease_s == 10
    assert ClusterConfig(node_id="").validate() != []
