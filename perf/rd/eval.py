"""Rate-distortion evaluation: encode variants of the same frames, score against the source, BD-rate.

```
 clip ─> reference.y4m (first N frames, <= max_height, limited range,     [perf/rd/sources.py]
                        8-bit, or 10-bit for a 10-bit source)
           ├─ source ─────────────────┐
           ├─ pre-edited (per QP) ────┤
           ├─ unsharp / hqdn3d (vf) ──┼─> encoder x rate ladder ─> bitstream  [perf/rd/variants.py]
           └─ codec perceptual tune ──┘         │
                                                └─> libvmaf/XPSNR vs reference.y4m [perf/metrics.py]
                                                    (at the reference's bit depth)
 points (rate_kbps, metrics) per clip x codec x variant ─> BD-rate / BD-quality vs source
                                          (per clip, then averaged) [perf/rd/summary.py, perf/bdrate.py]
```

Each point is cached under `cache_dir` by a key of everything that changes its result (clip
identity, frames, size, variant, codec, preset, rate value, filter/tune args, model hash, tool
versions, harness version), so reruns only do new work.

A 10-bit source is evaluated at 10 bits end to end: its reference is a yuv420p10le y4m, every
variant is encoded 10-bit (Main10, AV1 10-bit) except `8bit` (the source rounded to 8 bits, the
banding-prone alternative), the model's edit is made on the 8-bit view and applied at 10 bits
(`preedit.client.bitdepth`, as `preedit run` does), and libvmaf / XPSNR score on yuv420p10le
(PSNR on the 10-bit scale). `EvalConfig.bit_depth = 8` scores such a clip at 8 bits instead.
Library entry point:
`run_eval(config, editor) -> EvalResult`; reports are written by `preedit.perf.rd.report`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from preedit.codecs import CODECS, bitstream_suffix, ffmpeg_argv, get_codec, model_qp
from preedit.color import i420_to_nv12, nv12_to_i420
from preedit.engines import Engine
from preedit.errors import InputError, ModelError, UsageError
from preedit.perf.rd import report as eval_report, variants as _codecs
from preedit.perf.rd.sources import build_reference_cmd, source_bit_depth
from preedit.perf.rd.summary import ANCHOR, compute_bd, summarize  # noqa: F401  (re-exported)
from preedit.quality.ffmpeg import run_command
from preedit.quality.metrics import METRICS, VMAF_DEVICES, resolve_vmaf_device, score, tool_versions
from preedit.quality.y4m import iter_batches, parse_header, read_y4m, write_y4m
from preedit.spec import QP_RANGE

log = logging.getLogger(__name__)

#: Bump when a change to this harness changes results, to invalidate caches.
EVAL_VERSION = "1"
DEFAULT_CODECS = ("libx265", "libsvtav1")
DEFAULT_VARIANTS = ("source", "preedit", "unsharp", "hqdn3d", "tune")


@dataclass
class EvalConfig:
    """What to evaluate and how.

    Attributes:
        clips: input video files.
        out_dir: where reports go.
        codecs: FFmpeg encoder names (see `preedit.codecs.CODECS`).
        variants: variant names (see `_codecs.VARIANTS`); `source` is the anchor and always included.
        ladders: per-codec rate values overriding the defaults (>= 5 recommended, >= 2 required).
        presets: per-codec preset overrides.
        frames: frames per clip (from the start) that are encoded and scored.
        max_height: downscale taller clips to this height (0 = keep).
        jobs: encode+score jobs run in parallel.
        cache_dir: point cache; None disables caching.
        min_overlap: BD overlap share below which a warning is recorded.
        plots: write RD plots (PNG).
        crops: write side-by-side crops at matched bitrate (PNG).
        command: the command line, recorded in reports.
        bit_depth: None keeps each clip's bit depth (10-bit clips are evaluated at 10 bits); 8
            reads every clip at 8 bits.
        vmaf_device: `cpu` (default), `cuda` or `auto`: VMAF and VMAF-NEG on libvmaf_cuda where
            FFmpeg has it and a CUDA device opens, else CPU libvmaf (one warning line says so);
            `run_eval` replaces it with the device used.
    """

    clips: Sequence[Path]
    out_dir: Path
    codecs: Sequence[str] = DEFAULT_CODECS
    variants: Sequence[str] = DEFAULT_VARIANTS
    ladders: Dict[str, Sequence[float]] = field(default_factory=dict)
    presets: Dict[str, str] = field(default_factory=dict)
    frames: int = 16
    max_height: int = 540
    jobs: int = 2
    cache_dir: Optional[Path] = None
    min_overlap: float = 0.5
    plots: bool = True
    crops: bool = True
    command: str = ""
    bit_depth: Optional[int] = None
    vmaf_device: str = "cpu"

    def __post_init__(self) -> None:
        self.clips = [Path(c) for c in self.clips]
        self.out_dir = Path(self.out_dir)
        if not self.clips:
            raise UsageError("no clips to evaluate")
        if self.frames < 1:
            raise UsageError(f"frames must be >= 1, got {self.frames}")
        if self.jobs < 1:
            raise UsageError(f"jobs must be >= 1, got {self.jobs}")
        if self.max_height < 0 or self.max_height % 2:
            raise UsageError(f"max-height must be 0 or a positive even number, got {self.max_height}")
        for c in self.codecs:
            get_codec(c)
        variants = [v for v in self.variants]
        for v in variants:
            _codecs.get_variant(v)
        if ANCHOR not in variants:
            variants.insert(0, ANCHOR)
        self.variants = list(dict.fromkeys(variants))
        for name, ladder in self.ladders.items():
            get_codec(name)
            if len(ladder) < 2:
                raise UsageError(f"ladder for {name} needs >= 2 rate points, got {list(ladder)}")
        if self.bit_depth not in (None, 8, 10):
            raise UsageError(f"bit-depth must be 8 or 10, got {self.bit_depth}")
        if not 0.0 <= self.min_overlap <= 1.0:
            raise UsageError(f"min-overlap must be in [0, 1], got {self.min_overlap}")
        if self.vmaf_device not in VMAF_DEVICES:
            raise UsageError(f"vmaf-device must be one of {', '.join(VMAF_DEVICES)}, got {self.vmaf_device!r}")

    def ladder(self, codec: str) -> Tuple[float, ...]:
        """Rate values for `codec` (override or default)."""
        return tuple(float(v) for v in self.ladders.get(codec, get_codec(codec).ladder))

    def preset(self, codec: str) -> str:
        """Preset for `codec` (override or default)."""
        return self.presets.get(codec, get_codec(codec).preset)


@dataclass
class ClipInfo:
    """A prepared clip: its reference file and geometry."""

    name: str
    path: str
    reference: str
    width: int
    height: int
    fps: float
    frames: int
    color_range: str
    key: str
    bit_depth: int = 8


@dataclass
class EvalResult:
    """Everything the reports need (JSON-able through `to_dict`)."""

    config: Dict
    tool_versions: Dict[str, str]
    model: Dict[str, Optional[str]]
    clips: List[ClipInfo]
    points: List[Dict]
    bd: List[Dict]
    summary: List[Dict]
    warnings: List[str]
    elapsed_s: float

    def to_dict(self) -> Dict:
        """Plain dict with a fixed schema (name, description, results...)."""
        return {
            "name": "preedit-eval",
            "description": f"rate-distortion evaluation, harness v{EVAL_VERSION}; tools: "
            + "; ".join(f"{k}={v}" for k, v in self.tool_versions.items()),
            "config": self.config,
            "tool_versions": self.tool_versions,
            "model": self.model,
            "clips": [asdict(c) for c in self.clips],
            "points": self.points,
            "bd": self.bd,
            "summary": self.summary,
            "warnings": self.warnings,
            "elapsed_s": self.elapsed_s,
        }


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _probe_range(clip: Path) -> str:
    """`full` for full-range (yuvj / color_range=pc) video streams, else `limited`."""
    if clip.suffix.lower() in (".yuv", ".y4m"):
        return "limited"
    try:
        import av  # lazy: optional dependency

        with av.open(str(clip)) as c:
            s = c.streams.video[0]
            fmt = s.codec_context.pix_fmt or ""
            rng = str(getattr(s.codec_context, "color_range", ""))
            return "full" if fmt.startswith("yuvj") or rng in ("2", "ColorRange.JPEG", "JPEG") else "limited"
    except Exception:  # probing is informational only
        return "unknown"


def prepare_clip(clip: Path, cfg: EvalConfig, work: Path) -> ClipInfo:
    """Write (or reuse) the reference .y4m of `clip` and return its description."""
    st = clip.stat()
    depth = min(cfg.bit_depth or 10, source_bit_depth(clip))
    # An 8-bit reference keeps the key it had before 10-bit references existed (caches stay valid).
    key = _key("ref", EVAL_VERSION, str(clip.resolve()), st.st_size, st.st_mtime_ns, cfg.frames, cfg.max_height,
               *((["bits", depth],) if depth != 8 else ()))
    ref = work / "refs" / f"{clip.stem}-{key}.y4m"
    ref.parent.mkdir(parents=True, exist_ok=True)
    if not ref.is_file():
        tmp = ref.with_suffix(".part.y4m")
        run_command(build_reference_cmd(clip, tmp, frames=cfg.frames, max_height=cfg.max_height, bit_depth=depth),
                    error=InputError, what=f"reading {clip.name}")  # fmt: skip
        tmp.replace(ref)
    line = fh_line(ref)
    header = parse_header(line.rstrip(b"\n"))
    n = (ref.stat().st_size - len(line)) // (header.frame_bytes() + len(b"FRAME\n"))
    if n < 1:
        raise InputError(f"{clip.name}: no frames decoded")
    return ClipInfo(clip.stem, str(clip), str(ref), header.width, header.height, header.fps, int(n),
                    _probe_range(clip), key, header.bit_depth)  # fmt: skip


def fh_line(path: Path) -> bytes:
    """The header line (with newline) of a y4m file."""
    with open(path, "rb") as fh:
        return fh.readline()


@dataclass(frozen=True)
class PointJob:
    """One encode+score job."""

    clip: str
    codec: str
    variant: str
    value: float
    model_qp: Optional[float]
    src: str
    reference: str
    frames: int
    fps: float
    width: int
    height: int
    key: str
    cacheable: bool
    bit_depth: int = 8  # the encode's (the reference's, or the variant's own)
    score_bits: int = 8  # the reference's: what every variant of the clip is scored at


def _point_tools(tools: Dict[str, str], codec: str) -> Dict[str, str]:
    """Tool versions that can change one point: FFmpeg, libvmaf (and libvmaf_cuda when used) and that point's encoder only."""
    return {k: v for k, v in tools.items() if k in ("ffmpeg", "libvmaf", "vmaf_models", "vmaf_device", codec)}


