"""Redaction of secrets and personal data in spans and native payloads: rules, detectors and the
processor that masks, drops or hashes what they find."""
