"""The lake contract shared by the collector and the pipelines: schemas, file naming, durable writes (docs/lake.md)."""