def plan_jobs(clips: Sequence[ClipInfo], cfg: EvalConfig, preedited: Dict[Tuple[str, float], str],
              model_hash: Optional[str], tools: Dict[str, str]) -> List[PointJob]:  # fmt: skip
    """All (clip x codec x variant x rate) jobs with their cache keys (pure)."""
    jobs = []
    for clip in clips:
        for cname in cfg.codecs:
            codec = get_codec(cname)
            for vname in cfg.variants:
                variant = _codecs.get_variant(vname)
                for value in cfg.ladder(cname):
                    qp = model_qp(codec.family, value, qp_range=QP_RANGE) if variant.preedited else None
                    src = preedited[(clip.key, qp)] if variant.preedited else clip.reference
                    depth = variant.bit_depth or clip.bit_depth
                    key = _key("point", EVAL_VERSION, clip.key, cname, cfg.preset(cname), vname, value,
                               variant.vf, list(codec.tune_args) if variant.tune else None,
                               model_hash if variant.preedited else None, qp,
                               _point_tools(tools, cname),
                               *((["bits", depth],) if depth != 8 else ()))  # fmt: skip
                    jobs.append(PointJob(clip.name, cname, vname, value, qp, src, clip.reference, clip.frames,
                                         clip.fps, clip.width, clip.height, key, model_hash is not None or not variant.preedited,
                                         depth, clip.bit_depth))  # fmt: skip
    return jobs


