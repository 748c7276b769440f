"""The `roi:` config section: which traced workflows become ROI events, and with what baseline
(`RoiConfig`); read by `runs.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.configparse import ConfigIssue
from collector.roi.tasktypes import NAME_RE


@dataclass(frozen=True, kw_only=True)
class RoiConfig:
    """`workflows`: a run's workflow name (its agent name, else its run span's name, else its
    service.name) → the task type its runs perform, in every org; `orgs`: org → more such pairs
    for that org alone (they win over `workflows`)."""

    workflows: dict[str, str] = field(default_factory=dict)
    orgs: dict[str, dict[str, str]] = field(default_factory=dict)

    def validate(self) -> list[ConfigIssue]:
        issues = []
        tables = [("workflows", self.workflows)]
        tables += [(f"orgs.{org}", table) for org, table in self.orgs.items()]
        for where, table in tables:
            for workflow, task_type in table.items():
                if not workflow.strip():
                    issues.append(ConfigIssue(where, "a workflow name must not be empty"))
                elif not NAME_RE.fullmatch(task_type):
                    message = "a task type is lowercase letters, digits, _ . - (at most 100)"
                    issues.append(ConfigIssue(f"{where}.{workflow}", message))
        return issues

    def task_type(self, org: str, workflow: str | None) -> str | None:
        if workflow is None:
            return None
        own = self.orgs.get(org)
        if own is not None and workflow in own:
            return own[workflow]
        return self.workflows.get(workflow)

    @property
    def enabled(self) -> bool:
        return bool(self.workflows) or any(self.orgs.values())
