"""Normalisation of spans: the attribute dialects of agent frameworks read into our columns
(kind, model, tokens, tool, content), one span at a time."""
