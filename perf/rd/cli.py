"""`preedit eval`: rate-distortion evaluation and BD-rate report (see `preedit.perf.rd.eval`).

```
 clips ─> [source | pre-edited | unsharp | hqdn3d | codec tune | 8bit] x codecs x CRF ladder
       ─> libvmaf (VMAF, VMAF-NEG, VMAF v1, PSNR, MS-SSIM) + XPSNR vs the original source
          (at the source's bit depth: a 10-bit clip is encoded and scored at 10 bits)
       ─> BD-rate / BD-quality per clip ─> OUT/{eval.json, points.csv, bd.csv, summary.csv, report.md, *.png}
```

Precedence: command line > `--config` YAML file > defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional

from preedit.codecs import CODECS
from preedit.engines import OrtEngine, TorchEngine, TritonEngine, sha256_file
from preedit.errors import ModelError, UsageError
from preedit.paths import REPO_ROOT, cache_dir, clips_dir, model_repository
from preedit.perf.rd import eval as ev, report as eval_report
from preedit.perf.rd.sources import resolve_clips
from preedit.perf.rd.variants import VARIANTS

log = logging.getLogger(__name__)

_YAML_KEYS = {"clips", "codecs", "variants", "ladders", "presets", "frames", "max_height", "jobs",
              "min_overlap", "out", "cache", "checkpoint", "url", "model_repository", "model_name", "bit_depth",
              "vmaf_device"}  # fmt: skip


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register `preedit eval` options."""
    parser.add_argument("clips", nargs="*", help="clip files, folders, or names under the shared clip folder "
                        "(default: the held-out clips of preedit.splits under that folder)")
    parser.add_argument("--codecs", default=None,
                        help=f"comma list from {','.join(CODECS)} (default: all; NVENC only when it works)")
    parser.add_argument("--variants", default=None, help=f"comma list from {','.join(VARIANTS)} (default: all)")
    parser.add_argument("--ladder", action="append", default=[], metavar="CODEC=V1,V2,...",
                        help="CRF/CQ rate points for a codec (repeatable; >= 5 recommended)")
    parser.add_argument("--preset", action="append", default=[], metavar="CODEC=PRESET", help="encoder preset")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip, from the start (default 16)")
    parser.add_argument("--max-height", type=int, default=None, help="downscale taller clips (default 540; 0 keeps)")
    parser.add_argument("--jobs", type=int, default=None, help="parallel encode+score jobs (default 2)")
    parser.add_argument("--bit-depth", type=int, choices=(8, 10), default=None,
                        help="8 reads every clip at 8 bits (default: each clip's own; 10-bit clips are encoded "
                             "and scored at 10 bits, and the 8bit variant is their 8-bit alternative)")
    parser.add_argument("--min-overlap", type=float, default=None, help="BD overlap share that warns (default 0.5)")
    parser.add_argument("--model-repository", type=Path, default=None,
                        help="model repository holding <name>/1/model.onnx + contract.json (default: the project's)")
    parser.add_argument("--model-name", default=None, help="model name in the repository / on Triton (default preedit)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="pre-edit with a .pt checkpoint instead")
    parser.add_argument("--url", default=None, help="pre-edit through a served model (Triton gRPC host:port)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default runs/eval)")
    parser.add_argument("--cache", type=Path, default=None, help="point cache folder (default .cache/eval)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the point cache")
    parser.add_argument("--no-plots", action="store_true", help="skip RD plots")
    parser.add_argument("--no-crops", action="store_true", help="skip matched-bitrate crops")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--vmaf-device", choices=["cpu", "cuda", "auto"], default=None,
                        help="where VMAF/VMAF-NEG run: cpu (default), cuda or auto = libvmaf_cuda when this "
                             "FFmpeg has it and a CUDA device opens, else CPU libvmaf (says so); "
                             "VMAF v1, PSNR, MS-SSIM and XPSNR always run on CPU")
    parser.add_argument("--config", type=Path, default=None, help="YAML file with any of: " + ", ".join(sorted(_YAML_KEYS)))
    return parser