def run_point(job: PointJob, cfg: EvalConfig, work: Path) -> Dict:
    """Encode, measure the bitstream, score it against the reference; cached by `job.key`."""
    codec = get_codec(job.codec)
    variant = _codecs.get_variant(job.variant)
    pdir = work / "points"
    pdir.mkdir(parents=True, exist_ok=True)
    result_path = pdir / f"{job.key}.json"
    bitstream = pdir / f"{job.key}{bitstream_suffix(codec)}"
    if job.cacheable and result_path.is_file() and bitstream.is_file():
        rec = json.loads(result_path.read_text())
        rec["cached"] = True
        return rec
    t0 = time.perf_counter()
    tmp = bitstream.with_name(bitstream.stem + ".part" + bitstream.suffix)
    cmd = ffmpeg_argv(codec, Path(job.src), tmp, job.value, preset=cfg.preset(job.codec),
                      vf=variant.vf, tune=variant.tune, bit_depth=job.bit_depth)  # fmt: skip
    run_command(cmd, what=f"{job.codec} encode of {job.clip} ({job.variant}, {job.value:g})")
    tmp.replace(bitstream)
    encode_s = time.perf_counter() - t0
    data = bitstream.read_bytes()
    nbytes = _codecs.video_bytes(data, codec.family)
    t1 = time.perf_counter()
    scores = score(bitstream, Path(job.reference), expect_frames=job.frames, size=(job.width, job.height),
                   bit_depth=job.score_bits, vmaf_device=cfg.vmaf_device)
    rec = {
        "clip": job.clip, "codec": job.codec, "variant": job.variant, "value": job.value,
        "model_qp": job.model_qp, "frames": scores.frames, "fps": job.fps,
        "bytes": nbytes, "file_bytes": len(data), "pix_fmt": _codecs.bitstream_pix_fmt(bitstream),
        "score_bits": job.score_bits,
        "rate_kbps": nbytes * 8.0 * job.fps / scores.frames / 1000.0,
        **{k: scores.metrics[k] for k in METRICS},
        "encode_s": encode_s, "score_s": time.perf_counter() - t1,
        "bitstream": str(bitstream), "key": job.key,
    }  # fmt: skip
    if job.cacheable:
        result_path.write_text(json.dumps(rec, indent=1))
    rec["cached"] = False
    return rec


