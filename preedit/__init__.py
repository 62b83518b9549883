"""preedit: deep pre-editing for video delivery.

```
 training/ ──checkpoint──> export/ ──writes──> model_repository/ ──> Triton server
 input ──> client/ decode ──NV12 via shared memory──> pre-editor ──> client/ encode ──> output
 perf/  perf_analyzer sweeps · pipeline benchmarks · BD-rate reports
```

Subpackages: `preedit.training`, `preedit.export`, `preedit.client`, `preedit.perf` (sourced from
the top-level folders of the same names). The shared core lives here: the network
(`preedit.network`), NV12/colour maths (`preedit.color`), the tensor contract (`preedit.spec`),
errors and the CLI.
"""

__version__ = "0.1.0"
