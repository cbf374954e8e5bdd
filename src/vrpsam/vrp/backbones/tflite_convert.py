"""Our converter from the quantised TF-slim MobileNetV2 TFLite file to a float32 torchvision state dict.

The TFLite flatbuffer is parsed with the ``tflite`` package (generated schema readers, pure Python).
The graph is walked in execution order against the operations a :class:`~.mobilenet_v2.MobileNetV2`
performs, checking every step: operator, data flow (each op reads the previous op's output, each
residual ADD joins the block's input and output), strides, fused activation, padding and tensor
shapes. Anything else is a :class:`~vrpsam.errors.CheckpointError` naming the op; nothing is guessed.

Conversion of each tensor:

- dequantise: ``(q - zero_point) * scale``, per tensor or per channel (``quantized_dimension``) as the
  file says; int32 biases use their own stored scale (``input_scale * weight_scale``); float32
  tensors are taken as they are;
- layouts: conv OHWI -> OIHW, depthwise 1HWO -> O1HW, classifier [out, in] (FULLY_CONNECTED) or
  [out, 1, 1, in] (1x1 CONV_2D) -> Linear [out, in];
- BatchNorm: already folded into the convolutions, so each BN is written as the identity plus the
  folded bias (weight 1, bias b, running_mean 0, running_var 1 - 1e-5 so var + eps = 1,
  num_batches_tracked 0);
- classifier: the 1001-way TF head loses row 0 ("background"), leaving the 1000 standard classes.

Quantised inputs must cover [-1, 1] (the TF-slim input convention the converted weights expect).

:func:`load_mobilenet_v2_imagenet` runs the conversion on first use and caches the result as
safetensors in :func:`vrpsam.weights.cache_dir`, keyed by the TFLite file's SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ...errors import CheckpointError
from ...io.atomic import atomic_path
from ...weights import read_state_dict
from .mobilenet_v2 import ConvBNReLU6, InvertedResidual, MobileNetV2

# Bump when the conversion changes, so stale cached conversions are not reused.
_CONVERTER_VERSION = 1
_REGISTRY_NAME = "mobilenet_v2_tflite"
_BN_EPS = 1e-5
_TF_CLASSES = 1001  # background + the 1000 ImageNet classes

# TFLite schema enums (schema.fbs), spelled out to keep messages readable.
_NUMPY_TYPES = {0: "<f4", 1: "<f2", 2: "<i4", 3: "u1", 4: "<i8", 9: "i1"}  # TensorType
_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_PADDINGS = {0: "SAME", 1: "VALID"}
_PASS_THROUGH = ("RESHAPE", "SQUEEZE")  # ops that only change the shape of the logits


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str | None
    data: np.ndarray | None
    scale: np.ndarray | None
    zero_point: np.ndarray | None
    quantized_dimension: int


@dataclass
class _Op:
    index: int
    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, object] = field(default_factory=dict)


@dataclass
class _Graph:
    tensors: list[_Tensor]
    ops: list[_Op]
    inputs: tuple[int, ...]


# ----------------------------------------------------------------------------- reading the flatbuffer


def _options(op, kind: str) -> dict[str, object]:
    import tflite

    readers = {
        "CONV_2D": tflite.Conv2DOptions,
        "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
        "AVERAGE_POOL_2D": tflite.Pool2DOptions,
        "ADD": tflite.AddOptions,
        "FULLY_CONNECTED": tflite.FullyConnectedOptions,
    }
    table = op.BuiltinOptions()
    if kind not in readers or table is None:
        return {}
    opts = readers[kind]()
    opts.Init(table.Bytes, table.Pos)
    out: dict[str, object] = {"activation": _ACTIVATIONS.get(opts.FusedActivationFunction(), "?")}
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D"):
        out["stride"] = (opts.StrideH(), opts.StrideW())
        out["padding"] = _PADDINGS.get(opts.Padding(), "?")
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        out["dilation"] = (opts.DilationHFactor(), opts.DilationWFactor())
    if kind == "DEPTHWISE_CONV_2D":
        out["depth_multiplier"] = opts.DepthMultiplier()
    if kind == "AVERAGE_POOL_2D":
        out["filter"] = (opts.FilterHeight(), opts.FilterWidth())
    return out


def _tensor(model, graph, index: int, raw: bytes) -> _Tensor:
    t = graph.Tensors(index)
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    dtype = _NUMPY_TYPES.get(t.Type())
    data = None
    buffer = model.Buffers(t.Buffer())
    if buffer.DataLength():
        data = buffer.DataAsNumpy()
    elif buffer.Offset() > 1:  # large models keep buffers after the flatbuffer
        data = np.frombuffer(raw, np.uint8, count=buffer.Size(), offset=buffer.Offset())
    name = t.Name().decode("utf-8", "replace")
    if data is not None and dtype is not None:
        count = int(np.prod(shape)) if shape else 1
        if data.nbytes != count * np.dtype(dtype).itemsize:
            raise ValueError(f"tensor {name!r} holds {data.nbytes} bytes for shape {shape}")
        data = data.view(dtype).reshape(shape)
    q = t.Quantization()
    scale = zero_point = None
    qdim = 0
    if q is not None and q.ScaleLength():
        scale = q.ScaleAsNumpy().astype(np.float64)
        zero_point = q.ZeroPointAsNumpy().astype(np.float64) if q.ZeroPointLength() else np.zeros(1)
        qdim = q.QuantizedDimension()
    return _Tensor(name, shape, dtype, data, scale, zero_point, qdim)


def _read_graph(path: Path) -> _Graph:
    """Parse ``path`` into plain Python objects; any malformed byte is one :class:`CheckpointError`."""
    import tflite
    from tflite.utils import opcode2name

    raw = path.read_bytes()
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise CheckpointError(f"{path}: not a TFLite model (no 'TFL3' file identifier)")
    try:
        model = tflite.Model.GetRootAs(raw, 0)
        if model.SubgraphsLength() != 1:
            raise CheckpointError(f"{path}: expected one subgraph, found {model.SubgraphsLength()}")
        graph = model.Subgraphs(0)
        tensors = [_tensor(model, graph, i, raw) for i in range(graph.TensorsLength())]
        ops = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            # Files from before schema v3a store the operator only in the deprecated byte field.
            kind = opcode2name(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
            inputs = tuple(int(v) for v in op.InputsAsNumpy()) if op.InputsLength() else ()
            outputs = tuple(int(v) for v in op.OutputsAsNumpy()) if op.OutputsLength() else ()
            ops.append(_Op(i, kind, inputs, outputs, _options(op, kind)))
        inputs = tuple(int(v) for v in graph.InputsAsNumpy()) if graph.InputsLength() else ()
    except CheckpointError:
        raise
    except Exception as exc:  # the generated readers fail in many ways on corrupt bytes
        raise CheckpointError(f"{path}: not a readable TFLite model ({type(exc).__name__}: {exc})") from None
    return _Graph(tensors, ops, inputs)


# ----------------------------------------------------------------------------- the expected network


@dataclass(frozen=True)
class _ConvStep:
    weight_key: str
    bn_key: str
    shape: tuple[int, ...]  # torch layout
    stride: int
    depthwise: bool
    relu6: bool
    starts_block: bool


@dataclass(frozen=True)
class _AddStep:
    block: str


def _conv_step(weight_key: str, bn_key: str, conv: nn.Conv2d, relu6: bool, starts_block: bool) -> _ConvStep:
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    return _ConvStep(weight_key, bn_key, tuple(conv.weight.shape), conv.stride[0], depthwise, relu6, starts_block)


def _expected_steps(net: MobileNetV2) -> list[_ConvStep | _AddStep]:
    """The convolutions and residual additions of ``net.features``, in execution order."""
    steps: list[_ConvStep | _AddStep] = []
    for i, block in enumerate(net.features):
        prefix = f"features.{i}"
        if isinstance(block, ConvBNReLU6):
            steps.append(_conv_step(f"{prefix}.0.weight", f"{prefix}.1", block[0], True, True))
            continue
        if not isinstance(block, InvertedResidual):
            raise TypeError(f"{prefix}: unexpected module {type(block).__name__}")
        units = list(block.conv)
        for j, unit in enumerate(units):
            first = j == 0
            if isinstance(unit, ConvBNReLU6):
                steps.append(_conv_step(f"{prefix}.conv.{j}.0.weight", f"{prefix}.conv.{j}.1", unit[0], True, first))
            elif isinstance(unit, nn.Conv2d):  # the linear projection, followed by its BatchNorm
                steps.append(_conv_step(f"{prefix}.conv.{j}.weight", f"{prefix}.conv.{j + 1}", unit, False, first))
        if block.use_res_connect:
            steps.append(_AddStep(prefix))
    return steps


# ----------------------------------------------------------------------------- matching and converting


class _Walker:
    """Consumes the graph's ops in order, tracking the tensor that flows through the network."""

    def __init__(self, path: Path, graph: _Graph) -> None:
        self.path, self.graph = path, graph
        self.position = 0
        if len(graph.inputs) != 1:
            self.fail(f"expected one graph input, found {len(graph.inputs)}")
        self.current = graph.inputs[0]

    def fail(self, message: str) -> None:
        raise CheckpointError(f"{self.path}: not the expected MobileNetV2 1.0 graph: {message}")

    def next_op(self, wanted: str) -> _Op:
        if self.position >= len(self.graph.ops):
            self.fail(f"the graph ends where {wanted} was expected")
        op = self.graph.ops[self.position]
        self.position += 1
        return op

    def where(self, op: _Op) -> str:
        return f"op {op.index} ({op.kind})"

    def expect_input(self, op: _Op) -> None:
        if not op.inputs or op.inputs[0] != self.current:
            self.fail(f"{self.where(op)} does not read the previous op's output")

    def tensor(self, op: _Op, slot: int) -> _Tensor:
        if len(op.inputs) <= slot or op.inputs[slot] < 0:
            self.fail(f"{self.where(op)} has no input {slot}")
        return self.graph.tensors[op.inputs[slot]]

    def values(self, op: _Op, t: _Tensor) -> np.ndarray:
        """``t`` dequantised to float32."""
        if t.data is None or t.dtype is None:
            self.fail(f"{self.where(op)}: tensor {t.name!r} has no constant data of a known type")
        if t.dtype in ("<f4", "<f2"):
            return t.data.astype(np.float32)
        if t.scale is None:
            self.fail(f"{self.where(op)}: integer tensor {t.name!r} has no quantisation scale")
        scale, zero = t.scale, t.zero_point
        if scale.size > 1:  # per channel, along quantized_dimension
            axis = t.quantized_dimension
            if axis >= len(t.shape) or t.shape[axis] != scale.size or zero.size not in (1, scale.size):
                self.fail(f"{self.where(op)}: tensor {t.name!r} has {scale.size} scales for shape {t.shape}")
            view = [1] * len(t.shape)
            view[axis] = scale.size
            scale = scale.reshape(view)
            zero = zero.reshape(view) if zero.size > 1 else zero
        # Exact in float64 (24-bit scale x 32-bit integer), then one rounding to float32.
        return ((t.data.astype(np.float64) - zero) * scale).astype(np.float32)