def _pairs(items: List[str], what: str) -> Dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--{what} expects CODEC=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _floats(text: str, codec: str) -> List[float]:
    try:
        return [float(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        raise UsageError(f"ladder for {codec} must be comma-separated numbers, got {text!r}") from None


def _load_yaml(path: Optional[Path]) -> Dict:
    if path is None:
        return {}
    if not path.is_file():
        raise UsageError(f"config file {path} not found")
    import yaml  # lazy: yaml

    data = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(data) - _YAML_KEYS)
    if unknown:
        log.warning("ignoring unknown keys in %s: %s (valid: %s)", path, unknown, sorted(_YAML_KEYS))
    return {k: v for k, v in data.items() if k in _YAML_KEYS}


def _list(value) -> Optional[List[str]]:
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def make_editor(args_model_repo: Optional[Path], model_name: str, checkpoint: Optional[Path], url: Optional[str]):
    """The pre-editor chosen on the command line (checkpoint > url > model repository ONNX)."""
    if checkpoint is not None and url is not None:
        raise UsageError("pass at most one of --checkpoint and --url")
    if checkpoint is not None:
        return TorchEngine.from_checkpoint(checkpoint)
    repo = Path(args_model_repo) if args_model_repo else model_repository()
    onnx = repo / model_name / "1" / "model.onnx"
    if url is not None:
        model_hash = None
        if onnx.is_file():
            model_hash = sha256_file(onnx)
            log.info("assuming %s serves %s (hash %s)", url, onnx, model_hash[:12])
        return TritonEngine(url, model_name, model_hash=model_hash)
    if not onnx.is_file():
        raise ModelError(f"no ONNX model at {onnx}; run `preedit export` or pass --checkpoint")
    file_hash = sha256_file(onnx)
    description = "onnx"
    contract_path = repo / model_name / "contract.json"
    if contract_path.is_file():
        meta = json.loads(contract_path.read_text())
        recorded = meta.get("model_sha256")
        if recorded and recorded != file_hash:
            log.warning("contract.json hash %s differs from model.onnx %s; using the file's", recorded[:12],
                        file_hash[:12])  # fmt: skip
        description = str(meta.get("source", "onnx"))
    return OrtEngine(onnx, threads=1, model_hash=file_hash, description=description)


def main(argv: Optional[List[str]] = None) -> int:
    """Run `preedit eval`; returns 0 on success (expected faults raise `PreeditError`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = setup_args(argparse.ArgumentParser(prog="preedit eval", description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    y = _load_yaml(args.config)

    clip_args = args.clips or _list(y.get("clips")) or []
    clips = resolve_clips(clip_args, clips_dir())
    codecs = _list(args.codecs) or _list(y.get("codecs")) or list(CODECS)
    variants = _list(args.variants) or _list(y.get("variants")) or list(ev.DEFAULT_VARIANTS)
    ladders = {k: _floats(v if isinstance(v, str) else ",".join(map(str, v)), k)
               for k, v in (y.get("ladders") or {}).items()}  # fmt: skip
    ladders.update({k: _floats(v, k) for k, v in _pairs(args.ladder, "ladder").items()})
    presets = {k: str(v) for k, v in (y.get("presets") or {}).items()}
    presets.update(_pairs(args.preset, "preset"))
    pick = lambda a, key, default: a if a is not None else y.get(key, default)  # noqa: E731
    out_dir = Path(pick(args.out, "out", REPO_ROOT / "runs" / "eval"))
    cache = None if args.no_cache else Path(pick(args.cache, "cache", cache_dir() / "eval"))

    cfg = ev.EvalConfig(
        clips=clips, out_dir=out_dir, codecs=codecs, variants=variants, ladders=ladders, presets=presets,
        frames=int(pick(args.frames, "frames", 16)), max_height=int(pick(args.max_height, "max_height", 540)),
        jobs=int(pick(args.jobs, "jobs", 2)), cache_dir=cache,
        min_overlap=float(pick(args.min_overlap, "min_overlap", 0.5)),
        plots=not args.no_plots, crops=not args.no_crops,
        bit_depth=pick(args.bit_depth, "bit_depth", None),
        vmaf_device=str(pick(args.vmaf_device, "vmaf_device", "cpu")),
        command="preedit eval " + " ".join(shlex.quote(a) for a in argv),
    )  # fmt: skip
    editor = None
    if "preedit" in cfg.variants:
        editor = make_editor(pick(args.model_repository, "model_repository", None),
                             pick(args.model_name, "model_name", "preedit"),
                             pick(args.checkpoint, "checkpoint", None), pick(args.url, "url", None))  # fmt: skip
    result = ev.run_eval(cfg, editor, progress=not args.no_progress)
    paths = eval_report.write_reports(result, out_dir)
    done = sum(1 for p in result.points if not p.get("cached"))
    print(f"preedit eval: {len(result.points)} points ({done} computed, {len(result.points) - done} cached) "
          f"on {len(result.clips)} clips in {result.elapsed_s:.0f} s; report {paths['markdown']}")  # fmt: skip
    # VMAF-NEG, VMAF v1 and the fidelity metrics always printed beside VMAF: a gain only VMAF
    # sees is not a gain.
    order = ("vmaf_neg", "vmaf_v1", "psnr_y", "xpsnr_y", "vmaf")
    for s in sorted(result.summary, key=lambda s: (s["codec"], order.index(s["metric"]) if s["metric"] in order else 99)):
        if s["variant"] == "preedit" and s["metric"] in order:
            print(f"  {s['codec']:10s} {s['metric']:9s} mean BD-rate {s['mean_bd_rate_pchip']:+.2f}% "
                  f"(bad cases {s['bad_cases']}/{s['clips_valid']})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
