"""preedit.perf: speed (perf_analyzer, pipeline benchmarks) and compression gain (BD-rate)."""
