"""Many collector nodes on one shared store: each node's id, the leases in PostgreSQL under which
exactly one node runs each background job, and the fence that refuses a stale holder's commits.
"""
