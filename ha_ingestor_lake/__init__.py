"""The lake contract shared by the collector and the pipelines: schemas and identities, landing file naming, durable
writes, the Delta tables' locations and writes (docs/lake.md)."""