def _check_input_range(walker: _Walker) -> None:
    t = walker.graph.tensors[walker.current]
    if len(t.shape) != 4 or t.shape[-1] != 3:
        walker.fail(f"input {t.name!r} has shape {t.shape}, expected (1, H, W, 3)")
    if t.dtype in ("u1", "i1") and t.scale is not None:
        low, high = (0, 255) if t.dtype == "u1" else (-128, 127)
        lo, hi = ((np.array([low, high]) - t.zero_point[0]) * t.scale[0]).tolist()
        if abs(lo + 1) > 0.02 or abs(hi - 1) > 0.02:
            walker.fail(f"input {t.name!r} is quantised to [{lo:.3f}, {hi:.3f}], not the [-1, 1] the weights expect")


def _convert_conv(walker: _Walker, step: _ConvStep, state: dict[str, Tensor]) -> None:
    kind = "DEPTHWISE_CONV_2D" if step.depthwise else "CONV_2D"
    op = walker.next_op(f"{kind} for {step.weight_key}")
    if op.kind != kind:
        walker.fail(f"{walker.where(op)}: expected {kind} for {step.weight_key}")
    walker.expect_input(op)
    opts = op.options
    activation = "RELU6" if step.relu6 else "NONE"
    kernel = step.shape[-1]
    checks = {
        "stride": (opts.get("stride"), (step.stride, step.stride)),
        "fused activation": (opts.get("activation"), activation),
        "dilation": (opts.get("dilation"), (1, 1)),
    }
    if kernel > 1:
        checks["padding"] = (opts.get("padding"), "SAME")
    if step.depthwise:
        checks["depth multiplier"] = (opts.get("depth_multiplier"), 1)
    for what, (found, wanted) in checks.items():
        if found != wanted:
            walker.fail(f"{walker.where(op)} for {step.weight_key}: {what} {found}, expected {wanted}")
    weight_t, bias_t = walker.tensor(op, 1), walker.tensor(op, 2)
    weight = walker.values(op, weight_t)
    if weight.ndim != 4:
        walker.fail(f"{walker.where(op)}: weight {weight_t.name!r} has shape {weight_t.shape}")
    # OHWI -> OIHW for convolutions, 1HWO -> O1HW for depthwise ones.
    weight = weight.transpose(3, 0, 1, 2) if step.depthwise else weight.transpose(0, 3, 1, 2)
    if weight.shape != step.shape:
        walker.fail(
            f"{walker.where(op)}: weight {weight_t.name!r} gives {weight.shape} for {step.weight_key}, expected {step.shape}"
        )
    bias = walker.values(op, bias_t)
    if bias.shape != (step.shape[0],):
        walker.fail(f"{walker.where(op)}: bias {bias_t.name!r} has shape {bias.shape}, expected ({step.shape[0]},)")
    state[step.weight_key] = torch.from_numpy(np.ascontiguousarray(weight))
    state.update(_identity_batchnorm(step.bn_key, torch.from_numpy(bias.copy())))
    walker.current = op.outputs[0]


