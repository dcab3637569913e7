"""Fan-out through Redis: one group, two workers, one publisher outside them (``python -m benchmarks.fanout``)."""
