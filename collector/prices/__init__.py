"""Model prices: the price book, the feed that refreshes it, importers from public price lists,
and re-pricing of stored calls."""