def _identity_batchnorm(prefix: str, bias: Tensor) -> dict[str, Tensor]:
    """A BatchNorm that adds ``bias`` and otherwise passes its input through (eval mode, eps 1e-5)."""
    n = bias.numel()
    return {
        f"{prefix}.weight": torch.ones(n),
        f"{prefix}.bias": bias,
        f"{prefix}.running_mean": torch.zeros(n),
        f"{prefix}.running_var": torch.full((n,), 1.0 - _BN_EPS),
        f"{prefix}.num_batches_tracked": torch.zeros((), dtype=torch.long),
    }


def _check_add(walker: _Walker, step: _AddStep, block_input: int) -> None:
    op = walker.next_op(f"the residual ADD of {step.block}")
    if op.kind != "ADD" or sorted(op.inputs) != sorted((walker.current, block_input)):
        walker.fail(f"{walker.where(op)}: expected the residual ADD of {step.block} (block input + block output)")
    if op.options.get("activation") != "NONE":
        walker.fail(f"{walker.where(op)}: residual ADD of {step.block} has activation {op.options.get('activation')}")
    walker.current = op.outputs[0]


def _check_pool(walker: _Walker) -> None:
    op = walker.next_op("the global AVERAGE_POOL_2D")
    if op.kind != "AVERAGE_POOL_2D":
        walker.fail(f"{walker.where(op)}: expected the global AVERAGE_POOL_2D after features.18")
    walker.expect_input(op)
    spatial = walker.graph.tensors[walker.current].shape[1:3]
    if op.options.get("filter") != spatial or op.options.get("activation") != "NONE":
        walker.fail(f"{walker.where(op)}: pool {op.options} is not a global average over {spatial}")
    walker.current = op.outputs[0]


