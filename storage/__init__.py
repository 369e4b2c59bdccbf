"""All I/O: the Parquet feature store, the DuckDB results store and MLflow tracking. Populated by the feature-store
and pipeline issues; the core library (``facezoo``) never imports from here."""
