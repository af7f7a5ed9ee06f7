"""Live collector: Home Assistant's WebSocket stream into a durable, exact Parquet lake."""
