"""Issue 19, progress: `preedit run` / `preedit ladder` draw a tqdm frame bar on stderr only when it is a
terminal (checked through a real pseudo-terminal), stay quiet when it is a pipe, and `--help` shows defaults."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import termios
import subprocess
import sys

import pytest

from preedit.client.progress import progress_bar
from synthetic import make_clip

FAST = ["--codec", "h264", "--preset", "ultrafast"]


def test_progress_bar_drawn_when_forced_and_quiet_otherwise():
    drawn, quiet, auto = io.StringIO(), io.StringIO(), io.StringIO()
    for out, tty in ((drawn, True), (quiet, False), (auto, None)):  # StringIO is no terminal
        bar = progress_bar(10, "clip.mp4", is_tty=tty, file=out)
        for _ in range(10):
            bar.update(1)
        bar.close()
    assert "clip.mp4" in drawn.getvalue() and "10/10" in drawn.getvalue() and "frame" in drawn.getvalue()
    assert quiet.getvalue() == "" and auto.getvalue() == ""


def _stderr(cmd, tty: bool) -> str:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not tty:
        return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                              timeout=120, check=True).stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        assert proc.wait(timeout=120) == 0
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("sub", ["run", "ladder"])
def test_cli_bar_only_on_a_terminal(sub, tmp_path):
    src = make_clip(tmp_path / "src.mp4", width=160, height=96, frames=40, fps=25)
    def cmd(tag):
        out = ["-o", str(tmp_path / f"{tag}.mp4")] if sub == "run" else ["-o", str(tmp_path / tag),
                                                                          "--rendition", "96:200"]
        return [sys.executable, "-m", "preedit", sub, str(src), *out, "--bypass", *FAST]
    piped, terminal = _stderr(cmd("p"), tty=False), _stderr(cmd("t"), tty=True)
    assert "40/40" in terminal and "frame/s" in terminal, terminal
    assert "frame/s" not in piped and "40/40" not in piped, piped


def test_help_shows_defaults(capsys):
    from preedit.cli import main

    for sub, expect in (("run", ["(default: 4)", "(default: 2.0)", "(default hevc)"]),
                        ("ladder", ["(default: 2.0)", "(default: hls)", "(default: hevc)"])):
        with pytest.raises(SystemExit):
            main([sub, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert all(e in text for e in expect), (sub, text)
