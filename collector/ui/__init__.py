"""The built-in web UI: server-rendered pages under /ui/ over the same query layer and write
paths as the JSON APIs (`docs/ui.md`); mounted on the API listener by `collector/service.py`.
"""