def _skip_reshapes(walker: _Walker) -> None:
    while walker.position < len(walker.graph.ops) and walker.graph.ops[walker.position].kind in _PASS_THROUGH:
        op = walker.next_op("a reshape")
        walker.expect_input(op)
        walker.current = op.outputs[0]


def _convert_classifier(walker: _Walker, linear: nn.Linear, state: dict[str, Tensor]) -> None:
    _skip_reshapes(walker)
    op = walker.next_op("the classifier")
    if op.kind not in ("CONV_2D", "FULLY_CONNECTED"):
        walker.fail(f"{walker.where(op)}: expected the classifier (1x1 CONV_2D or FULLY_CONNECTED)")
    walker.expect_input(op)
    if op.options.get("activation") != "NONE":
        walker.fail(f"{walker.where(op)}: classifier has fused activation {op.options.get('activation')}")
    weight_t, bias_t = walker.tensor(op, 1), walker.tensor(op, 2)
    weight, bias = walker.values(op, weight_t), walker.values(op, bias_t)
    expected_tf = (_TF_CLASSES, 1, 1, linear.in_features) if op.kind == "CONV_2D" else (_TF_CLASSES, linear.in_features)
    if weight.shape != expected_tf or bias.shape != (_TF_CLASSES,):
        walker.fail(
            f"{walker.where(op)}: classifier weight {weight.shape} / bias {bias.shape}, "
            f"expected {expected_tf} / ({_TF_CLASSES},)"
        )
    # Row 0 is TF's "background" class; torchvision's head has the 1000 ImageNet classes only.
    state["classifier.1.weight"] = torch.from_numpy(np.ascontiguousarray(weight.reshape(_TF_CLASSES, -1)[1:]))
    state["classifier.1.bias"] = torch.from_numpy(bias[1:].copy())
    walker.current = op.outputs[0]


