"""The clip split of the shared real clips: held out (evaluation, int8 checks) vs trained on.

```
 ../shared/data/clips/*  ─┬─ HELDOUT_CLIPS: never trained on; the default set of `preedit eval`,
                          │   the int8 search / quality checks and the trainer's validation
                          └─ TRAIN_CLIPS:   the shipped model's training sources
```
One source for every stage that needs the split (the evaluation must not read the training
config by a checkout path). `training/default/config.yaml` names the same lists (its `heldout`
and `train_sources`), and a test keeps the two equal.
"""

from __future__ import annotations

HELDOUT_CLIPS = ("flower.mp4", "sintel-snowfight.mp4", "park_joy_480x270_50fps.y4m", "friday-filmgrain.mp4",
                 "asl-thanks.mkv")
TRAIN_CLIPS = ("bottle-detection.mp4", "asl-again.mkv", "asl-bird.mkv", "asl-book.mkv", "asl-help.mkv",
               "asl-learn.mkv", "asl-milk.mkv", "asl-night.mkv", "asl-sorry.mkv", "asl-want.mkv",
               "stream-of-water.webm", "face-webcam-1080x720.mp4", "edge-sar_2x1.mp4",
               "edge-rotate-buck-bunny.mp4", "edge-cursed-vfr.mp4", "sparks_480x270_yuv420p10le.yuv")
