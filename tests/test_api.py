"""The Python API (issue 16): `preedit.PreEditor` / `preedit.transcode` on the engine and run seams.

Runs the docs/api.md examples, and checks the API against `preedit run` (identity model == --bypass;
the shipped model through the API == `preedit run -o x.y4m`'s pre-edited frames, bit for bit).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

import preedit
from preedit.cli import main as cli_main
from preedit.errors import UsageError
from preedit.paths import REPO_ROOT
from synthetic import make_clip

DOCS = REPO_ROOT / "docs" / "api.md"


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("api") / "input.mp4", width=128, height=96, frames=10)


def _blocks():
    return re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)


def test_import_is_lazy_and_cheap():
    code = ("import sys, time; t = time.perf_counter(); import preedit; dt = time.perf_counter() - t; "
            "print(dt); print(','.join(m for m in ('torch', 'onnxruntime', 'tritonclient', 'preedit.cli', "
            "'preedit.client', 'preedit.api') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    print(f"import preedit: {float(out[0]):.3f} s")  # reported, not asserted (a timer is not a test)
    assert out[1] == "", f"import preedit loaded {out[1]}"
    assert set(preedit.__all__) >= {"PreEditor", "transcode", "PreeditError", "ServerError"}


def test_help_shows_the_documented_interface():
    out = subprocess.run([sys.executable, "-c", "import preedit; help(preedit.PreEditor)"], capture_output=True,
                         text=True, check=True, env={**os.environ, "PAGER": "cat", "TERM": "dumb"}).stdout
    for word in ("engine", "onnxruntime", "tensorrt", "url", "deterministic", "edit(", "edit_frame", "DLPack",
                 "__enter__"):
        assert word in out, word


def test_bad_arguments_raise_preedit_errors():
    with pytest.raises(UsageError):
        preedit.PreEditor(engine="tensorflow")
    with pytest.raises(UsageError):
        preedit.PreEditor(deterministic=True, model="other")
    with pytest.raises(UsageError):
        preedit.PreEditor(engine="onnxruntime").edit(np.zeros((1, 144, 128), np.uint8))  # not open
    with preedit.PreEditor(engine="onnxruntime") as pre:
        with pytest.raises(UsageError):
            pre.edit(np.zeros((1, 145, 128), np.uint8))
        with pytest.raises(UsageError):
            pre.edit(np.zeros((1, 144, 128), np.float32))
        with pytest.raises(UsageError):
            pre.edit([1, 2, 3])


def test_ort_edit_matches_the_engine_and_preserves_types(small_clip):
    import torch

    from preedit.engines import OrtEngine

    with av.open(str(small_clip)) as c:
        frames = np.stack([f.to_ndarray(format="nv12") for f in c.decode(video=0)])
    engine = OrtEngine(REPO_ROOT / "model_repository" / "preedit" / "1" / "model.onnx", threads=0)
    ref = engine.run(frames, 30.0)
    with preedit.PreEditor(engine="onnxruntime", max_batch=3) as pre:
        out = pre.edit(frames, qp=30)  # split into batches of 3
        assert isinstance(out, np.ndarray) and np.array_equal(out, ref)
        assert not np.array_equal(out, frames), "the shipped model changes frames"
        one = pre.edit(frames[0], qp=30.0)
        assert one.shape == frames[0].shape and np.array_equal(one, ref[0])
        t = pre.edit(torch.from_numpy(frames), qp=30)
        assert isinstance(t, torch.Tensor) and t.device.type == "cpu" and np.array_equal(t.numpy(), ref)

        class FakeDLPack:  # a DLPack producer that is neither NumPy nor torch
            def __init__(self, a):
                self.a = a

            def __dlpack__(self, **kw):
                return self.a.__dlpack__(**kw)

            def __dlpack_device__(self):
                return self.a.__dlpack_device__()

        d = pre.edit(FakeDLPack(frames), qp=30)
        assert np.array_equal(np.from_dlpack(d), ref)

        src = next(iter(av.open(str(small_clip)).decode(video=0)))
        src.pts, src.time_base = 12345, __import__("fractions").Fraction(1, 90000)
        ef = pre.edit_frame(src, qp=30)
        assert (ef.pts, ef.time_base, ef.width, ef.height) == (12345, src.time_base, src.width, src.height)
        assert (ef.color_range, ef.colorspace) == (src.color_range, src.colorspace)
        assert np.array_equal(ef.to_ndarray(format="nv12"), ref[0])


@pytest.mark.needs_triton
@pytest.mark.parametrize("index", [0, 1, 2])
def test_docs_example_runs(index, small_clip, tmp_path, monkeypatch, capsys):
    blocks = _blocks()
    assert len(blocks) == 3
    (tmp_path / "input.mp4").write_bytes(small_clip.read_bytes())
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[index], f"docs/api.md example {index + 1}", "exec"), {"__name__": "__docs__"})
    out = capsys.readouterr()
    if index == 0:
        assert "10 frames edited" in out.out
    if index == 1:
        with av.open("edited.mp4") as c:
            assert sum(1 for _ in c.decode(video=0)) == 10
    if index == 2:
        assert out.out.startswith("10 frames") and "10/10" in out.err


@pytest.mark.needs_triton
def test_identity_model_through_the_api_is_byte_identical_to_bypass(identity_repo, small_clip, tmp_path):
    fast = dict(codec="h264", preset="ultrafast", crf=23)
    seen = []
    s = preedit.transcode(small_clip, tmp_path / "api.mp4", model_repository=identity_repo,
                          progress=lambda n, total: seen.append((n, total)), **fast)
    ref = tmp_path / "ref.mp4"
    assert cli_main(["run", str(small_clip), "-o", str(ref), "--bypass", "--codec", "h264", "--preset",
                     "ultrafast", "--crf", "23"]) == 0
    assert (tmp_path / "api.mp4").read_bytes() == ref.read_bytes()
    assert s["frames"] == 10 and s["bypassed_frames"] == 0 and s["model"] == "preedit"
    assert seen == [(n, 10) for n in range(1, 11)]
    # PreEditor over the same identity model returns the frames unchanged
    with av.open(str(small_clip)) as c:
        frames = np.stack([f.to_ndarray(format="nv12") for f in c.decode(video=0)])
    with preedit.PreEditor(engine="triton", model_repository=identity_repo) as pre:
        assert np.array_equal(pre.edit(frames, qp=23), frames)


@pytest.mark.needs_triton
def test_shipped_model_through_the_api_equals_preedit_run(small_clip, tmp_path):
    from preedit.client.decode import PyAvDecoder
    from preedit.quality.y4m import read_y4m

    y4m = tmp_path / "run.y4m"
    assert cli_main(["run", str(small_clip), "-o", str(y4m), "--codec", "hevc", "--crf", "28"]) == 0
    _, planes = read_y4m(y4m)
    dec = PyAvDecoder(str(small_clip))
    frames = np.stack([f.nv12 for f in dec])
    dec.close()
    with preedit.PreEditor(engine="triton") as pre:  # the same engine: the shipped model on embedded Triton
        api = pre.edit(frames, qp=28)  # --codec hevc --crf 28 sends QP 28
    assert len(planes) == len(api) == 10
    for p, a in zip(planes, api):
        h = a.shape[0] * 2 // 3
        y, u, v = (np.asarray(x) for x in (p[0], p[1], p[2])) if isinstance(p, (tuple, list)) else (p.y, p.u, p.v)
        assert np.array_equal(a[:h], y)
        assert np.array_equal(a[h:, 0::2], u) and np.array_equal(a[h:, 1::2], v)
    assert not np.array_equal(api, frames)


class _FakeEngine:
    """Records the batches it gets; edits by inverting the frames."""

    description = "fake"

    def __init__(self):
        self.calls = []

    def run(self, nv12, qp):
        self.calls.append((nv12.shape[0], float(np.asarray(qp).ravel()[0])))
        return 255 - nv12


def test_batches_are_split_and_sent_in_flight_in_order():
    import threading

    pre = preedit.PreEditor(engine="triton", url="127.0.0.1:1", max_batch=4, inflight=3)
    pre._engine = fake = _FakeEngine()
    from concurrent.futures import ThreadPoolExecutor

    pre._pool = ThreadPoolExecutor(3)
    frames = np.random.default_rng(0).integers(0, 256, (10, 24, 16), dtype=np.uint8)
    out = pre.edit(frames, qp=np.arange(10, dtype=np.float32))
    assert np.array_equal(out, 255 - frames)  # order kept across in-flight requests
    assert sorted(fake.calls) == [(2, 8.0), (4, 0.0), (4, 4.0)]
    pre.close()
    assert pre._pool is None and threading.active_count() >= 1


@pytest.mark.needs_cuda
def test_cuda_tensor_in_cuda_tensor_out():
    import torch

    with preedit.PreEditor(engine="onnxruntime") as pre:
        frames = torch.randint(0, 256, (2, 48, 32), dtype=torch.uint8)
        out = pre.edit(frames.cuda(), qp=30)
        assert out.device.type == "cuda" and torch.equal(out.cpu(), pre.edit(frames, qp=30))
