"""Tests of collector/api: the endpoint wrapper, body reading, schemas, the OpenAPI document."""
