"""`preedit <subcommand>`: one console script; each subcommand module has `setup_args` + `main(argv)`.

Subcommand modules are imported lazily, so `preedit doctor` never imports torch-tensorrt and
`preedit run` never imports the training stack.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable, Dict, List, Optional, Tuple

from preedit import __version__
from preedit.errors import PreeditError
from preedit.heap import reuse_large_buffers
from preedit.sched import forbid_realtime
from preedit.signals import Terminated, terminate_like_sigint

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# name -> (module, one-line help). Each module defines `setup_args(parser)` and `main(argv)`.
SUBCOMMANDS: Dict[str, Tuple[str, str]] = {
    "run": ("preedit.client.run", "pre-edit and encode videos through Triton"),
    "ladder": ("preedit.client.ladder", "HLS / DASH bitrate ladder from one decode (closed GOPs, VBV, master.m3u8, manifest.mpd)"),
    "join": ("preedit.client.join", "concatenate `run --segment` outputs by stream copy, with the title's audio"),
    "serve": ("preedit.serve", "start the embedded Triton server on the model repository"),
    "export": ("preedit.export.cli", "export a checkpoint into the Triton model repository"),
    "train": ("preedit.training.cli", "train the pre-editor through the differentiable codec proxy"),
    "proxy-check": ("preedit.training.proxy_check", "rank correlation of the codec proxy with real encoders"),
    "qp-calibrate": ("preedit.training.qp_calibration", "fit the AV1 quantizer -> model QP map on training clips"),
    "eval": ("preedit.perf.rd.cli", "rate-distortion evaluation and BD-rate report"),
    "perf": ("preedit.perf.speed.cli", "perf_analyzer sweeps against the served model"),
    "bench": ("", "benchmarks: pipeline (in-process vs Triton fps; the default) | multistream | model-analysis | scale-out | ladder | soak"),
    "int8": ("", "deterministic int8 model: measure (backend pairs) | search (schemes) | device | quality"),
    "dashboards": ("preedit.perf.speed.dashboards", "write the Prometheus scrape config and Grafana dashboard"),
    "doctor": ("preedit.perf.speed.gpu_probe", "report what this machine has (GPU, codecs, Triton); --bench measures the GPU stages"),
    "verify": ("preedit.export.int8.verify", "check this machine reproduces the deterministic model bit for bit"),
}

# Subcommand groups: `preedit <group> <name> ...` -> module (first name is the default).
GROUPS: Dict[str, Dict[str, str]] = {
    "bench": {"pipeline": "preedit.perf.speed.bench", "multistream": "preedit.perf.speed.multistream",
              "model-analysis": "preedit.perf.speed.model_analysis", "scale-out": "preedit.perf.speed.scale_out",
              "ladder": "preedit.perf.rd.ladder", "soak": "preedit.perf.speed.soak"},
    "int8": {"measure": "preedit.export.int8.check", "search": "preedit.export.int8.search",
             "device": "preedit.export.int8.device", "quality": "preedit.perf.rd.int8_quality"},
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="preedit", description="Deep pre-editing for video delivery.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="<subcommand>")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def call_main(prog: str, main_fn: Callable[[List[str]], Optional[int]], argv: List[str]) -> int:
    """Call a `main(argv)`; expected faults become one line on stderr and their exit code."""
    try:
        with terminate_like_sigint():  # SIGTERM / SIGHUP end the run like Ctrl-C
            return int(main_fn(argv) or 0)
    except PreeditError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated as exc:
        print(f"{prog}: terminated ({exc.args[0]}; the output so far is finalised)", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def script_main(prog: str, main_fn: Callable[[List[str]], Optional[int]]) -> int:
    """Entry point of `python -m preedit.<module>` tools: CLI logging and error handling."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return call_main(prog, main_fn, sys.argv[1:])


def run_subcommand(name: str, argv: List[str]) -> int:
    """Import the subcommand module and call its `main(argv)`; map expected faults to exit codes."""
    module_name, _ = SUBCOMMANDS[name]
    prog = f"preedit {name}"
    if name in GROUPS:
        group = GROUPS[name]
        if argv and argv[0] in group:
            sub, argv = argv[0], argv[1:]
        elif name == "bench" and (not argv or argv[0].startswith("-")):
            sub = "pipeline"  # `preedit bench [options]` as before
        else:
            print(f"usage: {prog} {{{','.join(group)}}} [options]", file=sys.stderr)
            return 2
        module_name, prog = group[sub], f"{prog} {sub}"
    module = importlib.import_module(module_name)
    return call_main(prog, module.main, argv)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    forbid_realtime()  # before any thread: SVT-AV1 as root would run ~40 threads at SCHED_FIFO 99
    reuse_large_buffers()  # frame-sized buffers from the heap, not fresh pages every frame
    parser = _build_parser()
    # Split global options from the subcommand's own arguments.
    idx = next((i for i, a in enumerate(argv) if a in SUBCOMMANDS), None)
    head, tail = (argv, []) if idx is None else (argv[: idx + 1], argv[idx + 1 :])
    args = parser.parse_args(head)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=LOG_FORMAT,
    )
    if args.version:
        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    return run_subcommand(args.command, tail)


if __name__ == "__main__":
    raise SystemExit(main())
