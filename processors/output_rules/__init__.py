"""Deterministic output rules (keyword, regex, length, confidence, JSON field) evaluated over an
AI output, with the engine that runs a rule set and explains each verdict."""
