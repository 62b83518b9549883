"""CUDA-shm round trip through the real tritonclient module (used by deploy/gpu_check.sh).

Creates a device region with `tritonclient.utils.cuda_shared_memory`, writes a known pattern,
reads it back through the client's own helpers, and compares; with `--url`, also registers the
region with that Triton server and unregisters it. Prints one JSON line; exit 0 only if equal.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device-id", type=int, default=0)
    ap.add_argument("--url", default=None, help="Triton gRPC address to register the region with")
    args = ap.parse_args(argv)
    import numpy as np
    import tritonclient.utils.cuda_shared_memory as cudashm

    data = (np.arange(3 * 64 * 64, dtype=np.uint32) * 2654435761 % 65521).astype(np.float16).reshape(1, 3, 64, 64)
    handle = cudashm.create_shared_memory_region("preedit_gpu_check", data.nbytes, args.device_id)
    result = {"bytes": int(data.nbytes), "device_id": args.device_id}
    try:
        cudashm.set_shared_memory_region(handle, [data])
        back = cudashm.get_contents_as_numpy(handle, np.float16, list(data.shape))
        result["equal"] = bool(np.array_equal(back, data))
        if args.url:
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(args.url)
            client.register_cuda_shared_memory("preedit_gpu_check", cudashm.get_raw_handle(handle),
                                               args.device_id, data.nbytes)
            result["registered"] = True
            client.unregister_cuda_shared_memory("preedit_gpu_check")
    finally:
        cudashm.destroy_shared_memory_region(handle)
    print(json.dumps(result))
    return 0 if result.get("equal") else 1


if __name__ == "__main__":
    sys.exit(main())