def _available_codecs(cfg: EvalConfig, notes: List[str]) -> List[str]:
    out = []
    for c in cfg.codecs:
        if get_codec(c).hardware and not _codecs.encoder_available(c):
            notes.append(f"{c} skipped: a test encode failed (no NVENC engine or driver here; H100/A100-class GPUs have none)")
            continue
        out.append(c)
    return out


def preedit_y4m(engine: Engine, src: Path, dst: Path, qp: float, batch: int = 4) -> Path:
    """Pre-edit every frame of a 4:2:0 `src` .y4m into `dst` (same header).

    A 10-bit `src` goes the way `preedit run` takes it: the model sees the 8-bit view and its edit
    is applied at 10 bits (`preedit.client.bitdepth`), so untouched pixels keep all 10 bits.
    """
    from preedit.client import bitdepth

    header, frames = read_y4m(src)
    ten = header.bit_depth == 10
    out = []
    for chunk in iter_batches(frames, batch):
        nv12 = np.stack([bitdepth.nv12_view(p) if ten else i420_to_nv12(*p) for p in chunk])
        edited = engine.run(nv12, qp)
        if edited.shape != nv12.shape or edited.dtype != np.uint8:
            raise ModelError(f"pre-editor returned {edited.dtype} {edited.shape}, expected uint8 {nv12.shape}")
        if ten:
            out.extend(bitdepth.edit_planes10(p, e) for p, e in zip(chunk, edited))
        else:
            out.extend(nv12_to_i420(e) for e in edited)
    return write_y4m(dst, header, out)


