"""Destinations for processed rows: the store writer, and (later) OTLP forward and notifiers.

Only `collector/registry.py` imports this package; exporters receive `Rows` from the pipeline.
"""
