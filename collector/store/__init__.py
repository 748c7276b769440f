"""The store: DuckLake over a catalog and a data path, the group-commit writer, readers, schema,
dedup and watermarks. Every other package reads and writes through it."""
