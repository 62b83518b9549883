"""ONNX form of the integer pre-editor: `ConvInteger` (uint8 × int8 → int32) plus exact requantization.

```
 NV12_IN uint8 [N, H*3/2, W], QP fp32 [N, 1]
   Slice/Pad(128)/Reshape/Transpose (space-to-depth) → ConvInteger → Add(int32 bias)
   → Cast fp32 → Mul(2^e) → Round → Add(zp) → Max/Min → Cast uint8       (each conv)
   FiLM: Gather(table, round(QP)) · q + offset → Mul(2^-F) → Round → clip  (fp32 on ints < 2^24)
   up: 1x1 conv → requant → uint8 codes u → depth-to-space → crop → Gather(T, x·256 + u) → uint8
       (T[x·256 + u] = clip(x + LUT[u], 0, 255): residual, tanh and clamp in one 64 KiB table)
 NV12_OUT uint8 [N, H*3/2, W]
```

Every fp32 value in the graph is an integer of magnitude < 2^24 or such an integer times a
power of two (`IntModel.check()`), so ONNX Runtime computes it exactly whatever the thread count,
kernel choice or graph optimisation level; `Round` is half-to-even, as in the NumPy reference.
Same inputs, outputs and dynamic axes as the float model (`preedit.spec`), so it drops into the
python-backend ORT serving path unchanged.
"""

from __future__ import annotations

from typing import List

import numpy as np

from preedit.spec import FRAMES_IN, FRAMES_OUT, QP_IN

from preedit.export.int8.reference import QP_TABLE_SIZE, ConvQ, IntModel

OPSET = 17


class _Graph:
    def __init__(self) -> None:
        self.nodes: List = []
        self.inits: List = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value, dtype, hint: str = "c") -> str:
        from onnx import numpy_helper  # lazy: onnx

        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: List[str], hint: str = "", **attrs) -> str:
        from onnx import helper  # lazy: onnx

        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


def _requant(g: _Graph, acc: str, conv: ConvQ, hint: str) -> str:
    """int32 accumulator (bias already added) → uint8 codes, exactly as `requantize`."""
    c = conv.weight.shape[0]
    scale = g.const((2.0 ** conv.mult_exp.astype(np.float64)).reshape(1, c, 1, 1), np.float32, f"{hint}_scale")
    zp = conv.out_zero_point.astype(np.float32).reshape(1, c, 1, 1)
    f = g.op("Cast", [acc], to=1)
    f = g.op("Round", [g.op("Mul", [f, scale])])
    f = g.op("Add", [f, g.const(zp, np.float32, f"{hint}_zp")])
    low = zp if conv.relu else np.zeros_like(zp)
    f = g.op("Max", [f, g.const(low, np.float32, f"{hint}_low")])
    f = g.op("Min", [f, g.const(255.0, np.float32)])
    return g.op("Cast", [f], hint, to=2)


def _qlinear(g: _Graph, x: str, xzp: str, conv: ConvQ, rows: slice, hint: str) -> str:
    """QLinearConv: ORT's fused int8 conv + fp32 requantization `round(acc·s_x·s_w/s_y) + zp`."""
    scales = np.asarray(conv.out_scale)[rows]
    zps = np.asarray(conv.out_zero_point)[rows]
    if np.ptp(scales) or np.ptp(zps):
        raise ValueError("QLinearConv needs one output scale and zero point per group")
    w = conv.weight[rows]
    w_scale = np.asarray(conv.weight_scale, dtype=np.float64)[rows]
    if not np.array_equal(np.log2(np.asarray(conv.in_scale) * w_scale / scales), conv.mult_exp[rows]):
        raise ValueError(f"{hint}: scales do not reproduce the integer model's exponents")
    y = g.op("QLinearConv", [x, g.const(conv.in_scale, np.float32), xzp, g.const(w, np.int8, f"{hint}_w"),
                             g.const(w_scale, np.float32), g.const(np.zeros(len(w)), np.int8),
                             g.const(scales[0], np.float32), g.const(zps[0], np.uint8),
                             g.const(conv.bias[rows], np.int32, f"{hint}_b")], f"{hint}_q")
    if conv.relu and zps[0] > 0:
        y = g.op("Max", [y, g.const(zps[0], np.uint8)])
    return y


