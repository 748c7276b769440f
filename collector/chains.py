"""The ingest processors by name, and the chains each decode worker builds from them.

`registry.py` types the `processors:` config against `PROCESSORS` and pickles a `build_chains`
call for the decode pool (`pipeline.py`); a worker imports this module and `processors/` only,
not the config, store and API the registry needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from collector.model import Processor, Signal
from collector.prices.feed import BookSource
from collector.prices.pricing import PriceLookup
from processors.cost import CostConfig, CostProcessor
from processors.normalise.span import NormaliseConfig, NormaliseProcessor
from processors.redact.processor import RedactConfig, RedactProcessor


@dataclass(frozen=True)
class Resources:
    """Reference data components may need, loaded once by the registry."""

    pricing: PriceLookup
    """LLM prices: the operator's book over the shipped corrections over genai-prices."""


ProcessorBuilder = Callable[[Any, Resources], Processor]

PROCESSORS: dict[str, tuple[type, ProcessorBuilder]] = {
    "normalise": (NormaliseConfig, lambda cfg, _res: NormaliseProcessor(cfg)),
    "cost": (CostConfig, lambda cfg, res: CostProcessor(cfg, res.pricing)),
    "redact": (RedactConfig, lambda cfg, _res: RedactProcessor(cfg)),
}


def build_chains(
    spec: dict[Signal, tuple[tuple[str, Any], ...]], prices: BookSource
) -> dict[Signal, list[Processor]]:
    """Each signal's processors, `(kind, config)` in order, built with the current prices."""
    resources = Resources(pricing=prices.pricing())
    return {
        signal: [PROCESSORS[kind][1](cfg, resources) for kind, cfg in chain]
        for signal, chain in spec.items()
    }
