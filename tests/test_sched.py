"""SVT-AV1 must not take real-time priority (as root it gives itself SCHED_FIFO 99 and starves the host)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from preedit.sched import child_preexec, realtime_threads

pytestmark = [pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="Linux scheduling only"),
              pytest.mark.skipif(os.geteuid() != 0, reason="SVT-AV1 raises priority only with CAP_SYS_NICE (root)")]

_SVT_OPEN = textwrap.dedent("""
    import sys
    from fractions import Fraction
    import av
    from preedit.sched import forbid_realtime, realtime_threads
    if sys.argv[1] == "forbid":
        forbid_realtime()
    ctx = av.CodecContext.create("libsvtav1", "w")
    ctx.width = ctx.height = 64
    ctx.pix_fmt, ctx.time_base = "yuv420p", Fraction(1, 25)
    ctx.open()
    print(len(realtime_threads()))
""")
_TRY_FIFO = "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1)); print('fifo')"


def _child(code: str, *args: str, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          preexec_fn=preexec)


def test_svt_av1_opens_without_realtime_threads_when_realtime_is_forbidden():
    plain = _child(_SVT_OPEN, "plain")
    guarded = _child(_SVT_OPEN, "forbid")
    assert plain.returncode == 0 and guarded.returncode == 0, plain.stderr[-300:] + guarded.stderr[-300:]
    assert int(plain.stdout.split()[-1]) > 0  # the defect: SVT-AV1 as root goes SCHED_FIFO
    assert int(guarded.stdout.split()[-1]) == 0


def test_ffmpeg_children_cannot_go_realtime_when_started_through_the_runner():
    assert _child(_TRY_FIFO).stdout.strip() == "fifo"  # a plain root child can
    refused = _child(_TRY_FIFO, preexec=child_preexec())
    assert refused.returncode != 0 and "PermissionError" in refused.stderr


def test_cli_entry_forbids_realtime_before_any_encoder_opens():
    # `preedit` itself: the same SVT-AV1 open after the CLI's entry point leaves no real-time thread.
    code = ("from preedit import cli; from preedit.sched import realtime_threads\n"
            "assert cli.main(['--version']) == 0\n"
            "import av; from fractions import Fraction\n"
            "c = av.CodecContext.create('libsvtav1', 'w'); c.width = c.height = 64\n"
            "c.pix_fmt, c.time_base = 'yuv420p', Fraction(1, 25); c.open(); print(len(realtime_threads()))")
    proc = _child(code)
    assert proc.returncode == 0, proc.stderr[-300:]
    assert int(proc.stdout.split()[-1]) == 0


def test_this_suite_runs_no_realtime_threads():
    assert realtime_threads() == []
