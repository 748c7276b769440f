"""Data governance: retention per org and kind, compaction, the disk cap, export, and the
maintenance loop that runs them on a schedule."""
