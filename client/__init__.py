"""preedit.client: decode → pre-edit (Triton, shared memory) → encode, with metrics.

```
 input ──> Decoder ──NV12──> PreEditor (Triton via shm ring) ──NV12──> Encoder ──> output
          (PyAV|NVDEC)        bounded queues, several in flight      (libx26x/SVT-AV1|NVENC)
```
"""
