"""`preedit doctor` on a machine without a GPU (and its JSON form)."""

from __future__ import annotations

import json

import pytest
import torch

from preedit.client.hardware import capabilities
from preedit.doctor import collect, render
from preedit.perf.speed.gpu_probe import main
from preedit.errors import UsageError

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU report; this machine has CUDA")


@no_cuda
def test_doctor_reports_no_gpu_cleanly_when_machine_has_none(capsys):
    assert main(["--no-probe"]) == 0
    out = capsys.readouterr().out
    assert "GPU: none" in out and "every stage runs on CPU" in out
    assert "TensorRT:" in out and "Triton:" in out


@no_cuda
def test_doctor_raises_usage_error_when_gpu_required_but_absent(capsys):
    with pytest.raises(UsageError, match="CUDA"):
        main(["--no-probe", "--require-gpu"])


def test_doctor_json_is_parseable_and_lists_stages(capsys):
    assert main(["--no-probe", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["gpu"]) >= {"cuda", "nvdec", "nvenc", "reasons"}
    assert "torch" in report["packages"] and "encoders" in report["ffmpeg"]
    assert isinstance(report["cuda_shm_client"]["usable"], bool)


def test_doctor_reports_unreachable_triton_without_failing():
    report = collect(capabilities, url="127.0.0.1:9", probe=False)
    assert report["triton"]["reachable"] is False
    assert "not reachable at 127.0.0.1:9" in render(report)


def test_doctor_render_shows_missing_nvenc_when_gpu_has_none():
    report = collect(capabilities, probe=False)
    report["gpu"] = {"cuda": True, "device": {"index": 0, "name": "NVIDIA H100 80GB HBM3", "compute_capability": [9, 0],
                                              "memory_gib": 79.2}, "architecture": "hopper", "nvdec": ["h264", "hevc"],
                     "nvenc": [], "source": "documented", "reasons": ["NVIDIA H100 80GB HBM3 (hopper) has no NVENC"]}
    text = render(report)
    assert "NVENC: none" in text and "NVDEC: h264, hevc" in text and "hopper" in text
