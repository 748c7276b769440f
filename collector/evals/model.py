"""The vocabulary of output evaluation: a log's statuses and the decisions a reviewer can take.

Shared by the evals modules; the rules themselves are `processors/output_rules/` (the engine the
evaluator runs) and the values stored in `eval_logs`.
"""

from __future__ import annotations

STATUSES = ("pending", "pass", "flagged", "error")
DECISIONS = ("approved", "rejected")
