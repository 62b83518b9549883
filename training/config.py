"""Training configuration: dataclasses checked in `__post_init__`; YAML is read only by the CLI.

`TrainConfig.from_dict` warns on unknown keys (house style §7); nested sections are `net`,
`proxy`, `loss` and `bank`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import List, Optional, Tuple

from preedit.codecs import ROUNDTRIP_ENCODERS
from preedit.errors import UsageError
from preedit.network import NetConfig
from preedit.paths import clips_dir
from preedit.training.data import BankConfig, list_photos
from preedit.training.losses import LossConfig
from preedit.training.objective import GuardConfig
from preedit.training.proxy import CODECS, ProxyConfig

LOG = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda")


def _from_dict(cls, data: dict, where: str):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        warnings.warn(f"{where}: unknown keys {unknown} ignored; valid: {sorted(names)}", stacklevel=3)
    kwargs = {k: (tuple(v) if isinstance(v, list) and k in ("block_sizes", "group_patterns", "photo_height_range") else v) for k, v in data.items() if k in names}
    return cls(**kwargs)


@dataclass
class TrainConfig:
    """Everything a training run depends on.

    Attributes:
        clips_dir: folder the names in `train_sources` / `heldout` are relative to ("" = the
            shared clips, `preedit.paths.clips_dir()`).
        train_sources: clip names or paths trained on (video files, raw .yuv, image folders).
        heldout: clip names never trained on; the validation and evaluation set.
        extra_sources: further files or folders the user adds to the training set.
        net, proxy, loss, bank: sub-configurations.
        codecs: proxy quantizer families sampled per step.
        crop: luma crop side of training patches (≥ 256 for VMAF's coarse scales).
        batch_size: sequences per step.
        steps: optimiser steps.
        lr: Adam learning rate (cosine-decayed to 10%).
        qp_range: HEVC-equivalent QPs sampled uniformly per sequence.
        seed: seeds data sampling, proxy block sizes and initialisation.
        device: "auto" (CUDA when present), "cpu" or "cuda".
        ckpt_every: steps between checkpoints.
        val_every: steps between real-encoder validations (0: only at the end, -1: never).
        val_frames: frames per held-out clip in validation.
        val_qps: encoder QP ladder of the validation BD-rate.
        val_codec: encoder of validation ("libx265" or "libsvtav1").
        out_dir: where checkpoints and logs go.
        calibration: JSON of proxy rate scales written by `preedit proxy-check` ("" = none).
        real_codec_every: every N steps, replace the proxy reconstruction of the edited frames by
            the real encoder's decoded frames in the forward pass, keeping the proxy's gradient
            (x̂ = proxy + sg(real − proxy); SCALED / neural wrapping); 0 disables.
        real_codec_preset: encoder preset of that real forward (libx265 name; SVT-AV1 uses 12).
        real_codec_rate: on those steps, the rate term takes the real encoder's bit ratio
            (edited / plain) as its value while the proxy keeps the gradient direction
            (R = R_proxy · sg(R_real / R_proxy)), so the rate-vs-quality trade-off follows real bits.
        dev_sources: training-pool clips kept out of training for model selection (never trained on).
        photo_sources: folders of still photographs (recursive, `data.list_photos`), installed by
            `scripts/data_photos.sh`; each gives sequences with a synthetic pan/zoom.
        objective: "ratio" (the shipped model's ratio of batch sums, `losses.Losses`) or "bdrate"
            (per-sequence local BD-rate with hinge guards, `objective.BDRateObjective`).
        kappa_table: JSON of κ(QP) (`preedit train --fit-kappa`; "" = the round-2 table).
        guards: hinge guards of the "bdrate" objective.
        real_codec_mode: "qp" (fixed QP, x265 `real_codec_preset`, SVT-AV1 preset 12: the old
            training forward) or "crf" (the evaluation settings: libx265 medium at CRF = model QP,
            SVT-AV1 preset `real_av1_preset` at the CRF of equal quality).
        real_av1_preset: SVT-AV1 preset of the "crf" real forward.
        frame_type_calibration: on real-encoder steps, update the proxy's intra/inter bits per
            rate unit from the real per-packet bits (`objective.FrameTypeCalibration`).
        grain_prob: share of training sequences given synthetic grain (`data.add_grain`).
        grain_sigma: largest grain σ in code values.
        rate_gradient: where the BD-rate objective's rate gradient comes from on real-encoder steps:
            "proxy" (ln R = ln R_proxy + sg(ln R_real − ln R_proxy): the proxy's gradient) or
            "directional" (`objective.directional_log_rate`: the real encoder's own Δ ln R of the
            edit, applied along the edit's direction: shrink an edit that costs real bits, grow one
            that saves them).
    """

    clips_dir: str = ""
    train_sources: List[str] = field(default_factory=list)
    heldout: List[str] = field(default_factory=list)
    extra_sources: List[str] = field(default_factory=list)
    net: NetConfig = field(default_factory=NetConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    bank: BankConfig = field(default_factory=BankConfig)
    codecs: Tuple[str, ...] = ("hevc", "av1")
    crop: int = 256
    batch_size: int = 4
    steps: int = 1000
    lr: float = 2e-3
    qp_range: Tuple[float, float] = (22.0, 47.0)
    seed: int = 0
    device: str = "auto"
    ckpt_every: int = 100
    val_every: int = 0
    val_frames: int = 16
    val_qps: Tuple[int, ...] = (22, 27, 32, 37, 42)
    val_codec: str = "libx265"
    out_dir: str = "runs/train"
    calibration: str = ""
    real_codec_every: int = 0
    real_codec_preset: str = "ultrafast"
    real_codec_rate: bool = False
    dev_sources: List[str] = field(default_factory=list)
    photo_sources: List[str] = field(default_factory=list)
    objective: str = "ratio"
    kappa_table: str = ""
    guards: GuardConfig = field(default_factory=GuardConfig)
    real_codec_mode: str = "qp"
    real_av1_preset: str = "8"
    frame_type_calibration: bool = False
    grain_prob: float = 0.0
    grain_sigma: float = 3.0
    rate_gradient: str = "proxy"

    def __post_init__(self) -> None:
        self.codecs = tuple(self.codecs)
        self.qp_range = tuple(float(q) for q in self.qp_range)
        self.val_qps = tuple(int(q) for q in self.val_qps)
        bad = [c for c in self.codecs if c not in CODECS]
        if not self.codecs or bad:
            raise ValueError(f"codecs {bad or '[]'} not valid; valid: {list(CODECS)}")
        if self.device not in DEVICES:
            raise ValueError(f"device {self.device!r} not valid; valid: {list(DEVICES)}")
        if self.crop < 256 or self.crop % 64:
            raise ValueError(f"crop must be a multiple of 64 and >= 256 (VMAF coarse scales), got {self.crop}")
        if self.crop > self.bank.window:
            raise ValueError(f"crop {self.crop} larger than the bank window {self.bank.window}")
        if self.batch_size < 1 or self.steps < 1 or self.lr <= 0:
            raise ValueError("batch_size and steps must be >= 1 and lr > 0")
        if self.rate_gradient not in ("proxy", "directional"):
            raise ValueError(f"rate_gradient must be 'proxy' or 'directional', got {self.rate_gradient!r}")
        lo, hi = self.qp_range
        if not 0 <= lo <= hi <= 51:
            raise ValueError(f"qp_range must satisfy 0 <= lo <= hi <= 51, got {self.qp_range}")
        if self.real_codec_every < 0:
            raise ValueError(f"real_codec_every must be >= 0, got {self.real_codec_every}")
        if self.val_codec not in ROUNDTRIP_ENCODERS:
            raise ValueError(f"val_codec {self.val_codec!r} not valid; valid: {list(ROUNDTRIP_ENCODERS)}")
        if self.objective not in ("ratio", "bdrate"):
            raise ValueError(f"objective {self.objective!r} not valid; valid: ['ratio', 'bdrate']")
        if self.real_codec_mode not in ("qp", "crf"):
            raise ValueError(f"real_codec_mode {self.real_codec_mode!r} not valid; valid: ['qp', 'crf']")
        if not 0.0 <= self.grain_prob <= 1.0 or self.grain_sigma < 0:
            raise ValueError(f"grain_prob must be in [0, 1] and grain_sigma >= 0, got {self.grain_prob}, {self.grain_sigma}")
        names = lambda xs: set(Path(s).name for s in xs)  # noqa: E731
        train = names(self.train_sources) | names(self.extra_sources)
        overlap = train & names(self.heldout)
        if overlap:
            raise ValueError(f"held-out clips also listed for training: {sorted(overlap)}")
        overlap = train & names(self.dev_sources)
        if overlap:
            raise ValueError(f"dev clips also listed for training: {sorted(overlap)}")
        overlap = names(self.dev_sources) & names(self.heldout)
        if overlap:
            raise ValueError(f"dev clips also held out: {sorted(overlap)}")

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Build from a plain dict (e.g. parsed YAML); unknown keys are warned about and ignored."""
        data = dict(data or {})
        sub = {
            "net": (NetConfig, data.pop("net", {}) or {}),
            "proxy": (ProxyConfig, data.pop("proxy", {}) or {}),
            "loss": (LossConfig, data.pop("loss", {}) or {}),
            "bank": (BankConfig, data.pop("bank", {}) or {}),
            "guards": (GuardConfig, data.pop("guards", {}) or {}),
        }
        built = {k: _from_dict(c, d, f"config section {k!r}") for k, (c, d) in sub.items()}
        return _from_dict(cls, {**data, **built}, "training config")

    def to_dict(self) -> dict:
        """Plain, YAML-able dict (tuples as lists)."""

        def plain(x):
            if isinstance(x, dict):
                return {k: plain(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [plain(v) for v in x]
            return x

        return plain(asdict(self))

    def resolve_clips_dir(self) -> Path:
        return Path(self.clips_dir) if self.clips_dir else clips_dir()

    def train_paths(self) -> List[Path]:
        base = self.resolve_clips_dir()

        paths = [Path(s) if Path(s).is_absolute() else base / s for s in self.train_sources]
        photos = list_photos([Path(s) for s in self.photo_sources]) if self.photo_sources else []
        return paths + [Path(s) for s in self.extra_sources] + photos

    def dev_paths(self) -> List[Path]:
        base = self.resolve_clips_dir()
        return [Path(s) if Path(s).is_absolute() else base / s for s in self.dev_sources]

    def heldout_paths(self) -> List[Path]:
        base = self.resolve_clips_dir()
        return [Path(s) if Path(s).is_absolute() else base / s for s in self.heldout]


def load_yaml(path: Optional[str]) -> dict:
    """Read a YAML config file (CLI edge only)."""
    if not path:
        return {}
    import yaml  # lazy: yaml


    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file not found: {p}")
    with p.open() as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {p} must hold a mapping at the top level")
    return data
