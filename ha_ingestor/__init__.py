"""``ha-ingestor``: the command line, the one-machine platform launcher, and the demo's replay of a real home."""
