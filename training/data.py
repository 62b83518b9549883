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

import fnmatch
import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

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
    import av  # lazy: av

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


def read_image_nv12(path: Path, height: int = 0) -> np.ndarray:
    """An RGB image file → limited-range BT.709 NV12 uint8 (chroma averaged 2x2).

    With `height` > 0 the image is first scaled (swscale, aspect kept) to that height.
    """
    import av  # lazy: av

    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
    except (av.error.FFmpegError, StopIteration) as exc:
        raise InputError(f"cannot decode image {path}: {exc}") from None
    if height > 0 and height != frame.height:
        width = max(2, int(round(frame.width * height / frame.height)))
        frame = frame.reformat(width=width, height=height, format="rgb24")
    rgb = frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0
    h, w = _even(rgb.shape[0]), _even(rgb.shape[1])
    y, u, v = rgb_to_yuv(rgb[:h, :w].transpose(2, 0, 1), "bt709", "limited")
    u = u.reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    v = v.reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    to8 = lambda p: np.clip(np.rint(p), 0, 255).astype(np.uint8)  # noqa: E731
    return nv12_pack(to8(y), to8(u), to8(v))


def list_photos(roots: Sequence[Path]) -> List[Path]:
    """Still photographs under `roots` (recursive), one file per picture: screenshots and dark
    variants are skipped, and of the several sizes of one wallpaper (`.../contents/images/WxH.ext`)
    only the largest landscape one is kept. Sorted; missing roots are skipped with a warning."""
    best = {}
    for root in map(Path, roots):
        if not root.is_dir():
            LOG.warning("photo folder %s not found (scripts/data_photos.sh installs them); skipped", root)
            continue
        for f in sorted(root.rglob("*")):
            if f.suffix.lower() not in IMAGE_SUFFIXES or "screenshot" in f.name or "images_dark" in f.parts:
                continue
            m = _RAW_NAME.fullmatch(f.stem)
            if m and f.parent.name == "images":
                w, h = int(m.group(1)), int(m.group(2))
                key = str(f.parent.parent.parent)
                if h > w:
                    continue
                if key not in best or w * h > best[key][0]:
                    best[key] = (w * h, f)
            else:
                best[str(f)] = (0, f)
    return sorted(f for _, f in best.values())


@dataclass(frozen=True)
class BankConfig:
    """How the sequence bank is cut from the sources.

    Attributes:
        window: side of the square windows stored (≥ the training crop), luma pixels.
        seq_len: frames per sequence (frame 0 intra, the rest inter in the proxy).
        seqs_per_source: sequences drawn from each video (images give one 1-frame-repeated seq).
        max_frames: frames decoded per video at most (from its start).
        seed: RNG seed for window positions.
        all_frames: draw sequence starts stratified over *every* frame of each video (streamed,
            `max_frames` ignored) instead of the first `max_frames`.
        downscale_min_height: videos at least this tall also give windows from a 2x-downscaled
            copy (windows of a 1080p+ frame otherwise hold little structure); 0 disables.
        max_group_fraction: no source group holds more than this share of the bank (sequences of
            the largest group are dropped at random until it holds); 1 disables.
        group_patterns: glob patterns on file names; files matching one pattern form one group
            (e.g. "asl-*": one signing camera). Other videos are a group each; images of one folder
            are one group.
        photo_height_range: photographs are scaled to a random height in this range (pixels).
        photo_seqs: sequences cut from each photograph.
        photo_max_shift: largest synthetic pan, luma pixels per frame (sub-pixel, bilinear).
        photo_max_zoom: largest synthetic zoom, relative scale change per frame.
    """

    window: int = 320
    seq_len: int = 3
    seqs_per_source: int = 8
    max_frames: int = 90
    seed: int = 0
    all_frames: bool = False
    downscale_min_height: int = 0
    max_group_fraction: float = 1.0
    group_patterns: Tuple[str, ...] = ()
    photo_height_range: Tuple[int, int] = (480, 1080)
    photo_seqs: int = 1
    photo_max_shift: float = 3.0
    photo_max_zoom: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "group_patterns", tuple(self.group_patterns))
        object.__setattr__(self, "photo_height_range", tuple(int(v) for v in self.photo_height_range))
        if self.window < 64 or self.window % 4:
            raise ValueError(f"window must be a multiple of 4 and >= 64, got {self.window}")
        if self.seq_len < 1 or self.seqs_per_source < 1 or self.max_frames < self.seq_len:
            raise ValueError(f"bad bank sizes: {self}")
        if not 0.0 < self.max_group_fraction <= 1.0:
            raise ValueError(f"max_group_fraction must be in (0, 1], got {self.max_group_fraction}")
        lo, hi = self.photo_height_range
        if not self.window <= lo <= hi:
            raise ValueError(f"photo_height_range must satisfy window <= lo <= hi, got {self.photo_height_range}")
        if self.photo_seqs < 1 or self.photo_max_shift < 0 or not 0 <= self.photo_max_zoom < 0.2:
            raise ValueError(f"bad photo settings: {self}")


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


