"""What this machine's GPU can do for each pipeline stage: NVDEC, NVENC, CUDA for the model.

```
 torch.cuda (device, name, compute capability) ─┐
 PyNvVideoCodec GetDecoderCaps/GetEncoderCaps ──┼─> capabilities() -> dict (JSON-able)
 architecture table (Video Codec SDK 13.0) ─────┘      used by doctor and the fallback plan
```

The architecture table is the documented ground truth (NVENC/NVDEC application notes 13.0);
the probe only confirms or narrows it. H100/H200/A100 have **no NVENC**; AV1 NVENC needs Ada or
newer; GA100/Hopper NVDEC cannot decode AV1. `GetEncoderCaps` is called at most once per process
(it has been seen to leak an NVENC session and to swap the thread's CUDA context), and the torch
device is re-asserted afterwards.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from typing import Dict, List, Optional, Tuple

from preedit.codecs import FAMILIES

log = logging.getLogger(__name__)

CODECS = FAMILIES  # probe order: h264, hevc, av1

# Name patterns of datacenter GPUs whose die has no NVENC (GA100, GH100 and their Hopper kin).
_NO_NVENC_NAMES = re.compile(r"\b(A100|A30|A800|H100|H200|H800|H20|GH200)\b", re.IGNORECASE)


def architecture(compute_capability: Tuple[int, int], name: str = "") -> str:
    """Architecture family from the CUDA compute capability (and the name for GA100 vs GA10x).

    Returns one of `pre-turing`, `turing`, `ga100`, `ampere`, `ada`, `hopper`, `blackwell`.
    """
    major, minor = compute_capability
    if major >= 10:
        return "blackwell"
    if major == 9:
        return "hopper"
    if major == 8 and minor == 9:
        return "ada"
    if major == 8 and minor == 0:
        return "ga100"
    if major == 8:
        return "ampere"
    if major == 7 and minor >= 5:
        return "turing"
    return "pre-turing"


def documented_codecs(compute_capability: Tuple[int, int], name: str = "") -> Dict[str, List[str]]:
    """NVDEC/NVENC codecs (8-bit 4:2:0) of a GPU by its architecture, from the SDK 13.0 notes.

    Pure; the probe in `capabilities()` narrows this where PyNvVideoCodec answers.

    Returns:
        `{"nvdec": [...], "nvenc": [...]}` with codec names from `CODECS`.
    """
    arch = architecture(compute_capability, name)
    if arch == "pre-turing":
        return {"nvdec": ["h264", "hevc"], "nvenc": ["h264", "hevc"]}
    if arch in ("ga100", "hopper") or _NO_NVENC_NAMES.search(name or ""):
        return {"nvdec": ["h264", "hevc"], "nvenc": []}
    if arch == "turing":
        return {"nvdec": ["h264", "hevc"], "nvenc": ["h264", "hevc"]}
    if arch == "ampere":
        return {"nvdec": ["h264", "hevc", "av1"], "nvenc": ["h264", "hevc"]}
    return {"nvdec": ["h264", "hevc", "av1"], "nvenc": ["h264", "hevc", "av1"]}  # ada, blackwell


def _torch_device(device_id: int) -> Optional[dict]:
    try:
        import torch  # lazy: optional dependency
    except ImportError:
        return None
    if not torch.cuda.is_available() or device_id >= torch.cuda.device_count():
        return None
    props = torch.cuda.get_device_properties(device_id)
    return {
        "index": device_id,
        "name": props.name,
        "compute_capability": [props.major, props.minor],
        "memory_gib": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
        "torch_cuda": torch.version.cuda,
    }


def import_nvc():
    """`PyNvVideoCodec`, or None when it is missing or cannot load (old driver, no video libs)."""
    try:
        import PyNvVideoCodec as nvc  # noqa: N813 - NVIDIA's module name
    except Exception as exc:  # ImportError, or RuntimeError("Driver version is too old"), or missing libnvcuvid
        log.debug("PyNvVideoCodec unavailable: %s", exc)
        return None
    return nvc


def _enum_member(enum, wanted: str):
    """A pybind enum member whose name ends with `wanted` (names differ between releases)."""
    members = getattr(enum, "__members__", {})
    for key, value in members.items():
        if key.upper() == wanted.upper() or key.upper().endswith("_" + wanted.upper()):
            return value
    return getattr(enum, wanted)


def _nvc_codec(nvc, name: str):
    return _enum_member(nvc.cudaVideoCodec, name.upper())


def probe_nvdec(nvc, device_id: int, codecs=CODECS) -> Dict[str, dict]:
    """`GetDecoderCaps` per codec (8-bit 4:2:0). Codecs it reports as unsupported are left out."""
    found: Dict[str, dict] = {}
    for codec in codecs:
        try:
            caps = nvc.GetDecoderCaps(gpuid=device_id, codec=_nvc_codec(nvc, codec),
                                      chromaformat=_enum_member(nvc.cudaVideoChromaFormat, "420"), bitdepth=8)
        except Exception as exc:  # noqa: BLE001 - unsupported codecs raise on some versions
            log.debug("GetDecoderCaps(%s) failed: %s", codec, exc)
            continue
        caps = dict(caps) if caps is not None else {}
        supported = caps.get("is_supported", caps.get("bIsSupported", 1))
        if supported and caps.get("num_decoder_engines", 1) != 0:
            found[codec] = {k: v for k, v in caps.items() if isinstance(v, (int, float, str, bool))}
    return found


def _encoder_caps(nvc, codec: str, device_id: int):
    """`GetEncoderCaps` for GPU `device_id`: the keyword spellings releases use, then none.

    Without a device keyword the call probes GPU 0, so that form is used only for device 0;
    for another device `LookupError` says the probe cannot address it.
    """
    for key in ("gpu_id", "gpuid"):
        try:
            return nvc.GetEncoderCaps(codec=codec, **{key: device_id})
        except TypeError as exc:  # pybind: "incompatible function arguments" for an unknown keyword
            if "argument" not in str(exc):
                raise
    if device_id != 0:
        raise LookupError(f"GetEncoderCaps takes no GPU index: cannot probe NVENC on GPU {device_id}")
    return nvc.GetEncoderCaps(codec=codec)


def probe_nvenc(nvc, device_id: int, codecs=CODECS) -> Optional[Dict[str, dict]]:
    """`GetEncoderCaps` per codec on GPU `device_id`, then re-assert torch's device (the call may
    swap contexts). None when this PyNvVideoCodec cannot probe that device (use the table)."""
    found: Dict[str, dict] = {}
    for codec in codecs:
        try:
            caps = _encoder_caps(nvc, codec, device_id)
        except LookupError as exc:
            log.warning("%s", exc)
            return None
        except Exception as exc:  # noqa: BLE001 - no NVENC raises
            log.debug("GetEncoderCaps(%s) failed: %s", codec, exc)
            continue
        caps = dict(caps) if caps is not None else {}
        if caps and caps.get("num_encoder_engines", 0) > 0:
            found[codec] = {k: v for k, v in caps.items() if isinstance(v, (int, float, str, bool))}
    try:
        import torch  # lazy: optional dependency

        torch.cuda.set_device(device_id)
        torch.zeros(1, device=f"cuda:{device_id}")
    except Exception:  # noqa: BLE001 - best effort
        pass
    return found


def merge_caps(documented: Dict[str, List[str]], nvdec_probe: Optional[Dict[str, dict]],
               nvenc_probe: Optional[Dict[str, dict]]) -> Dict[str, List[str]]:
    """Codecs per engine: the probe's answer where there is one, otherwise the documented table.

    A probe never adds NVENC to a GPU the table says has none (a failed probe on H100 can still
    return a dict from the driver's generic path).
    """
    nvdec = sorted(nvdec_probe) if nvdec_probe is not None else list(documented["nvdec"])
    if nvenc_probe is None:
        nvenc = list(documented["nvenc"])
    else:
        nvenc = sorted(c for c in nvenc_probe if c in documented["nvenc"])
    order = {c: i for i, c in enumerate(CODECS)}
    return {"nvdec": sorted(nvdec, key=order.get), "nvenc": sorted(nvenc, key=order.get)}


@functools.lru_cache(maxsize=None)
def capabilities(device_id: int = 0, probe: bool = True) -> dict:
    """What GPU `device_id` offers each stage (cached per process: probing NVENC is not free).

    Returns:
        JSON-able dict: `cuda` (bool), `device` (name, compute capability, memory, or None),
        `architecture`, `nvdec`/`nvenc` (codec lists), `source` (`probe` or `documented`),
        `pynvvideocodec` (version or None), `reasons` (why a stage is missing).
    """
    info: dict = {"cuda": False, "device": None, "architecture": None, "nvdec": [], "nvenc": [],
                  "source": "none", "pynvvideocodec": None, "reasons": []}
    if os.environ.get("PREEDIT_FORCE_CPU") == "1":
        info["reasons"].append("PREEDIT_FORCE_CPU=1")
        return info
    dev = _torch_device(device_id)
    if dev is None:
        info["reasons"].append("no CUDA device visible to torch (CPU build or no GPU)")
        return info
    info.update(cuda=True, device=dev)
    cc = tuple(dev["compute_capability"])
    info["architecture"] = architecture(cc, dev["name"])
    documented = documented_codecs(cc, dev["name"])
    nvc = import_nvc() if probe else None
    if nvc is None:
        info.update(documented, source="documented")
        info["reasons"].append("PyNvVideoCodec not importable: NVDEC/NVENC stages cannot run, "
                               "codec lists are the architecture table's")
        info["video_stages_usable"] = False
        return info
    info["pynvvideocodec"] = getattr(nvc, "__version__", "unknown")
    info["video_stages_usable"] = True
    dec = probe_nvdec(nvc, device_id)
    enc = probe_nvenc(nvc, device_id) if documented["nvenc"] else {}
    info.update(merge_caps(documented, dec, enc), source="probe")
    info["nvdec_caps"] = dec
    info["nvenc_caps"] = enc or {}
    if enc is None:
        info["reasons"].append(f"NVENC probe cannot address GPU {device_id}: NVENC codecs are the architecture table's")
    if not info["nvenc"]:
        info["reasons"].append(f"{dev['name']} ({info['architecture']}) has no NVENC: encode runs on CPU")
    return info
