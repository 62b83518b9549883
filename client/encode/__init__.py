"""Encoders: limited-range NV12 `Frame`s → a standard bitstream in a container (the `Encoder` protocol).

```
 CPU  PyAvEncoder         (_pyav.py)   libx265 | libsvtav1 | libx264 → mp4 mkv ts, or raw y4m
 GPU  ClientNvencEncoder  (_nvenc.py)  NVENC HEVC | AV1 | H.264 → elementary stream
      mux_elementary      (_mux.py)      → mp4 mov mkv ts with the source pts and audio
```
`EncoderSettings` (codec + one of crf / qp / bitrate) is what both take; `encoder_options` and
`nvenc_config_from_settings` are the pure mappings to each encoder's options. Every encoder
writes its trailer in `finish()`, also after errors, so a stopped run leaves a playable file.
"""

from preedit.client.encode._mux import EsSpool, decode_timestamps, mux_elementary
from preedit.client.encode._nvenc import (ClientNvencEncoder, NvencConfig, NvencEncoder, normalize_packets,
                                          nvenc_config_from_settings, nvenc_options)
from preedit.client.encode._pyav import (EncoderSettings, PyAvEncoder, container_for, encoder_options, model_qp, QpFollower,
                                         nv12_to_frame)

__all__ = ["EncoderSettings", "PyAvEncoder", "container_for", "encoder_options", "model_qp", "QpFollower", "nv12_to_frame",
           "NvencConfig", "NvencEncoder", "ClientNvencEncoder", "normalize_packets", "nvenc_options",
           "nvenc_config_from_settings", "EsSpool", "decode_timestamps", "mux_elementary"]
