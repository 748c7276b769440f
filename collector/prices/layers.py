"""The stack of prices every LLM call is priced with, loaded from files into one pure lookup.

From the top: the operator's book (`prices.path` or the data dir's, with a fetched price list
merged in; `feed.py`), the shipped corrections (`config/prices.json`: models genai-prices lacks
or prices wrongly, each with its source), then genai-prices (`genai.py`: the bundled data, or a
data file fetched from `prices.url`). Config overrides go on top in the cost processor.
docs/prices.md states the order.
"""

from __future__ import annotations

from collector.prices.book import PriceBook, load_price_book
from collector.prices.genai import GenaiLayer
from collector.prices.pricing import BookLayer, Layered, PriceLookup

OPERATOR = "operator"
SHIPPED = "agentledger"


def stack(
    operator: PriceBook | None,
    shipped: PriceBook | None = None,
    genai: GenaiLayer | None = None,
) -> PriceLookup:
    """The layered lookup over `operator` (None or empty: no operator layer); `genai` is a
    fetched genai-prices data file's layer (None: the package's bundled data)."""
    layers: list[PriceLookup] = []
    if operator is not None and operator.models:
        layers.append(BookLayer(operator, OPERATOR))
    layers.append(BookLayer(shipped or load_price_book(), SHIPPED))
    layers.append(genai or GenaiLayer())
    return Layered(layers)
