"""Capability table and per-stage back-end decisions (pure; no GPU needed)."""

from __future__ import annotations

import pytest

from preedit.client.backends import plan_backends
from preedit.client.hardware import architecture, capabilities, documented_codecs, merge_caps
from preedit.errors import UsageError


def _caps(name, cc, **over):
    doc = documented_codecs(cc, name)
    caps = {"cuda": True, "device": {"name": name, "compute_capability": list(cc)}, "video_stages_usable": True, **doc}
    caps.update(over)
    return caps


H100 = ("NVIDIA H100 80GB HBM3", (9, 0))
L4 = ("NVIDIA L4", (8, 9))
A10 = ("NVIDIA A10", (8, 6))
A100 = ("NVIDIA A100-SXM4-80GB", (8, 0))
T4 = ("Tesla T4", (7, 5))


@pytest.mark.parametrize("gpu,arch", [(H100, "hopper"), (L4, "ada"), (A10, "ampere"), (A100, "ga100"), (T4, "turing"),
                                      (("NVIDIA RTX PRO 6000", (12, 0)), "blackwell")])
def test_architecture_maps_compute_capability(gpu, arch):
    assert architecture(gpu[1], gpu[0]) == arch


@pytest.mark.parametrize("gpu", [H100, A100, ("NVIDIA H200", (9, 0))])
def test_documented_codecs_have_no_nvenc_and_no_av1_decode_when_gpu_is_hopper_or_ga100(gpu):
    table = documented_codecs(gpu[1], gpu[0])
    assert table["nvenc"] == [] and "av1" not in table["nvdec"]


def test_documented_codecs_have_av1_nvenc_only_from_ada_on():
    assert "av1" in documented_codecs(L4[1], L4[0])["nvenc"]
    assert "av1" not in documented_codecs(A10[1], A10[0])["nvenc"]
    assert "hevc" in documented_codecs(T4[1], T4[0])["nvenc"]


def test_merge_caps_never_adds_nvenc_the_table_rules_out():
    merged = merge_caps({"nvdec": ["h264", "hevc"], "nvenc": []}, {"h264": {}}, {"hevc": {"num_encoder_engines": 1}})
    assert merged == {"nvdec": ["h264"], "nvenc": []}


def test_plan_puts_decode_and_preedit_on_gpu_and_encode_on_cpu_when_gpu_is_h100():
    plan = plan_backends("auto", _caps(*H100), input_codec="h264", output_codec="hevc")
    assert (plan.decode, plan.preedit, plan.encode) == ("cuda", "cuda", "cpu")
    assert len(plan.reasons) == 1 and "NVENC" in plan.reasons[0] and "H100" in plan.reasons[0]


def test_plan_runs_every_stage_on_gpu_when_gpu_is_l4_and_codec_is_av1():
    plan = plan_backends("cuda", _caps(*L4), input_codec="h264", output_codec="av1")
    assert (plan.decode, plan.preedit, plan.encode) == ("cuda", "cuda", "cuda") and plan.reasons == []


def test_plan_falls_back_for_av1_encode_only_when_gpu_is_ampere():
    plan = plan_backends("auto", _caps(*A10), input_codec="h264", output_codec="av1")
    assert (plan.decode, plan.encode) == ("cuda", "cpu")
    plan = plan_backends("auto", _caps(*A10), input_codec="h264", output_codec="hevc")
    assert plan.encode == "cuda"


def test_plan_decodes_on_cpu_when_input_codec_is_not_nvdec_capable():
    plan = plan_backends("auto", _caps(*H100), input_codec="av1", output_codec="hevc")
    assert plan.decode == "cpu" and any("av1" in r for r in plan.reasons)
    assert plan_backends("auto", _caps(*L4), input_codec="vp8", output_codec="hevc").decode == "cpu"
    assert plan_backends("auto", _caps(*L4), input_codec="h264", output_codec="hevc", input_bit_depth=10).decode == "cpu"


def test_plan_keeps_everything_on_cpu_when_there_is_no_cuda():
    plan = plan_backends("auto", {"cuda": False, "reasons": ["no CUDA device"]}, input_codec="h264", output_codec="hevc")
    assert not plan.any_cuda and "no CUDA device" in plan.reasons[0]


def test_plan_moves_video_stages_to_cpu_when_pynvvideocodec_is_missing():
    plan = plan_backends("auto", _caps(*L4, video_stages_usable=False), input_codec="h264", output_codec="hevc")
    assert (plan.decode, plan.preedit, plan.encode) == ("cpu", "cuda", "cpu")


def test_plan_raises_when_strict_and_a_stage_would_fall_back():
    with pytest.raises(UsageError, match="NVENC"):
        plan_backends("cuda", _caps(*H100), input_codec="h264", output_codec="hevc", strict=True)
    with pytest.raises(UsageError):
        plan_backends("cuda", {"cuda": False}, strict=True)


def test_plan_rejects_unknown_device_with_valid_choices():
    with pytest.raises(UsageError, match="cpu, cuda, auto"):
        plan_backends("gpu", {})


def test_plan_is_all_cpu_when_device_is_cpu_even_with_gpu():
    plan = plan_backends("cpu", _caps(*L4), input_codec="h264", output_codec="hevc")
    assert not plan.any_cuda and plan.reasons == []


def test_capabilities_report_no_cuda_cleanly_when_forced_to_cpu(monkeypatch):
    monkeypatch.setenv("PREEDIT_FORCE_CPU", "1")
    capabilities.cache_clear()
    try:
        caps = capabilities(0)
    finally:
        capabilities.cache_clear()
    assert caps["cuda"] is False and caps["nvenc"] == [] and caps["reasons"]
