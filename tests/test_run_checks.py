"""Issue 12 rows 4, 5, 8, 9 (early part): bad numbers and colliding / unwritable outputs are refused with
exit 2 and one line before any decoder opens or server starts (`client/checks.py`).

`--url` points at a port nobody listens on: a check that ran after the server step would exit 5, not 2.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from preedit.cli import main as cli_main
from preedit.serve import free_port
from synthetic import media  # noqa: F401 - fixture

FAST = ["--codec", "h264", "--preset", "ultrafast"]


def run_cli(capsys, *args):
    code = cli_main(["run", "--url", f"127.0.0.1:{free_port()}", "--connect-timeout-s", "1", *map(str, args)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("preedit run: error:")]
    return code, errors, err


@pytest.mark.parametrize("flag, value", [
    ("--bitrate", "nan"), ("--bitrate", "inf"), ("--bitrate", "-5"),
    ("--latency-budget-ms", "nan"), ("--latency-budget-ms", "inf"),
    ("--request-timeout-s", "nan"), ("--request-timeout-s", "inf"),
    ("--connect-timeout-s", "nan"), ("--read-timeout-s", "-1"), ("--read-timeout-s", "nan"),
    ("--crf", "nan"), ("--queue-size", "0"), ("--triton-metrics-port", "70000"), ("--metrics-port", "-1"),
    ("--frames-per-request", "0"),
])
def test_run_exits_2_before_server_when_a_number_is_not_finite_or_out_of_range(capsys, tmp_path, media, flag,
                                                                                value):
    code, errors, err = run_cli(capsys, media("flower.mp4"), "-o", tmp_path / "o.mp4", flag, value, *FAST)
    assert code == 2 and len(errors) == 1 and flag in errors[0] and "Traceback" not in err, err
    assert not (tmp_path / "o.mp4").exists()


def test_run_refuses_multi_frame_requests_where_only_the_cpu_shm_transport_has_them(capsys, tmp_path, media):
    for extra in (["--device", "cuda"], ["--transport", "grpc"]):
        code, errors, err = run_cli(capsys, media("flower.mp4"), "-o", tmp_path / "o.mp4", "--frames-per-request", 2,
                                    *extra, *FAST)
        assert code == 2 and len(errors) == 1 and "--frames-per-request" in errors[0], err
    assert not (tmp_path / "o.mp4").exists()


def test_run_refuses_hardlinked_output_and_keeps_the_input(capsys, tmp_path, media):
    src = tmp_path / "v.mp4"
    src.write_bytes(media("flower.mp4").read_bytes())
    before = src.read_bytes()
    os.link(src, tmp_path / "h.mp4")
    code, errors, _ = run_cli(capsys, src, "-o", tmp_path / "h.mp4", "--bypass", *FAST)
    assert code == 2 and len(errors) == 1 and "overwrite the input" in errors[0]
    assert src.read_bytes() == before


def test_run_refuses_symlinked_output_pointing_at_another_input(capsys, tmp_path, media):
    a, b = media("flower.mp4"), tmp_path / "b.mp4"
    b.write_bytes(a.read_bytes())
    (tmp_path / "link.mp4").symlink_to(b)
    code, errors, _ = run_cli(capsys, a, b, "-o", tmp_path / "link.mp4", "-o", tmp_path / "o2.mp4", "--bypass",
                              *FAST)
    assert code == 2 and "overwrite the input" in errors[0]


def test_run_refuses_the_same_output_twice(capsys, tmp_path, media):
    a = media("flower.mp4")
    code, errors, _ = run_cli(capsys, a, a, "-o", tmp_path / "o.mp4", "-o", tmp_path / "o.mp4", "--bypass", *FAST)
    assert code == 2 and len(errors) == 1 and "same output given twice" in errors[0]


_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _PR_CAPBSET_DROP = 1, 2, 24


def _without_dac_override() -> None:  # preexec_fn: root that obeys file modes (the capabilities dropped)
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")  # dropped from the bounding set: gone after exec


def test_run_refuses_unwritable_output_folder_before_the_server(capsys, tmp_path, media):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.geteuid() != 0:
            code, errors, err = run_cli(capsys, media("flower.mp4"), "-o", ro / "o.mp4", *FAST)
        else:
            # Root writes into any folder: the run is a child root without CAP_DAC_OVERRIDE, for which
            # the 0500 folder is really unwritable (as for any other user).
            proc = subprocess.run([sys.executable, "-m", "preedit", "run", "--url", f"127.0.0.1:{free_port()}",
                                   "--connect-timeout-s", "1", str(media("flower.mp4")), "-o", str(ro / "o.mp4"),
                                   *FAST], capture_output=True, text=True, timeout=120,
                                  preexec_fn=_without_dac_override)
            code, err = proc.returncode, proc.stderr
            errors = [line for line in err.splitlines() if line.startswith("preedit run: error:")]
    finally:
        ro.chmod(0o700)
    assert code == 2 and len(errors) == 1 and "not writable" in errors[0], err
    assert "partial output finalised" not in err
    assert not (ro / "o.mp4").exists()


def test_run_refuses_missing_output_folder(capsys, tmp_path, media):
    code, errors, _ = run_cli(capsys, media("flower.mp4"), "-o", tmp_path / "nope" / "o.mp4", *FAST)
    assert code == 2 and "output folder does not exist" in errors[0]


def test_run_says_no_playable_output_when_x265_refuses_the_size(capsys, tmp_path):
    import av
    import numpy as np

    src = tmp_path / "small.mp4"
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 18, 10, "yuv420p"
        for _ in range(5):
            for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((10, 18, 3), np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    code, errors, err = run_cli(capsys, src, "-o", tmp_path / "o.mp4", "--bypass", "--codec", "hevc")
    assert code == 7 and len(errors) == 1, err
    assert "partial output finalised" not in errors[0] and "no playable output was written" in errors[0]


def test_run_ends_with_a_clear_line_when_udp_input_never_sends(capsys, tmp_path):
    port = free_port()
    code, errors, err = run_cli(capsys, f"udp://127.0.0.1:{port}", "-o", tmp_path / "live.ts", "--bypass",
                                "--read-timeout-s", "1", *FAST)
    assert code == 3 and len(errors) == 1, err
    assert "no data from udp://" in errors[0] and "--read-timeout-s" in errors[0]
    assert "Immediate exit requested" not in err
