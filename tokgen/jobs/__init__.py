"""Batch rendering jobs: a Redis Streams queue, workers, and the rules between them."""
