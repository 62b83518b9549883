"""deploy/gpu_check.sh (issue 18): `--list` names every step; each command it would run on a GPU
host must exist here and parse (scripts present, CLI subcommands and flags known, -c code compiles),
so the one prepared check cannot die on a typo when a GPU is finally lent."""

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST_TOOLS = {"nvidia-smi"}  # only on a GPU host


def _steps():
    out = subprocess.run(["bash", str(ROOT / "deploy/gpu_check.sh"), "--list"], cwd=ROOT, capture_output=True,
                         text=True, check=True, env={"PY": sys.executable, "PATH": "/usr/bin:/bin"}).stdout
    return [line.split("\t") for line in out.splitlines()]


def _help(args):
    return subprocess.run([sys.executable, *args, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_gpu_check_script_parses_and_fits_eight_minutes():
    subprocess.run(["bash", "-n", str(ROOT / "deploy/gpu_check.sh")], check=True)
    steps = _steps()
    names = {s[0] for s in steps}
    assert {"needs_cuda_tests", "nvdec_nvenc_probe_and_cuda_bench", "cuda_shm_round_trip", "served_pipeline_cuda",
            "url_input_nvdec", "vmaf_cuda_vs_cpu"} <= names
    assert sum(int(s[1]) for s in steps) <= 480


def test_every_gpu_check_command_exists_and_its_flags_parse():
    for name, _, cmd in _steps():
        argv = shlex.split(cmd)
        if argv[0] == "env":
            argv = [a for a in argv[1:] if "=" not in a]
        if argv[0] in HOST_TOOLS:
            continue
        assert argv[0] == sys.executable, f"{name}: runs {argv[0]}, not the project's python"
        rest = argv[1:]
        if rest[0] == "-c":
            compile(rest[1], name, "exec")
        elif rest[:2] == ["-m", "pytest"]:
            marker = rest[rest.index("-m", 2) + 1]
            assert f'"{marker}:' in (ROOT / "pyproject.toml").read_text(), f"{name}: marker {marker} unregistered"
        elif rest[:2] == ["-m", "preedit.cli"]:
            sub = rest[2]
            h = _help(["-m", "preedit.cli", sub])
            assert h.returncode == 0, f"{name}: preedit {sub} unknown"
            for flag in (a for a in rest[3:] if a.startswith("--")):
                assert flag in h.stdout, f"{name}: preedit {sub} has no {flag}"
        else:
            script = ROOT / rest[0]
            assert script.is_file(), f"{name}: {rest[0]} missing"
            h = _help([rest[0]])
            assert h.returncode == 0, f"{name}: {rest[0]} --help failed: {h.stderr[-300:]}"
            for flag in (a for a in rest[1:] if a.startswith("--")):
                assert flag in h.stdout, f"{name}: {rest[0]} has no {flag}"
