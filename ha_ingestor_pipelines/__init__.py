"""Dagster definitions over the HA-Ingestor lake."""