def _cut(f: np.ndarray, y0: int, x0: int, size: int) -> np.ndarray:
    y, u, v = nv12_split(f)
    c = slice(y0 // 2, (y0 + size) // 2), slice(x0 // 2, (x0 + size) // 2)
    return nv12_pack(y[y0 : y0 + size, x0 : x0 + size], u[c], v[c])


def downscale2(nv12: np.ndarray) -> np.ndarray:
    """NV12 uint8 `[H*3/2, W]` → half size (2x2 mean of each plane; H, W multiples of 4)."""
    y, u, v = nv12_split(nv12)
    half = lambda p: np.rint(p.reshape(p.shape[0] // 2, 2, p.shape[1] // 2, 2).astype(np.float32).mean((1, 3))).astype(np.uint8)  # noqa: E731
    h, w = y.shape
    h4, w4 = h - h % 4, w - w % 4
    return nv12_pack(half(y[:h4, :w4]), half(u[: h4 // 2, : w4 // 2]), half(v[: h4 // 2, : w4 // 2]))


def count_frames(path: Path) -> int:
    """Frames of a video (demuxed packets, no decode; raw .yuv from its size)."""
    path = Path(path)
    if path.suffix == ".yuv":
        m = _RAW_NAME.search(path.name)
        if not m:
            raise InputError(f"raw YUV file {path.name} has no WxH in its name")
        w, h = int(m.group(1)), int(m.group(2))
        return path.stat().st_size // (w * h * 3 // 2 * (2 if "10le" in path.name else 1))
    import av  # lazy: av

    try:
        with av.open(str(path)) as box:
            stream = box.streams.video[0]
            return sum(1 for pkt in box.demux(stream) if pkt.size)
    except av.error.FFmpegError as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


def stratified_starts(n_frames: int, seq_len: int, count: int, rng: np.random.Generator) -> List[int]:
    """`count` sequence starts spread over the whole clip: one uniform draw in each of `count`
    equal strata of the valid starts [0, n_frames − seq_len] (repeats when the clip is short)."""
    last = max(0, n_frames - seq_len)
    edges = np.linspace(0, last + 1, count + 1)
    return [int(min(last, np.floor(rng.uniform(edges[i], max(edges[i] + 1e-9, edges[i + 1]))))) for i in range(count)]


def _video_windows_all(path: Path, cfg: BankConfig, rng: np.random.Generator) -> Tuple[List[np.ndarray], int]:
    """Windows with starts over every frame of the video (streamed: only needed frames are kept);
    tall videos also give windows of their 2x-downscaled frames. Returns (windows, n_frames)."""
    n = count_frames(path)
    if n <= 0:
        return [], 0
    size, t = cfg.window, cfg.seq_len
    starts = stratified_starts(n, t, cfg.seqs_per_source, rng)
    wanted = {s + k for s in starts for k in range(t)}
    kept = {}
    frames = read_raw_yuv(path, n) if path.suffix == ".yuv" else _iter_video(path)
    last = -1
    for i, f in enumerate(frames):
        if i in wanted:
            kept[i] = f
        last = i
        if i >= max(wanted):
            break
    if not kept:
        return [], n
    seqs = []
    for variant in ("full", "half"):
        if variant == "half" and not (cfg.downscale_min_height and kept[min(kept)].shape[0] * 2 // 3 >= cfg.downscale_min_height):
            continue
        for s in starts:
            idx = [min(s + k, last) for k in range(t)]
            seq = [kept.get(j, kept[max(k for k in kept if k <= j)]) for j in idx]
            if variant == "half":
                seq = [downscale2(f) for f in seq]
            h, w = seq[0].shape[0] * 2 // 3, seq[0].shape[1]
            if h < size or w < size:
                continue
            y0 = int(rng.integers(0, (h - size) // 2 + 1)) * 2
            x0 = int(rng.integers(0, (w - size) // 2 + 1)) * 2
            seqs.append(np.stack([_cut(f, y0, x0, size) for f in seq]))
    return seqs, n


def _iter_video(path: Path) -> Iterator[np.ndarray]:
    """All frames of a video as limited-range NV12 (see `read_video_nv12`), one at a time."""
    start = 0
    chunk = 64
    while True:  # decode in chunks so memory stays bounded on long clips
        got = read_video_nv12(path, chunk, start=start)
        yield from got
        if len(got) < chunk:
            return
        start += chunk


def photo_sequence(nv12: np.ndarray, cfg: BankConfig, rng: np.random.Generator) -> Optional[np.ndarray]:
    """A synthetic camera move over a still: `seq_len` windows of side `cfg.window` whose centre pans
    by a constant sub-pixel velocity and whose scale changes geometrically (bilinear resampling,
    luma and chroma with the same geometry). None when the photo is too small."""
    y, u, v = nv12_split(nv12)
    h, w = y.shape
    size, t = cfg.window, cfg.seq_len
    vel = rng.uniform(-cfg.photo_max_shift, cfg.photo_max_shift, size=2)
    zoom = float(rng.uniform(-cfg.photo_max_zoom, cfg.photo_max_zoom))
    scales = (1.0 + zoom) ** np.arange(t)
    reach = np.abs(vel)[:, None] * np.arange(t) + size * scales / 2 + 2
    half_y, half_x = float(reach[0].max()), float(reach[1].max())
    if h < 2 * half_y + 2 or w < 2 * half_x + 2:
        return None
    cy = rng.uniform(half_y, h - half_y)
    cx = rng.uniform(half_x, w - half_x)
    cy0, cx0 = cy - vel[0] * (t - 1) / 2, cx - vel[1] * (t - 1) / 2
    planes = [torch.from_numpy(p.astype(np.float32))[None, None] for p in (y, u, v)]
    out = []
    for k in range(t):
        cyk, cxk, sk = cy0 + vel[0] * k, cx0 + vel[1] * k, scales[k]
        got = []
        for idx, plane in enumerate(planes):
            f = 1.0 if idx == 0 else 0.5
            ph, pw = plane.shape[-2:]
            n = int(size * f)
            off = (torch.arange(n, dtype=torch.float32) + 0.5 - n / 2) * sk
            gy = ((cyk * f + off) / ph) * 2 - 1
            gx = ((cxk * f + off) / pw) * 2 - 1
            grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]
            got.append(F.grid_sample(plane, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0])
        yy, uu, vv = (np.clip(np.rint(p.numpy()), 0, 255).astype(np.uint8) for p in got)
        out.append(nv12_pack(yy, uu, vv))
    return np.stack(out)


def source_group(path: Path, patterns: Sequence[str]) -> str:
    """Group label of a source: its first matching pattern, the folder of an image, or the file."""
    path = Path(path)
    for pat in patterns:
        if fnmatch.fnmatch(path.name, pat) or fnmatch.fnmatch(str(path), pat):
            return pat
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return str(path.parent)
    return path.name


def cap_groups(groups: Sequence[str], max_fraction: float, rng: np.random.Generator) -> List[int]:
    """Indices of items to keep so that no group holds more than `max_fraction` of the kept items
    (drops at random from the largest group, one at a time; a single group is kept whole)."""
    keep = {g: [i for i, x in enumerate(groups) if x == g] for g in dict.fromkeys(groups)}
    for g in keep:
        rng.shuffle(keep[g])
    while len(keep) > 1:
        total = sum(len(v) for v in keep.values())
        big = max(keep, key=lambda g: len(keep[g]))
        if len(keep[big]) <= max_fraction * total + 1e-9:
            break
        keep[big].pop()
    return sorted(i for v in keep.values() for i in v)


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
    seqs, used, groups = [], [], []
    for src in sources:
        src = Path(src)
        if src.suffix.lower() in IMAGE_SUFFIXES and cfg.all_frames:
            got = []
            for _ in range(cfg.photo_seqs):
                lo, hi = cfg.photo_height_range
                try:
                    photo = read_image_nv12(src, height=int(rng.integers(lo, hi + 1)) // 2 * 2)
                except InputError as exc:
                    LOG.warning("%s; skipped", exc)
                    break
                seq = photo_sequence(photo, cfg, rng)
                if seq is not None:
                    got.append(seq)
        elif src.suffix.lower() in IMAGE_SUFFIXES:
            got = _windows([read_image_nv12(src)] * cfg.seq_len, cfg, rng)
        elif cfg.all_frames:
            got, n = _video_windows_all(src, cfg, rng)
            if n == 0:
                LOG.warning("no frames decoded from %s; skipped", src.name)
                continue
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
        groups += [source_group(src, cfg.group_patterns)] * len(got)
        used.append(src.name)
    if not seqs:
        raise InputError(f"no training sequences could be cut from {len(sources)} sources (window {cfg.window})")
    if cfg.max_group_fraction < 1.0:
        keep = cap_groups(groups, cfg.max_group_fraction, rng)
        seqs = [seqs[i] for i in keep]
    bank = np.stack(seqs)
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
        np.savez_compressed(Path(cache) / f"bank-{key}.npz", bank=bank, names=json.dumps(used))
    return bank, used


def add_grain(batch: torch.Tensor, prob: float, sigma_max: float, gen: torch.Generator) -> torch.Tensor:
    """Film-grain / sensor-noise augmentation of source sequences (the grainy frames become the
    reference too): with probability `prob` per sequence, luma gets Gaussian noise of σ ~ U(0.5,
    sigma_max) code values, new per frame, spatially correlated (3x3 box) half of the time;
    rounded and clamped, so sources stay integer code values."""
    if prob <= 0 or sigma_max <= 0:
        return batch
    b, t, rows, w = batch.shape
    h = rows * 2 // 3
    out = batch.clone()
    for i in range(b):
        if float(torch.rand((), generator=gen)) >= prob:
            continue
        sigma = 0.5 + (sigma_max - 0.5) * float(torch.rand((), generator=gen))
        noise = torch.randn((t, 1, h, w), generator=gen)
        if float(torch.rand((), generator=gen)) < 0.5:
            noise = F.avg_pool2d(F.pad(noise, (1, 1, 1, 1), mode="reflect"), 3, stride=1) * 3.0
        out[i, :, :h] = torch.clamp(torch.round(out[i, :, :h] + sigma * noise[:, 0].to(out.device)), 0.0, 255.0)
    return out


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