def run_eval(cfg: EvalConfig, editor=None, *, progress: bool = True) -> EvalResult:
    """Run the whole evaluation (see module docstring) and return the collected results.

    Args:
        cfg: evaluation config.
        editor: a `preedit.engines.Engine` (with `model_hash`); required when `preedit` is a variant.
        progress: show a tqdm progress bar on stderr.
    """
    t_start = time.perf_counter()
    if "preedit" in cfg.variants and editor is None:
        raise UsageError("the preedit variant needs a pre-editor (model repository, --checkpoint or --url)")
    notes: List[str] = []
    cfg.codecs = _available_codecs(cfg, notes)
    if not cfg.codecs:
        raise UsageError("no usable codec left; choose from " + ", ".join(CODECS))
    requested_vmaf = cfg.vmaf_device
    cfg.vmaf_device, vmaf_note = resolve_vmaf_device(requested_vmaf)
    if vmaf_note:
        log.warning("%s", vmaf_note)
        notes.append(vmaf_note)
    tools = dict(tool_versions())
    if cfg.vmaf_device == "cuda":  # only then: CPU-scored points keep their cache keys
        tools["vmaf_device"] = "libvmaf_cuda (vmaf, vmaf_neg)"
    for c in cfg.codecs:
        tools[c] = _codecs.encoder_version(c)
    model_hash = getattr(editor, "model_hash", None) if editor is not None else None
    own_tmp = None
    if cfg.cache_dir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="preedit_eval_")
        work = Path(own_tmp.name)
    else:
        work = Path(cfg.cache_dir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        clips = [prepare_clip(c, cfg, work) for c in cfg.clips]
        for c in clips:
            if c.frames < cfg.frames:
                notes.append(f"{c.name}: only {c.frames} frames available (asked {cfg.frames})")
        preedited: Dict[Tuple[str, float], str] = {}
        if "preedit" in cfg.variants:
            for clip in clips:
                for cname in cfg.codecs:
                    codec = get_codec(cname)
                    for value in cfg.ladder(cname):
                        qp = model_qp(codec.family, value, qp_range=QP_RANGE)
                        if (clip.key, qp) in preedited:
                            continue
                        pkey = _key("preedit", EVAL_VERSION, clip.key, model_hash, qp)
                        dst = work / "preedited" / f"{clip.name}-{pkey}.y4m"
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        if model_hash is None or not dst.is_file():
                            preedit_y4m(editor, Path(clip.reference), dst, qp)
                        preedited[(clip.key, qp)] = str(dst)
        jobs = plan_jobs(clips, cfg, preedited, model_hash, tools)
        points = _run_jobs(jobs, cfg, work, progress)
        bd_rows, bd_notes = compute_bd(points, cfg.min_overlap)
        notes.extend(bd_notes)
        config = {
            "clips": [str(c) for c in cfg.clips], "codecs": list(cfg.codecs), "variants": list(cfg.variants),
            "ladders": {c: list(cfg.ladder(c)) for c in cfg.codecs},
            "presets": {c: cfg.preset(c) for c in cfg.codecs}, "frames": cfg.frames,
            "max_height": cfg.max_height, "jobs": cfg.jobs, "min_overlap": cfg.min_overlap,
            "command": cfg.command, "bit_depth": cfg.bit_depth,
            "vmaf_device": cfg.vmaf_device, "vmaf_device_requested": requested_vmaf,
            "variant_descriptions": {v: _codecs.get_variant(v).description for v in cfg.variants},
            "tune_descriptions": {c: get_codec(c).tune_label for c in cfg.codecs},
        }  # fmt: skip
        model = {
            "hash": model_hash,
            "source": getattr(editor, "source", None) if editor is not None else None,
            "description": getattr(editor, "description", None) if editor is not None else None,
        }
        result = EvalResult(config, tools, model, clips, points, bd_rows, summarize(bd_rows), notes,
                            time.perf_counter() - t_start)  # fmt: skip
        if cfg.plots or cfg.crops:
            eval_report.write_figures(result, cfg.out_dir, plots=cfg.plots, crops=cfg.crops)
        return result
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()


def _run_jobs(jobs: Sequence[PointJob], cfg: EvalConfig, work: Path, progress: bool) -> List[Dict]:
    from tqdm import tqdm  # lazy: tqdm

    points: List[Dict] = []
    bar = tqdm(total=len(jobs), desc="eval points", unit="pt", disable=not progress, dynamic_ncols=True)
    try:
        with ThreadPoolExecutor(max_workers=min(cfg.jobs, os.cpu_count() or 1, len(jobs) or 1)) as pool:
            futures = {pool.submit(run_point, j, cfg, work): j for j in jobs}
            for fut in as_completed(futures):
                points.append(fut.result())
                bar.update(1)
    finally:
        bar.close()
    order = {(j.clip, j.codec, j.variant, j.value): i for i, j in enumerate(jobs)}
    points.sort(key=lambda p: order[(p["clip"], p["codec"], p["variant"], p["value"])])
    return points
