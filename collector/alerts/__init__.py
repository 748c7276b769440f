"""Alerts: rules on runs, workflows, orgs and tools, fed by finished runs; events in the store,
notifications through the durable outbox; the admin API of rules and events."""
