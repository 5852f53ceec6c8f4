"""Benchmarks against plain baselines, the wall-time forecast and the GPU device check."""
