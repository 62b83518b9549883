"""Comparing backends bit for bit: per-frame outputs, pairwise mismatch, sha256 digests, records.

```
 frames + QP per frame ──run_frames──> outputs per backend ──pairwise──> share of differing pixels, max |diff|
                                                           ──frame_digest──> per-frame sha256 (the verification record)
```
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from preedit.errors import ModelError
from preedit.paths import clips_dir

from preedit.export.int8.backends import Runner
from preedit.export.int8.frames import load_frames
from preedit.export.int8.reference import IntModel, reference_forward

#: Raw (decoder-free) clips: the verification clip must decode to the same input bits anywhere.
VERIFY_CLIP = "CiscoVT2people_320x192_12fps.yuv"
VERIFY_QPS = (22.0, 32.0, 42.0)


def frame_qps(count: int, qps: Sequence[float] = VERIFY_QPS) -> List[float]:
    """QP used for frame i: cycles through `qps` so every check exercises several FiLM rows."""
    return [float(qps[i % len(qps)]) for i in range(count)]


def run_frames(runner: Runner, frames: Sequence[np.ndarray], qps: Sequence[float]) -> List[np.ndarray]:
    """One request per frame: uint8 NV12 `[H*3/2, W]` in, the same out."""
    return [runner(f[None], np.array([[q]], dtype=np.float32))[0] for f, q in zip(frames, qps)]


def mismatch(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> Dict[str, float]:
    """Differences between two output sequences: pixel share, max |diff|, frames differing."""
    total = differing = frames = 0
    worst = 0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            raise ModelError(f"output shapes differ: {x.shape} vs {y.shape}")
        d = np.abs(x.astype(np.int16) - y.astype(np.int16))
        n = int(np.count_nonzero(d))
        differing += n
        frames += int(n > 0)
        worst = max(worst, int(d.max()))
        total += d.size
    return {"pixels": total, "differing": differing, "differing_share": differing / max(total, 1), "max_abs_diff": worst,
            "frames_differing": frames, "frames": len(a)}


def pairwise(outputs: Mapping[str, Sequence[np.ndarray]]) -> List[Dict]:
    """`mismatch` for every pair of backends (in insertion order)."""
    names = list(outputs)
    return [{"a": a, "b": b, **mismatch(outputs[a], outputs[b])} for a, b in itertools.combinations(names, 2)]


def frame_digest(frame: np.ndarray) -> str:
    """sha256 of a uint8 frame's shape and bytes (hex)."""
    h = hashlib.sha256(f"{frame.dtype}{tuple(frame.shape)}".encode())
    h.update(np.ascontiguousarray(frame).tobytes())
    return h.hexdigest()


def combined_digest(digests: Sequence[str]) -> str:
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def first_mismatch(expected: Sequence[str], got: Sequence[np.ndarray],
                   want_frames: Optional[Sequence[np.ndarray]] = None) -> Optional[Dict]:
    """First frame whose digest differs from `expected`, with where it differs when known."""
    if len(got) != len(expected):
        return {"frame": min(len(got), len(expected)), "reason": f"{len(got)} frames, expected {len(expected)}"}
    for i, (d, frame) in enumerate(zip(expected, got)):
        if frame_digest(frame) != d:
            info = {"frame": i, "reason": "digest differs"}
            if want_frames is not None:
                diff = np.argwhere(frame != want_frames[i])
                info.update(pixels_differing=int(len(diff)), first_pixel=[int(v) for v in diff[0]] if len(diff) else None)
            return info
    return None


def verification_frames(clip: str = VERIFY_CLIP, count: int = 9) -> List[np.ndarray]:
    path = clips_dir() / clip
    return load_frames(path, count)


def verification_record(model: IntModel, clip: str = VERIFY_CLIP, count: int = 9,
                        frames: Optional[Sequence[np.ndarray]] = None) -> Dict:
    """Per-frame input and output sha256 of the integer reference on a fixed clip."""
    frames = list(frames) if frames is not None else verification_frames(clip, count)
    qps = frame_qps(len(frames))
    outputs = run_frames(lambda x, q: reference_forward(model, x, q), frames, qps)
    out_digests = [frame_digest(o) for o in outputs]
    return {"clip": clip, "frames": len(frames), "qps": qps,
            "input_sha256": [frame_digest(f) for f in frames], "output_sha256": out_digests,
            "sha256": combined_digest(out_digests)}
