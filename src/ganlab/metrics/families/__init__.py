"""Metric families, one per file, each listed by `_target_` under `metrics.families` in
conf/metrics/*.yaml (the protocol: ganlab/metrics/protocol.py)."""
