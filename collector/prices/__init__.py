"""Model and tool prices: genai-prices under dated books and overrides, the feeds that keep prices
and reference FX rates current, importers from public price lists, re-pricing of stored calls."""
