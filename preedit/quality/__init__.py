"""Quality measurement shared by training, export and perf: libvmaf metrics, BD-rate, y4m I/O, FFmpeg.

```
 reference.y4m ┐
 distorted ────┴─> metrics.score() (libvmaf VMAF / VMAF-NEG / v1, PSNR, SSIM, XPSNR) ─> Scores
 (rate, score) curves ─> bdrate.bd_rate() / bd_quality()
 y4m: read/write 8-bit 4:2:0 y4m · ffmpeg: the bundled FFmpeg binary and the one command runner
```
"""
