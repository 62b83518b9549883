"""Decoders: any input → limited-range NV12 `Frame`s (the `Decoder` protocol).

```
 CPU  PyAvDecoder         (_pyav.py)   files, udp://, raw .yuv ─> NumPy NV12 + audio packets
 GPU  ClientNvdecDecoder  (_nvdec.py)  H.264/HEVC/AV1 files and URLs ─> CUDA NV12 + audio (PyAV)
      PyAvPacketDemuxer                URL packets for NVDEC (PyAV demux, Annex-B filter)
      NvdecDecoder                     the bare NVDEC stage (ring of owned device buffers)
```
`preedit.client.backends` picks one per run; torch and PyNvVideoCodec load only when an NVDEC
decoder is made.
"""

from preedit.client.decode._nvdec import (ClientNvdecDecoder, DeviceRing, NvdecDecoder, PyAvPacketDemuxer, full_to_limited_,
                                         make_nvdec_decoder, needs_annexb_filter)
from preedit.client.decode._pyav import (PyAvDecoder, RawGeometry, decoder_thread_type, is_url, parse_raw_name,
                                        yuv420p_to_nv12)

__all__ = ["PyAvDecoder", "RawGeometry", "decoder_thread_type", "is_url", "parse_raw_name", "yuv420p_to_nv12",
           "NvdecDecoder", "ClientNvdecDecoder", "DeviceRing", "PyAvPacketDemuxer", "full_to_limited_",
           "make_nvdec_decoder", "needs_annexb_filter"]
