"""κ(QP): the plain encoder's own price of quality, d ln R / dQ along its QP ladder (the issue
writes −d ln R/dQ per QP step; the sign convention here makes κ > 0), per model QP and codec family.

The BD-rate objective (`training/objective.py`) pays `κ(QP)·(Q0 − Q)` for a quality change, so
that at every QP a quality point costs what the encoder itself would charge for it. The table is
fitted on training sequences only (never dev or held-out clips), with the real encoders at the
evaluation settings (libx265 medium CRF = model QP; SVT-AV1 preset 8 at the CRF of equal quality,
`preedit.qp`), and Q measured exactly as the loss measures it (vmaf-torch VMAF-NEG, motion off,
per frame, mean over the sequence):

```
 bank sequences [S, T, ...] ─> plain encode at each ladder QP ─> bits R(q), VMAF-NEG Q(q) per sequence
   ─> κ(q_i) = (ln R(q_{i+1}) − ln R(q_{i−1})) / (Q(q_{i+1}) − Q(q_{i−1}))  (central difference)
   ─> median over sequences ─> {"hevc": {"qp": [...], "kappa": [...]}, "av1": {...}}
```

`preedit train --fit-kappa OUT.json` runs the fit; `KappaTable.load` reads it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from preedit.color import nv12_split
from preedit.errors import UsageError
from preedit.paths import REPO_ROOT
from preedit.training.encoders import encode_decode

LOG = logging.getLogger(__name__)
FIT_QPS = (18, 22, 26, 30, 34, 38, 42, 46, 50)

# The table measured in round 2 (libx265, libvmaf VMAF-NEG, training clips; science_brief.md):
# the fallback when no fitted table is given.
ROUND2_HEVC = {"qp": [22, 27, 32, 37, 42], "kappa": [0.12, 0.068, 0.045, 0.033, 0.033]}


@dataclass(frozen=True)
class KappaTable:
    """Piecewise-linear κ(QP) per codec family, held constant beyond the fitted QPs."""

    tables: Dict[str, Dict[str, List[float]]]

    def __post_init__(self) -> None:
        for fam, t in self.tables.items():
            qps, ks = t.get("qp", []), t.get("kappa", [])
            if len(qps) < 1 or len(qps) != len(ks):
                raise ValueError(f"kappa table {fam!r}: need matching non-empty 'qp' and 'kappa' lists")
            if list(qps) != sorted(qps):
                raise ValueError(f"kappa table {fam!r}: 'qp' must be increasing")
            if any(k <= 0 or not np.isfinite(k) for k in ks):
                raise ValueError(f"kappa table {fam!r}: every kappa must be a finite number > 0")

    def __call__(self, family: str, qp):
        """κ at model QP `qp` (float or array) for `family` ("hevc", "av1"); an unknown family uses "hevc"."""
        t = self.tables.get(family) or self.tables["hevc"]
        return np.interp(np.asarray(qp, dtype=np.float64), t["qp"], t["kappa"])

    @classmethod
    def default(cls) -> "KappaTable":
        return cls({"hevc": dict(ROUND2_HEVC)})

    @classmethod
    def load(cls, path: Optional[str]) -> "KappaTable":
        """Read a table written by `fit_kappa` ("" or None: the round-2 table for every family)."""
        if not path:
            return cls.default()
        p = Path(path)
        if not p.is_absolute() and not p.is_file():
            p = REPO_ROOT / p
        if not p.is_file():
            raise UsageError(f"kappa table not found: {path}")
        data = json.loads(p.read_text())
        return cls({k: {"qp": list(v["qp"]), "kappa": list(v["kappa"])} for k, v in data.items() if isinstance(v, dict) and "kappa" in v})


def kappa_from_curves(qps: Sequence[float], log_rate: np.ndarray, quality: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """κ per sequence and ladder point from R-Q curves.

    Args:
        qps: increasing ladder `[K]`.
        log_rate: ln bits `[S, K]`.
        quality: Q `[S, K]` (higher is better).
        floor: smallest |ΔQ| counted (flat curves give NaN, ignored by the median).

    Returns:
        `[S, K]` κ = Δ ln R / ΔQ between neighbouring ladder points (central differences,
        one-sided at the ends): the bits the encoder spends per quality point, > 0 on a monotone
        curve (both fall as QP rises); NaN where undefined or not monotone.
    """
    lr = np.asarray(log_rate, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    k = len(qps)
    out = np.full(lr.shape, np.nan)
    for i in range(k):
        a, b = max(i - 1, 0), min(i + 1, k - 1)
        dq = q[:, b] - q[:, a]
        dr = lr[:, b] - lr[:, a]
        with np.errstate(divide="ignore", invalid="ignore"):
            val = np.where(np.abs(dq) > floor, dr / dq, np.nan)
        out[:, i] = np.where(val > 0, val, np.nan)
    return out


def fit_kappa(bank: np.ndarray, qps: Sequence[int] = FIT_QPS, families: Sequence[str] = ("hevc", "av1"), max_seqs: int = 24, seed: int = 0) -> dict:
    """Fit the κ table on `bank` sequences `uint8 [S, T, H*3/2, W]` with the real encoders.

    Returns a JSON-able dict: per family `qp`, `kappa` (median over sequences), `iqr`, `n`.
    """
    import torch  # lazy: torch
    from vmaf_torch import VMAF  # lazy: vmaf_torch

    from preedit.training.objective import real_encoder_settings  # lazy: pulls torch

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(bank), size=min(max_seqs, len(bank)), replace=False)
    vmaf = VMAF(temporal_pooling=False, enable_motion=False, clip_score=False, NEG=True)
    out: dict = {}
    for fam in families:
        lr = np.zeros((len(idx), len(qps)))
        qq = np.zeros((len(idx), len(qps)))
        for si, s in enumerate(idx):
            seq = np.ascontiguousarray(bank[s])
            ref_y = torch.from_numpy(nv12_split(seq)[0].astype(np.float32)).unsqueeze(1)
            for qi, qp in enumerate(qps):
                enc, value, preset = real_encoder_settings(fam, float(qp))
                rt = encode_decode(seq, enc, value, preset=preset, mode="crf")
                dec_y = torch.from_numpy(nv12_split(rt.decoded)[0].astype(np.float32)).unsqueeze(1)
                with torch.no_grad():
                    qq[si, qi] = float(vmaf(ref_y, dec_y).mean())
                lr[si, qi] = np.log(max(rt.total_bits, 1))
            LOG.info("kappa fit %s: sequence %d/%d", fam, si + 1, len(idx))
        ks = kappa_from_curves(qps, lr, qq)
        med = np.nanmedian(ks, axis=0)
        q25, q75 = np.nanpercentile(ks, 25, axis=0), np.nanpercentile(ks, 75, axis=0)
        good = np.isfinite(med)
        out[fam] = {
            "qp": [float(q) for q, g in zip(qps, good) if g],
            "kappa": [round(float(v), 5) for v in med[good]],
            "iqr": [[round(float(a), 5), round(float(b), 5)] for a, b, g in zip(q25, q75, good) if g],
            "n": [int(np.isfinite(ks[:, i]).sum()) for i in range(len(qps)) if good[i]],
            "neg_plain_median": [round(float(v), 2) for v in np.median(qq, axis=0)],
        }
    return out
