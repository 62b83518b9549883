"""Pre-edit transports: Triton over gRPC, frames through a ring of shared-memory slots.

```
 CPU  TritonTransport   (_shm.py)       NumPy NV12 ─> POSIX shm slot ─> Triton ─> NumPy NV12
 GPU  CudaShmTransport  (_cuda_shm.py)  CUDA NV12  ─> CUDA IPC slot  ─> Triton ─> CUDA | NumPy NV12
      slot rings        (_ring.py)      ShmRegion/SlotRing (system shm), SlotIndexRing (pure)
```
Both implement the `PreEditor` protocol (`preedit.client.interfaces`): `submit(nv12, timeout_s)`
returns a Future of the edited frame, or None when no slot frees up in time; `close()` drains,
unregisters and frees every region. `CudaShmTransport` needs torch and cuda-python only when made.
"""

from preedit.client.transport._cuda_shm import CudaShmTransport
from preedit.client.transport._ring import ShmRegion, Slot, SlotIndexRing, SlotRing, qp_offset, sweep_stale_regions
from preedit.client.transport._shm import TritonTransport
from preedit.client.transport._grpc import GrpcTransport

__all__ = [
    "GrpcTransport","TritonTransport", "CudaShmTransport", "ShmRegion", "Slot", "SlotRing", "SlotIndexRing", "qp_offset",
           "sweep_stale_regions"]
