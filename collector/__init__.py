"""agentledger's running service: receivers, pipeline, store, read API and CLI.

Start reading at `collector/model.py`, the vocabulary every other module speaks.
"""

__version__ = "0.1.0"
