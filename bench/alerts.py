"""Alerts benchmark: what window rules cost the store's writer thread and the reader side.

Fills a temporary store with finished runs, declares window rules, then times the run
follower's idle step, the aggregation of every due rule (reader cursor, as after each step in
the service) and the step that applies the results (writer thread).

    python bench/alerts.py --runs 10000 --rules 20
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.alerts import store as st  # noqa: E402
from collector.alerts.config import AlertsConfig  # noqa: E402
from collector.alerts.consumer import AlertsConsumer  # noqa: E402
from collector.outbound.outbox import Outbox  # noqa: E402
from collector.runs.follow import RunFollower  # noqa: E402
from processors.alerts.rules import AlertRuleSpec, Condition  # noqa: E402
from tests.stores import service_store  # noqa: E402

CONDITIONS: tuple[tuple[Condition, float], ...] = (
    ("workflow_error_rate", 0.5),
    ("workflow_p95_duration_ms", 1e9),
    ("workflow_total_cost", 1e9),
    ("workflow_run_count_below", 1),
    ("org_total_cost", 1e9),
)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, service_store(Path(folder)) as store:
        now_ns = time.time_ns()
        end_s = now_ns / 1e9
        store.call(
            lambda cur: cur.execute(
                """INSERT INTO runs (org, run_id, trace_id, workflow_name, status, started_at,
                       ended_at, duration_ms, cost_usd, total_tokens)
                   SELECT 'acme', 'r' || i, 't' || i, 'wf' || (i % 20),
                          CASE WHEN i % 7 = 0 THEN 'error' ELSE 'success' END,
                          to_timestamp(? - i * 0.3), to_timestamp(? - i * 0.3 + 2), 2000, 0.01, 100
                   FROM range(?) t(i)""",
                [end_s, end_s, args.runs],
            )
        )
        config = AlertsConfig(evaluation_interval_s=1, max_rules_per_tick=args.rules)
        outbox = Outbox(store)  # the rules have no channels: nothing is queued
        outbox.create_tables()
        consumer = AlertsConsumer(store, config, outbox=outbox)
        follower = RunFollower(store, [consumer])
        follower.create_tables()
        for i in range(args.rules):
            condition, threshold = CONDITIONS[i % len(CONDITIONS)]
            spec = AlertRuleSpec(
                name=f"r{i}",
                condition=condition,
                threshold=threshold,
                window_s=3600,
            )
            now = datetime.now(UTC)
            record = st.RuleRecord(
                "acme", st.new_id("ar"), spec.name, dataclasses.asdict(spec), "api", now, now
            )
            store.call(functools.partial(st.put_rule, record=record))

        def timed(fn: Callable[[], object]) -> float:
            started = time.perf_counter()
            fn()
            return time.perf_counter() - started

        idle = timed(lambda: follower.step(now_ns))
        evaluated = timed(lambda: consumer.evaluate_due(now_ns))
        applying = timed(lambda: follower.step(now_ns))
        print(
            f"{args.runs} runs, {args.rules} window rules: idle step {ms(idle)}; "
            f"aggregating all (reader) {ms(evaluated)}; applying step (writer) {ms(applying)}"
        )


if __name__ == "__main__":
    main()
