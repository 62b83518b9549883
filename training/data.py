"""Training data: short NV12 sequences from video files and image folders.

```
 video files (PyAV) / raw .yuv (geometry in the name) / image folders
   ─> limited-range 8-bit NV12 frames uint8 [H*3/2, W]
   ─> a bank of short sequences uint8 [S, T, C*3/2, C] (random windows of C×C, cached as .npz)
   ─> batches: random crop, horizontal flip, time reversal ─> float NV12 [B, T, crop*3/2, crop]
```

Full-range input (yuvj420p) is converted to limited range, 10-bit input is reduced to 8 bits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from preedit.color import nv12_full_to_limited, nv12_pack, nv12_split, rgb_to_yuv
from preedit.errors import InputError

LOG = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".y4m", ".ts")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_RAW_NAME = re.compile(r"(\d+)x(\d+)")


def _even(x: int) -> int:
    return x - (x % 2)


def read_raw_yuv(path: Path, max_frames: int) -> Iterator[np.ndarray]:
    """Frames of a headerless .yuv file (geometry `WxH` and `yuv420p10le` read from its name)."""
    m = _RAW_NAME.search(path.name)
    if not m:
        raise InputError(f"raw YUV file {path.name} has no WxH in its name")
    w, h = int(m.group(1)), int(m.group(2))
    ten_bit = "10le" in path.name
    dtype = np.uint16 if ten_bit else np.uint8
    frame_len = w * h * 3 // 2
    data = np.fromfile(path, dtype=dtype)
    for i in range(min(max_frames, data.size // frame_len)):
        f = data[i * frame_len : (i + 1) * frame_len]
        if ten_bit:
            f = np.clip((f.astype(np.uint32) + 2) >> 2, 0, 255).astype(np.uint8)
        y = f[: w * h].reshape(h, w)
        u = f[w * h : w * h * 5 // 4].reshape(h // 2, w // 2)
        v = f[w * h * 5 // 4 :].reshape(h // 2, w // 2)
        yield nv12_pack(y, u, v)


def read_video_nv12(path: Path, max_frames: int, start: int = 0) -> List[np.ndarray]:
    """Decode up to `max_frames` frames from frame `start` as limited-range NV12 uint8 `[H*3/2, W]`.

    Odd sizes are cropped to even; full range is converted to limited; 10-bit sources are reduced
    to 8 bits by swscale.
    """
    path = Path(path)
    if path.suffix == ".yuv":
        frames = list(read_raw_yuv(path, start + max_frames))[start:]
        return frames
    import av

    out: List[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for idx, frame in enumerate(container.decode(stream)):
                if idx < start:
                    continue
                full = frame.format.name.startswith("yuvj") or frame.color_range == 2
                w, h = _even(frame.width), _even(frame.height)
                if frame.format.name in ("yuv420p", "yuvj420p") and (w, h) == (frame.width, frame.height):
                    flat = frame.to_ndarray().ravel()
                    y = flat[: h * w].reshape(h, w)
                    u = flat[h * w : h * w * 5 // 4].reshape(h // 2, w // 2)
                    v = flat[h * w * 5 // 4 :].reshape(h // 2, w // 2)
                    nv12 = nv12_pack(y, u, v)
                else:
                    nv12 = frame.reformat(width=w, height=h, format="nv12").to_ndarray()
                if full:
                    nv12 = nv12_full_to_limited(nv12)
                out.append(np.ascontiguousarray(nv12))
                if len(out) >= max_frames:
                    break
    except av.error.FFmpegError as exc:
        raise InputError(f"cannot decode {path}: {exc}") from None
    return out


def read_image_nv12(path: Path) -> np.ndarray:
    """An RGB image file → limited-range BT.709 NV12 uint8 (chroma averaged 2x2)."""
    import av

    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    rgb = frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0
    h, w = _even(rgb.shape[0]), _even(rgb.shape[1])
    y, u, v = rgb_to_yuv(rgb[:h, :w].transpose(2, 0, 1), "bt709", "limited")
    u = u.reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    v = v.reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    to8 = lambda p: np.clip(np.rint(p), 0, 255).astype(np.uint8)  # noqa: E731
    return nv12_pack(to8(y), to8(u), to8(v))


@dataclass(frozen=True)
class BankConfig:
    """How the sequence bank is cut from the sources.

    Attributes:
        window: side of the square windows stored (≥ the training crop), luma pixels.
        seq_len: frames per sequence (frame 0 intra, the rest inter in the proxy).
        seqs_per_source: sequences drawn from each video (images give one 1-frame-repeated seq).
        max_frames: frames decoded per video at most (from its start).
        seed: RNG seed for window positions.
    """

    window: int = 320
    seq_len: int = 3
    seqs_per_source: int = 8
    max_frames: int = 90
    seed: int = 0

    def __post_init__(self) -> None:
        if self.window < 64 or self.window % 4:
            raise ValueError(f"window must be a multiple of 4 and >= 64, got {self.window}")
        if self.seq_len < 1 or self.seqs_per_source < 1 or self.max_frames < self.seq_len:
            raise ValueError(f"bad bank sizes: {self}")


def _windows(frames: List[np.ndarray], cfg: BankConfig, rng: np.random.Generator) -> List[np.ndarray]:
    h = frames[0].shape[0] * 2 // 3
    w = frames[0].shape[1]
    size = cfg.window
    if h < size or w < size:
        return []
    out = []
    for _ in range(cfg.seqs_per_source):
        t0 = int(rng.integers(0, max(1, len(frames) - cfg.seq_len + 1)))
        seq = frames[t0 : t0 + cfg.seq_len]
        while len(seq) < cfg.seq_len:
            seq = seq + [seq[-1]]
        y0 = int(rng.integers(0, (h - size) // 2 + 1)) * 2
        x0 = int(rng.integers(0, (w - size) // 2 + 1)) * 2
        cut = []
        for f in seq:
            y, u, v = nv12_split(f)
            cut.append(nv12_pack(y[y0 : y0 + size, x0 : x0 + size], u[y0 // 2 : (y0 + size) // 2, x0 // 2 : (x0 + size) // 2], v[y0 // 2 : (y0 + size) // 2, x0 // 2 : (x0 + size) // 2]))
        out.append(np.stack(cut))
    return out


def build_bank(sources: Sequence[Path], cfg: BankConfig, cache: Optional[Path] = None) -> Tuple[np.ndarray, List[str]]:
    """Cut the sequence bank `uint8 [S, T, window*3/2, window]` from `sources`.

    Returns the bank and the names of the sources that contributed (smaller ones are skipped).
    With `cache`, the bank is stored there as .npz keyed by the sources and `cfg`.
    """
    key = hashlib.sha256(json.dumps([sorted(str(s) for s in sources), asdict(cfg)]).encode()).hexdigest()[:12]
    if cache is not None:
        path = Path(cache) / f"bank-{key}.npz"
        if path.is_file():
            data = np.load(path)
            return data["bank"], json.loads(str(data["names"]))
    rng = np.random.default_rng(cfg.seed)
    seqs, used = [], []
    for src in sources:
        src = Path(src)
        if src.suffix.lower() in IMAGE_SUFFIXES:
            frames = [read_image_nv12(src)] * cfg.seq_len
        else:
            frames = read_video_nv12(src, cfg.max_frames)
        if not frames:
            LOG.warning("no frames decoded from %s; skipped", src.name)
            continue
        got = _windows(frames, cfg, rng)
        if not got:
            LOG.warning("%s is smaller than the %d-pixel window; skipped", src.name, cfg.window)
            continue
        seqs += got
        used.append(src.name)
    if not seqs:
        raise InputError(f"no training sequences could be cut from {len(sources)} sources (window {cfg.window})")
    bank = np.stack(seqs)
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
        np.savez_compressed(Path(cache) / f"bank-{key}.npz", bank=bank, names=json.dumps(used))
    return bank, used


def sample_batch(bank: torch.Tensor, batch: int, crop: int, gen: torch.Generator, device) -> torch.Tensor:
    """Random crops of random sequences, with horizontal flips and time reversal.

    Args:
        bank: uint8 `[S, T, window*3/2, window]`.
        batch: sequences per batch.
        crop: luma crop side (multiple of 4, ≤ window).
        gen: torch RNG.
        device: target device.

    Returns:
        Float NV12 `[batch, T, crop*3/2, crop]` in code values.
    """
    s, t, rows, window = bank.shape
    idx = torch.randint(0, s, (batch,), generator=gen)
    out = []
    for i in idx.tolist():
        seq = bank[i]
        y, u, v = nv12_split(seq)
        y0 = int(torch.randint(0, (window - crop) // 2 + 1, (1,), generator=gen)) * 2
        x0 = int(torch.randint(0, (window - crop) // 2 + 1, (1,), generator=gen)) * 2
        y = y[:, y0 : y0 + crop, x0 : x0 + crop]
        u = u[:, y0 // 2 : (y0 + crop) // 2, x0 // 2 : (x0 + crop) // 2]
        v = v[:, y0 // 2 : (y0 + crop) // 2, x0 // 2 : (x0 + crop) // 2]
        if torch.rand((), generator=gen) < 0.5:
            y, u, v = y.flip(-1), u.flip(-1), v.flip(-1)
        seq = nv12_pack(y, u, v)
        if torch.rand((), generator=gen) < 0.5:
            seq = seq.flip(0)
        out.append(seq)
    return torch.stack(out).to(device=device, dtype=torch.float32)
