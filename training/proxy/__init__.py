"""Differentiable codec proxy (YUV 4:2:0 hybrid block codec) and its building blocks."""

from preedit.training.proxy._dct import BLOCK_SIZES, block_dct, block_idct, dct_matrix
from preedit.training.proxy._quantize import (
    av1_q_to_hevc_qp,
    av1_qindex,
    av1_qstep,
    deadzone_quantize,
    hevc_chroma_qp,
    hevc_qp_to_av1_q,
    hevc_qstep,
)
from preedit.training.proxy._ste import clip_ste, floor_ste, round_ste, to_codec_pixels
from preedit.training.proxy.codec import CODECS, CodecProxy, ProxyConfig, ProxyOutput, hm_lambda

__all__ = [
    "BLOCK_SIZES", "CODECS", "CodecProxy", "ProxyConfig", "ProxyOutput", "av1_q_to_hevc_qp", "av1_qindex",
    "av1_qstep", "block_dct", "block_idct", "clip_ste", "dct_matrix", "deadzone_quantize", "floor_ste",
    "hevc_chroma_qp", "hevc_qp_to_av1_q", "hevc_qstep", "hm_lambda", "round_ste", "to_codec_pixels",
]
