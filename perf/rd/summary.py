"""Collate evaluation points into Bjøntegaard deltas: per clip x codec x metric, then per-clip means.

```
 points [{clip, codec, variant, rate_kbps, <metric>...}] ─> compute_bd ─> one row per
   (clip, codec, variant != source, metric): BD-rate PCHIP + Akima, BD-quality PCHIP, overlap
 rows ─> summarize ─> per (codec, variant, metric): mean of per-clip values (never pooled
   curves) and the bad-case count (clips with BD-rate > 0, i.e. the variant costs bits)
```
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, List, Sequence, Tuple

from preedit.quality.metrics import METRICS

#: The anchor variant every other variant is compared with.
ANCHOR = "source"


def compute_bd(points: Sequence[Dict], min_overlap: float = 0.5) -> Tuple[List[Dict], List[str]]:
    """BD-rate (PCHIP, Akima) and BD-quality (PCHIP) of every variant vs `source`, per clip x codec x metric."""
    from preedit.quality.bdrate import bd_quality, bd_rate  # lazy: pulls numpy

    curves: Dict[Tuple[str, str, str], List[Dict]] = {}
    for p in points:
        curves.setdefault((p["clip"], p["codec"], p["variant"]), []).append(p)
    rows, notes = [], []
    for (clip, codec, variant), pts in sorted(curves.items()):
        if variant == ANCHOR or (clip, codec, ANCHOR) not in curves:
            continue
        anchor = curves[(clip, codec, ANCHOR)]
        ra = [p["rate_kbps"] for p in anchor]
        rt = [p["rate_kbps"] for p in pts]
        for metric in METRICS:
            qa = [p[metric] for p in anchor]
            qt = [p[metric] for p in pts]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pchip = bd_rate(ra, qa, rt, qt, method="pchip", min_overlap=min_overlap)
                akima = bd_rate(ra, qa, rt, qt, method="akima", min_overlap=min_overlap)
                bdq = bd_quality(ra, qa, rt, qt, method="pchip", min_overlap=min_overlap)
            warn = pchip.warning or bdq.warning
            if warn:
                notes.append(f"{clip} {codec} {variant} {metric}: {warn}")
            rows.append({
                "clip": clip, "codec": codec, "variant": variant, "metric": metric,
                "bd_rate_pchip": pchip.value, "bd_rate_akima": akima.value, "bd_quality_pchip": bdq.value,
                "overlap": pchip.overlap, "quality_overlap": bdq.overlap, "warning": warn,
            })  # fmt: skip
    return rows, notes


def summarize(bd_rows: Sequence[Dict]) -> List[Dict]:
    """Per codec x variant x metric: mean of per-clip BD values (never pooled curves) and bad cases."""
    groups: Dict[Tuple[str, str, str], List[Dict]] = {}
    for r in bd_rows:
        groups.setdefault((r["codec"], r["variant"], r["metric"]), []).append(r)
    out = []
    for (codec, variant, metric), rows in sorted(groups.items()):
        def finite(key: str) -> List[float]:
            return [r[key] for r in rows if r[key] is not None and math.isfinite(r[key])]

        pch, aki, bdq = finite("bd_rate_pchip"), finite("bd_rate_akima"), finite("bd_quality_pchip")
        out.append({
            "codec": codec, "variant": variant, "metric": metric, "clips": len(rows),
            "clips_valid": len(pch),
            "mean_bd_rate_pchip": sum(pch) / len(pch) if pch else math.nan,
            "mean_bd_rate_akima": sum(aki) / len(aki) if aki else math.nan,
            "mean_bd_quality_pchip": sum(bdq) / len(bdq) if bdq else math.nan,
            "bad_cases": sum(1 for v in pch if v > 0.0),
        })  # fmt: skip
    return out