def _check_tail(walker: _Walker) -> None:
    """After the logits only reshapes and one softmax may follow."""
    _skip_reshapes(walker)
    if walker.position < len(walker.graph.ops) and walker.graph.ops[walker.position].kind == "SOFTMAX":
        walker.expect_input(walker.next_op("SOFTMAX"))
    if walker.position < len(walker.graph.ops):
        op = walker.graph.ops[walker.position]
        walker.fail(f"{walker.where(op)}: unexpected op after the classifier")


def convert_mobilenet_v2_tflite(path: str | os.PathLike) -> dict[str, Tensor]:
    """Convert a MobileNetV2 1.0 TFLite file to a float32 state dict with torchvision's key names.

    Raises :class:`CheckpointError` if ``path`` is missing, unreadable or not that network.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such TFLite file")
    graph = _read_graph(path)
    # Only the layer structure is read; on the meta device it costs nothing and draws no random numbers,
    # so converting (or not, when cached) leaves the caller's seeded generator untouched.
    with torch.device("meta"):
        net = MobileNetV2()
    walker = _Walker(path, graph)
    _check_input_range(walker)
    state: dict[str, Tensor] = {}
    block_input = walker.current
    for step in _expected_steps(net):
        if isinstance(step, _AddStep):
            _check_add(walker, step, block_input)
            continue
        if step.starts_block:
            block_input = walker.current
        _convert_conv(walker, step, state)
    _check_pool(walker)
    _convert_classifier(walker, net.classifier[1], state)
    _check_tail(walker)
    expected = net.state_dict()
    if set(state) != set(expected):
        raise CheckpointError(f"{path}: conversion produced keys that do not match MobileNetV2")  # a converter bug
    return {key: state[key] for key in expected}


# ----------------------------------------------------------------------------- cached, on first use


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert_tflite_cached(path: str | os.PathLike, cache: str | os.PathLike | None = None) -> dict[str, Tensor]:
    """:func:`convert_mobilenet_v2_tflite`, cached as safetensors in ``cache`` (default
    :func:`vrpsam.weights.cache_dir`) under the file's SHA-256; later calls read the cache."""
    from safetensors.torch import save_file

    from ...weights import cache_dir

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such TFLite file")
    folder = Path(cache) if cache is not None else cache_dir()
    target = folder / f"mobilenet_v2_tflite_v{_CONVERTER_VERSION}_{_sha256(path)}.safetensors"
    if target.is_file():
        return read_state_dict(target)
    state = convert_mobilenet_v2_tflite(path)
    try:
        with atomic_path(target) as temporary:
            save_file(state, str(temporary))
    except OSError as exc:
        warnings.warn(f"could not cache the converted {path.name} in {folder}: {exc}", stacklevel=2)
    return state


def load_mobilenet_v2_imagenet() -> dict[str, Tensor]:
    """The ImageNet MobileNetV2 (torchvision keys, 1000 classes, float32) from the registry's TFLite
    file ``mobilenet_v2_tflite``: found or downloaded by :func:`vrpsam.weights.resolve`, converted on
    first use, then read from the cache."""
    from ...weights import resolve

    return convert_tflite_cached(resolve(_REGISTRY_NAME))
