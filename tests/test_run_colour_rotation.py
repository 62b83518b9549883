"""Issue 12 rows 12-13: the RGB→YUV matrix is the one tagged on the output; unspecified matrices follow
FFmpeg's convention (BT.601 below 720 lines, BT.709 from 720)."""

from __future__ import annotations

import numpy as np
import pytest

from preedit.cli import main as cli_main
from preedit.color import yuv_to_rgb

TAG = {1: "bt709", 5: "bt601", 6: "bt601"}


def _png(path, width, height):
    import av

    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, size=(height // 16, width // 16, 3), dtype=np.uint8)
    rgb = np.kron(blocks, np.ones((16, 16, 1), dtype=np.uint8))  # flat 16x16 patches: chroma subsampling safe
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = width, height, "rgb24"
        for p in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return rgb


@pytest.mark.parametrize("width, height, matrix", [(1280, 720, "bt709"), (320, 240, "bt601")])
def test_run_converts_rgb_with_the_matrix_it_tags(tmp_path, width, height, matrix):
    import av

    src = tmp_path / "in.png"
    rgb = _png(src, width, height)
    out = tmp_path / "o.mkv"
    assert cli_main(["run", str(src), "-o", str(out), "--bypass", "--codec", "h264", "--qp", "0",
                     "--preset", "ultrafast"]) == 0
    with av.open(str(out)) as c:
        frame = next(c.decode(c.streams.video[0]))
        tagged = TAG.get(int(frame.colorspace or 0))
        assert tagged == matrix
        full = int(frame.color_range or 0) == 2 or frame.format.name.startswith("yuvj")
        yuv = frame.to_ndarray()
    h, w = height, width
    y = yuv[:h]
    u = yuv[h:h + h // 4].reshape(h // 2, w // 2).repeat(2, 0).repeat(2, 1)
    v = yuv[h + h // 4:].reshape(h // 2, w // 2).repeat(2, 0).repeat(2, 1)
    back = np.moveaxis(np.asarray(yuv_to_rgb(y, u, v, matrix=tagged, color_range="full" if full else "limited")), 0, -1)
    err = np.abs(np.clip(back, 0, 1) * 255.0 - rgb.astype(float)).mean()
    assert err < 4.0, f"mean RGB error {err:.2f} decoding with the tagged {tagged}"


def test_run_carries_rotation_to_the_output(tmp_path, clip):
    """A phone clip's display matrix (-90 degrees here) reaches the output, so players show it upright."""
    import av

    src = clip("edge-rotate-buck-bunny.mp4")
    with av.open(str(src)) as c:
        want = next(c.decode(video=0)).rotation
    assert want, "the clip should carry a rotation"
    out = tmp_path / "o.mp4"
    assert cli_main(["run", str(src), "-o", str(out), "--bypass", "--codec", "h264", "--preset", "ultrafast",
                     "--max-frames", "5"]) == 0
    with av.open(str(out)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 5 and frames[0].rotation == want