def _conv(g: _Graph, x: str, conv: ConvQ, hint: str, form: str = "qlinear") -> str:
    p = conv.padding
    zp = g.const(conv.in_zero_point, np.uint8, f"{hint}_xzp")
    if p:
        pads = g.const([0, 0, p, p, 0, 0, p, p], np.int64)
        x = g.op("Pad", [x, pads, zp], mode="constant")
    if form == "qlinear":
        c = conv.weight.shape[0]
        groups = [slice(0, c)] if c != 24 or conv.relu else [slice(0, 16), slice(16, 24)]
        outs = [_qlinear(g, x, zp, conv, rows, f"{hint}{i}") for i, rows in enumerate(groups)]
        return outs[0] if len(outs) == 1 else g.op("Concat", outs, axis=1)
    acc = g.op("ConvInteger", [x, g.const(conv.weight, np.int8, f"{hint}_w"), zp], f"{hint}_acc")
    bias = g.const(conv.bias.astype(np.int32).reshape(1, -1, 1, 1), np.int32, f"{hint}_b")
    return _requant(g, g.op("Add", [acc, bias]), conv, hint)


FORMS = ("qlinear", "integer")


def build_onnx(model: IntModel, form: str = "qlinear") -> bytes:
    """Serialized ONNX graph of `model` (opset 17), NV12 uint8 in/out with dynamic N, rows, W.

    Args:
        model: the integer model.
        form: `qlinear` (QLinearConv: ORT's fused int8 kernels, fastest) or `integer`
            (ConvInteger → int32, then explicit Cast/Mul/Round requantization). Both compute the
            same bits as the NumPy reference; the tests check both.
    """
    if form not in FORMS:
        raise ValueError(f"unknown ONNX form {form!r}; valid: {', '.join(FORMS)}")
    import onnx  # lazy: onnx
    from onnx import TensorProto, helper  # lazy: onnx

    model.check()
    g = _Graph()
    i64 = np.int64
    x = FRAMES_IN.name
    shape = g.op("Shape", [x])
    n = g.op("Gather", [shape, g.const([0], i64)], axis=0)
    rows = g.op("Gather", [shape, g.const([1], i64)], axis=0)
    width = g.op("Gather", [shape, g.const([2], i64)], axis=0)
    height = g.op("Div", [g.op("Mul", [rows, g.const([2], i64)]), g.const([3], i64)])
    four = g.const([4], i64)

    def pad_amount(size: str) -> str:
        return g.op("Mod", [g.op("Sub", [four, g.op("Mod", [size, four])]), four])

    pad_h, pad_w = pad_amount(height), pad_amount(width)
    zero = g.const([0], i64)
    ax1 = g.const([1], i64)
    y = g.op("Slice", [x, zero, height, ax1])
    uv = g.op("Slice", [x, height, rows, ax1])
    grey = g.const(128, np.uint8)
    y_p = g.op("Pad", [y, g.op("Concat", [zero, zero, zero, zero, pad_h, pad_w], axis=0), grey], mode="constant")
    half_pad_h = g.op("Div", [pad_h, g.const([2], i64)])
    uv_p = g.op("Pad", [uv, g.op("Concat", [zero, zero, zero, zero, half_pad_h, pad_w], axis=0), grey],
                mode="constant")
    two = g.const([2], i64)

    # down: space-to-depth (uint8 reshapes/transposes) then the 24→C 1x1 conv.
    h4 = g.op("Div", [g.op("Add", [height, pad_h]), four])
    w4 = g.op("Div", [g.op("Add", [width, pad_w]), four])

    def s2d(plane: str, bh: str, channels: int) -> str:
        r = g.op("Reshape", [plane, g.op("Concat", [n, h4, bh, w4, four], axis=0)])
        t = g.op("Transpose", [r], perm=[0, 2, 4, 1, 3])
        return g.op("Reshape", [t, g.op("Concat", [n, g.const([channels], i64), h4, w4], axis=0)])

    blocks = g.op("Concat", [s2d(y_p, four, 16), s2d(uv_p, two, 8)], axis=1)
    h = _conv(g, blocks, model.down, "down", form)
    axis1 = g.const([1], i64)

    # FiLM: tables indexed by round(QP) clamped to [0, 63].
    qp = g.op("Clip", [g.op("Round", [QP_IN.name]), g.const(0.0, np.float32), g.const(QP_TABLE_SIZE - 1.0, np.float32)])
    idx = g.op("Reshape", [g.op("Cast", [qp], to=7), g.const([-1], i64)])
    axes23 = g.const([2, 3], i64)
    mult = g.op("Unsqueeze", [g.op("Gather", [g.const(model.film.mult, np.float32, "film_m"), idx], axis=0), axes23])
    off = g.op("Unsqueeze", [g.op("Gather", [g.const(model.film.offset, np.float32, "film_b"), idx], axis=0), axes23])
    f = g.op("Add", [g.op("Mul", [g.op("Cast", [h], to=1), mult]), off])
    f = g.op("Round", [g.op("Mul", [f, g.const(2.0 ** -model.film.shift, np.float32)])])
    f = g.op("Clip", [f, g.const(0.0, np.float32), g.const(255.0, np.float32)])
    h = g.op("Cast", [f], "film", to=2)

    for i, conv in enumerate(model.body):
        h = _conv(g, h, conv, f"body{i}", form)
    u = _conv(g, h, model.up, "up", form)

    # Tail, all on small integers: depth-to-space the uint8 codes u, crop, then one table lookup per
    # pixel: out = T[plane][x·256 + u] with T[x·256 + u] = clip(x + LUT[u], 0, 255) (uint8, 64 KiB).
    # Depth-to-space of the uint8 codes as ConvTranspose with one-hot kernels (stride == kernel):
    # every output is one code times 1 plus zeros, exact in fp32 on any engine.
    u_f = g.op("Cast", [u], to=1)
    u_y = g.op("Slice", [u_f, zero, g.const([16], i64), ax1])
    u_uv = g.op("Slice", [u_f, g.const([16], i64), g.const([24], i64), ax1])
    one_hot_y = np.eye(16, dtype=np.float32).reshape(16, 1, 4, 4)
    one_hot_uv = np.eye(8, dtype=np.float32).reshape(8, 1, 2, 4)
    plane_y = g.op("ConvTranspose", [u_y, g.const(one_hot_y, np.float32, "d2s_y")], kernel_shape=[4, 4], strides=[4, 4])
    plane_uv = g.op("ConvTranspose", [u_uv, g.const(one_hot_uv, np.float32, "d2s_uv")], kernel_shape=[2, 4],
                    strides=[2, 4])
    ax23 = g.const([2, 3], i64)
    zz = g.op("Concat", [zero, zero], axis=0)
    code_y = g.op("Slice", [plane_y, zz, g.op("Concat", [height, width], axis=0), ax23])
    code_uv = g.op("Slice", [plane_uv, zz, g.op("Concat", [g.op("Div", [height, two]), width], axis=0), ax23])
    code_y = g.op("Squeeze", [code_y, axis1])
    code_uv = g.op("Squeeze", [code_uv, axis1])
    codes = np.arange(256, dtype=np.int64)
    out_planes = []
    for plane, code, x_plane in ((0, code_y, y), (1, code_uv, uv)):
        table = np.clip(codes[:, None] + model.lut[plane].astype(np.int64)[None, :], 0, 255).reshape(-1)
        idx = g.op("Add", [g.op("Mul", [g.op("Cast", [x_plane], to=6), g.const(256, np.int32)]),
                           g.op("Cast", [code], to=6)])
        out_planes.append(g.op("Gather", [g.const(table, np.uint8, f"table{plane}"), idx], axis=0))
    g.nodes.append(helper.make_node("Concat", out_planes, [FRAMES_OUT.name], axis=1))

    graph = helper.make_graph(
        g.nodes, "preedit_int8",
        [helper.make_tensor_value_info(FRAMES_IN.name, TensorProto.UINT8, ["batch", "rows", "width"]),
         helper.make_tensor_value_info(QP_IN.name, TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info(FRAMES_OUT.name, TensorProto.UINT8, ["batch", "rows", "width"])],
        initializer=g.inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="preedit.export.int8.onnx")
    onnx_model.ir_version = 8
    onnx.checker.check_model(onnx_model)
    return onnx_model.SerializeToString()
