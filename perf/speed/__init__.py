"""Serving speed: perf_analyzer sweeps, multi-stream and pipeline benchmarks, model analysis, dashboards."""
