"""Count the FLOPs of a Keras model the way the segmentation papers report them.

Convention: one multiply-accumulate (MAC) = one FLOP
------------------------------------------------------
Every "GFLOPs" figure in the five papers kseg implements is a count of
multiply-accumulates (seeds/specs/INDEX.md; verified against their tables):

* SegFormer (Xie et al. 2021) measures with the NVlabs ``tools/get_flops.py``: mmcv's
  ``get_model_complexity_info`` (forward hooks on modules: ``nn.Conv2d`` = kernel MACs per
  output element, ``nn.Linear`` = input elements x output features) **plus** the two
  attention matmuls ``QK^T`` and ``AV`` of every block, which module hooks cannot see and
  the script adds by hand (``sra_flops``: ``N * N_kv * d_head * heads`` each).
* SegViT (Zhang et al. 2022), and the Segmenter / SETR numbers it quotes, use fvcore's
  ``FlopCountAnalysis``, which "counts one fused multiply-add as one flop" on
  ``matmul``/``bmm``/``linear``/``addmm``/``einsum``/``_convolution``, attention matmuls
  included.

So the total here is the sum of MACs of the contraction ops of the traced graph:

=============================  ==============================================================
TF op                          MACs
=============================  ==============================================================
MatMul (Dense, Tensordot)      m * k * n
BatchMatMulV2/V3 (attention)   batch * m * k * n (broadcast batch)
Einsum (two operands)          product of the sizes of all distinct indices
Conv2D / Conv3D / Conv         output elements * kernel_h * kernel_w * in_channels / groups
DepthwiseConv2dNative          output elements * kernel_h * kernel_w
Conv2DBackpropInput (deconv)   input elements * kernel_h * kernel_w * out_channels
=============================  ==============================================================

Not counted (as in fvcore, and as mmcv does for everything that is not a module it
hooks): bias additions, normalisation, activations (GELU, ReLU), softmax, residual adds,
resizing, padding, reshapes. mmcv adds one FLOP per element for some of these (BatchNorm,
LayerNorm, ReLU, nn.Upsample, conv biases), fvcore four per output element of a bilinear
upsample and five per element of a LayerNorm; at the papers' sizes those are < 2% of the
totals (SegFormer-B0 @512: < 0.1 G of 8.4 G), below the precision of the tables.

Which graph is counted
----------------------
The counted function maps images to per-pixel class scores, the inference forward the
papers measure: ``model(images, training=False)`` for per-pixel models (logits at their
native stride; the final resize to the image costs no MACs), and for mask-classification
models (a dict of class and mask logits, SegViT, MaskFormer) that plus their semantic
inference ``sum_q p_q(c) m_q`` (an einsum of Q x K MACs per pixel). It is traced into a
concrete ``tf.function`` graph at one fixed input shape (batch 1 by default, the papers'
per-image numbers); the graph is only built, never executed, so counting SegFormer-B5 at
640x640 takes seconds. Nested function calls (Keras runs grouped convolutions through
one) are followed. Shapes must be
static in that graph (they are for every kseg model at a fixed input shape); an op whose
shape is still unknown is listed in :attr:`FlopsReport.unknown` and not guessed.

* ``formulation="paper"`` (default) counts the architecture as the paper writes it. A
  layer that computes its paper's formula by a cheaper but algebraically equal route
  exposes the paper's version as ``reference_call``; for the count, that method replaces
  ``call`` while tracing. In kseg this is ``SegFormerHead``: it folds the 1x1 fuse conv
  into the per-stage Linears (same outputs, ~0.05x the decoder MACs for C = 768), whereas
  Table 1a counts Eq. 4 as written (linear_c, upsample, concat, fuse on 4C channels at
  stride 4: 42.1 G of B2's 62.4 G). Mask-classification models run their semantic
  inference at the input resolution, after a bilinear upsampling of the mask logits, as
  the authors' code does (SegViT ``atm_head.py``, MaskFormer ``semantic_inference`` after
  ``sem_seg_postprocess``): K x Q MACs per input pixel, 5.9 G of SegViT ViT-B's 120.9 G.
* ``formulation="executed"`` counts what the model actually runs (kseg's
  ``semantic_logits`` at the mask stride, 1/256 of that cost at stride 16).

Every op the traced graph runs is in the total, including work that does not depend on
the input images (the learned queries' first self-attention in SegViT's decoders,
position-embedding resampling, SegFormer's kernel folding): the papers' counters count
it too, since it runs at every forward. Its share is reported separately as
:attr:`FlopsReport.weight_only_macs`, being work an exporter could precompute.

Validation (tests/tools/test_get_flops.py, ADE20K, 150 classes, paper formulation):
SegFormer B0-B5 (Table 1a; B5 at 640) within 0.15%; SegViT ViT-B / Shrunk ViT-B at 512 and
ViT-L / Shrunk ViT-L at 640 within 0.4%; Segmenter ViT-B mask (512) and ViT-L mask (640)
and ViT-B + SETR naive head within 0.3% of SegViT's numbers; MaskFormer R50..Swin-L
(Table 1) within 1.6%. SETR-MLA differs by its classifier kernel (see the test).

Per-layer attribution uses the name scopes Keras opens around each layer call: an op
belongs to the innermost layer whose ``__call__`` created it (ops a layer creates in its
own ``call`` from a sublayer's weights belong to the layer itself).
"""

import collections
import dataclasses
import math
import re

SEMANTIC_SCOPE = "semantic_inference"
# Ops that only move, reinterpret or read data; not listed among the uncounted work.
_PLUMBING = frozenset((
    "Const", "Placeholder", "Identity", "IdentityN", "Reshape", "Transpose", "Squeeze",
    "ExpandDims", "StridedSlice", "Slice", "ConcatV2", "Pack", "Unpack", "Split", "SplitV",
    "Shape", "ShapeN", "Cast", "ReadVariableOp", "NoOp", "StopGradient", "Fill", "Pad",
    "PadV2", "GatherV2", "Range", "Size", "Rank", "ZerosLike", "OnesLike", "BroadcastTo",
    "Tile", "TensorListFromTensor", "TensorListStack", "TensorListReserve",
))


def _dims(tensor):
    shape = tensor.shape
    if shape.rank is None or any(d is None for d in shape.as_list()):
        return None
    return shape.as_list()


def _numel(dims):
    return math.prod(dims)


def _matmul(op):
    a, b = _dims(op.inputs[0]), _dims(op.inputs[1])
    if a is None or b is None:
        return None
    m, k = (a[1], a[0]) if op.get_attr("transpose_a") else (a[0], a[1])
    n = b[0] if op.get_attr("transpose_b") else b[1]
    return m * k * n


def _batch_matmul(op):
    a, b = _dims(op.inputs[0]), _dims(op.inputs[1])
    if a is None or b is None:
        return None
    m, k = (a[-1], a[-2]) if op.get_attr("adj_x") else (a[-2], a[-1])
    n = b[-2] if op.get_attr("adj_y") else b[-1]
    batch_a, batch_b = a[:-2], b[:-2]
    rank = max(len(batch_a), len(batch_b))
    batch_a = [1] * (rank - len(batch_a)) + batch_a
    batch_b = [1] * (rank - len(batch_b)) + batch_b
    return math.prod(max(x, y) for x, y in zip(batch_a, batch_b)) * m * k * n


def einsum_macs(equation, shapes):
    """MACs of a two-operand einsum: the product of the sizes of all distinct indices
    (each combination of indices is one multiply-add). One operand (a transpose or a
    reduction) counts 0. Ellipses are aligned from the right and broadcast."""
    terms = equation.replace(" ", "").split("->")[0].split(",")
    if len(terms) < 2:
        return 0
    sizes = {}
    for term, shape in zip(terms, shapes):
        if "..." in term:
            left, right = term.split("...")
            n_ell = len(shape) - len(left) - len(right)
            labels = list(left) + [f".{n_ell - 1 - i}" for i in range(n_ell)] + list(right)
        else:
            labels = list(term)
        if len(labels) != len(shape):
            raise ValueError(f"einsum {equation!r}: term {term!r} does not fit shape {shape}")
        for label, size in zip(labels, shape):
            sizes[label] = max(sizes.get(label, 1), size)
    return math.prod(sizes.values())


def _einsum(op):
    shapes = [_dims(t) for t in op.inputs]
    if any(s is None for s in shapes):
        return None
    equation = op.get_attr("equation")
    if isinstance(equation, bytes):
        equation = equation.decode()
    return einsum_macs(equation, shapes)


def _conv(op):
    out, kernel = _dims(op.outputs[0]), _dims(op.inputs[1])
    if out is None or kernel is None:
        return None
    # Kernel (*spatial, in_channels / groups, out_channels): one MAC per kernel tap and
    # input channel of the output element's group.
    return _numel(out) * math.prod(kernel[:-1])


def _depthwise(op):
    out, kernel = _dims(op.outputs[0]), _dims(op.inputs[1])
    if out is None or kernel is None:
        return None
    return _numel(out) * math.prod(kernel[:-2])


def _conv_transpose(op):
    # inputs: (input_sizes, filter (*spatial, out_channels, in_channels), out_backprop):
    # every element of the transposed conv's input scatters into kernel taps x out_channels.
    kernel, x = _dims(op.inputs[1]), _dims(op.inputs[2])
    if kernel is None or x is None:
        return None
    return _numel(x) * math.prod(kernel[:-1])


_RULES = {
    "MatMul": _matmul, "_FusedMatMul": _matmul,
    "BatchMatMul": _batch_matmul, "BatchMatMulV2": _batch_matmul, "BatchMatMulV3": _batch_matmul,
    "Einsum": _einsum,
    "Conv2D": _conv, "_FusedConv2D": _conv, "Conv3D": _conv, "Conv": _conv,
    "DepthwiseConv2dNative": _depthwise,
    "Conv2DBackpropInput": _conv_transpose, "Conv3DBackpropInputV2": _conv_transpose,
}
# Op types whose MACs are counted (see the module docstring).
COUNTED_OP_TYPES = tuple(_RULES)


@dataclasses.dataclass(frozen=True)
class OpCount:
    """One counted op: graph name, type, layer path, MACs, whether it depends on the input."""

    name: str
    type: str
    layer: tuple
    macs: int
    data_dependent: bool


def count_graph_macs(graph, data_inputs):
    """MACs of every contraction op of a ``tf.Graph`` (e.g. a concrete function's graph).

    Calls of nested functions (``PartitionedCall``/``StatefulPartitionedCall``, e.g. the
    XLA-compiled grouped convolution of Keras) are followed; their ops are named
    ``<call op name>/<inner op name>``. Loops and conditionals are not counted (their trip
    count or branch is not static); they are listed in ``unknown``.

    Args:
      graph: the graph.
      data_inputs: the tensors holding the data (the images); ops reached from them are
        ``data_dependent``, the others only read weights/constants.
    Returns:
      (ops, unknown, uncounted): a list of :class:`OpCount` (layer left empty), a list of
      ops that could not be counted (shape not static, loops), and a Counter of the
      data-dependent op types that are not counted (elementwise work, resizes, softmax, ...).
    """
    ops, unknown, uncounted = [], [], collections.Counter()
    _count_into(graph, {t.ref() for t in data_inputs}, "", ops, unknown, uncounted)
    return ops, unknown, uncounted


_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")
_CONTROL_FLOW_OPS = ("While", "StatelessWhile", "If", "StatelessIf", "Case", "StatelessCase")


def _count_into(graph, dependent, prefix, ops, unknown, uncounted):
    for op in graph.get_operations():
        name = prefix + op.name
        is_dependent = any(t.ref() in dependent for t in op.inputs)
        if is_dependent:
            dependent.update(t.ref() for t in op.outputs)
        if op.type in _CALL_OPS:
            inner = graph._get_function(op.get_attr("f").name)
            inner_graph = getattr(inner, "graph", None)
            if inner_graph is None or len(inner_graph.inputs) < len(op.inputs):
                unknown.append(f"{name} ({op.type}: function body not available)")
                continue
            inner_dependent = {p.ref() for p, t in zip(inner_graph.inputs, op.inputs) if t.ref() in dependent}
            _count_into(inner_graph, inner_dependent, name + "/", ops, unknown, uncounted)
            continue
        if op.type in _CONTROL_FLOW_OPS:
            unknown.append(f"{name} ({op.type}: control flow is not counted)")
            continue
        rule = _RULES.get(op.type)
        if rule is None:
            if is_dependent and op.type not in _PLUMBING:
                uncounted[op.type] += 1
            continue
        macs = rule(op)
        if macs is None:
            unknown.append(f"{name} ({op.type}: shape not static)")
            continue
        ops.append(OpCount(name, op.type, (), int(macs), is_dependent))


@dataclasses.dataclass
class FlopsReport:
    """The result of :func:`count_flops`.

    ``macs`` (= FLOPs in the papers' convention) counts the contraction ops for
    ``batch_size`` images; ``gflops`` is per image, in units of 1e9. ``weight_only_macs``
    is the part of ``macs`` that does not depend on the input.
    """

    model_name: str
    input_shape: tuple
    batch_size: int
    formulation: str
    macs: int
    weight_only_macs: int
    params: int
    ops: list
    layer_params: dict
    unknown: list
    uncounted: collections.Counter
    reference_layers: list

    @property
    def gflops(self):
        return self.macs / self.batch_size / 1e9

    def by_layer(self, depth=2):
        """{layer path (``a/b`` up to ``depth`` levels below the model): MACs}, largest first.
        Ops created directly in a layer's ``call`` belong to it; the semantic inference of
        mask-classification models is ``semantic_inference``."""
        totals = collections.Counter()
        for op in self.ops:
            totals["/".join(op.layer[:depth]) or "(model)"] += op.macs
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

    def by_op_type(self):
        totals = collections.Counter()
        for op in self.ops:
            totals[op.type] += op.macs
        return dict(totals.most_common())

    def summary(self, by_layer=False, depth=2):
        """A printable multi-line summary."""
        shape = "x".join(str(d) for d in self.input_shape)
        lines = [
            f"model        {self.model_name}",
            f"input        {self.batch_size}x{shape} ({self.formulation} formulation)",
            f"GFLOPs       {self.gflops:.2f}  (multiply-accumulates per image, 1e9)",
            f"params       {self.params / 1e6:.2f} M ({self.params:,})",
        ]
        if self.reference_layers:
            lines.append("paper form   " + ", ".join(self.reference_layers))
        lines.append("by op type   " + ", ".join(
            f"{t} {m / self.batch_size / 1e9:.2f}G" for t, m in self.by_op_type().items()))
        if self.weight_only_macs:
            lines.append(f"of which     {self.weight_only_macs / self.batch_size / 1e9:.3f} G do not depend "
                         "on the input (weights-only work)")
        if self.uncounted:
            lines.append("not counted  " + ", ".join(f"{t} x{n}" for t, n in sorted(self.uncounted.items())))
        for item in self.unknown:
            lines.append(f"UNCOUNTED    {item}")
        if by_layer:
            lines.append("")
            lines.append(f"{'layer':<48} {'GFLOPs':>10} {'share':>7} {'params (M)':>11}")
            for path, macs in self.by_layer(depth).items():
                params = self.layer_params.get(path)
                p = f"{params / 1e6:11.3f}" if params is not None else f"{'':>11}"
                lines.append(f"{path:<48} {macs / self.batch_size / 1e9:10.3f} "
                             f"{100 * macs / max(self.macs, 1):6.1f}% {p}")
        return "\n".join(lines)

    def as_dict(self, depth=2):
        return {
            "model": self.model_name,
            "input_shape": list(self.input_shape),
            "batch_size": self.batch_size,
            "formulation": self.formulation,
            "gflops": self.gflops,
            "macs": self.macs,
            "weight_only_macs": self.weight_only_macs,
            "params": self.params,
            "by_op_type": self.by_op_type(),
            "by_layer": self.by_layer(depth),
            "reference_layers": self.reference_layers,
            "unknown": self.unknown,
        }


def _children(layer):
    try:
        return list(layer._flatten_layers(include_self=False, recursive=False))
    except AttributeError:
        return []


def _walk_layers(model):
    """Yields (path tuple, layer) for every sublayer below ``model``."""
    stack = [((), model)]
    seen = set()
    while stack:
        path, layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if path:
            yield path, layer
        for child in _children(layer):
            stack.append((path + (child.name,), child))


def _layer_of(op_name, model):
    """The layer path of an op from its name scopes. Keras opens ``tf.name_scope(layer.name)``
    around each layer call; TF makes repeated scope names unique with ``_<n>``."""
    parts = op_name.split("/")
    if not re.fullmatch(re.escape(model.name) + r"(_\d+)?", parts[0]):
        return (parts[0],) if len(parts) > 1 else ()  # outside the model (semantic inference)
    parts = parts[1:-1]  # drop the model's own scope and the op's name
    path, layer = [], model
    for part in parts:
        children = _children(layer)
        match = None
        for child in children:  # a uniquified scope ("query_1") first, then an exact name
            if re.fullmatch(re.escape(child.name) + r"_\d+", part):
                match = child
                break
        if match is None:
            match = next((c for c in children if c.name == part), None)
        if match is None:
            break
        path.append(match.name)
        layer = match
    return tuple(path)


class _ReferenceCalls:
    """Within the context, every sublayer with a ``reference_call`` runs it as ``call``."""

    def __init__(self, model):
        self.layers = [(p, l) for p, l in _walk_layers(model) if callable(getattr(l, "reference_call", None))]

    def __enter__(self):
        for _, layer in self.layers:
            layer.call = layer.reference_call
        return self

    def __exit__(self, *exc):
        for _, layer in self.layers:
            del layer.call


def _segmentation_scores(model, images, formulation):
    """Per-pixel class scores: ``model(images)``, plus semantic inference for dict outputs."""
    import tensorflow as tf

    outputs = model(images, training=False)
    if not (isinstance(outputs, dict) and "class_logits" in outputs and "mask_logits" in outputs):
        return outputs
    with tf.name_scope(SEMANTIC_SCOPE):
        if formulation == "executed" and hasattr(model, "semantic_logits"):
            return model.semantic_logits(outputs)
        from kseg.inference.semantic import semantic_inference

        masks = outputs["mask_logits"]
        if formulation == "paper":
            masks = tf.image.resize(masks, tf.shape(images)[1:3], method="bilinear")
        return semantic_inference(outputs["class_logits"], masks)


def count_flops(model, input_shape, batch_size=1, formulation="paper", dtype="float32"):
    """Counts the MACs from images to per-pixel class scores for one fixed input shape:
    ``model(x, training=False)``, plus semantic inference for mask-classification models.

    Args:
      model: a built Keras model (any kseg variant from ``kseg.models.build_model``, or any
        model with one tensor input).
      input_shape: the input shape without the batch, e.g. ``(512, 512, 3)``.
      batch_size: images per traced call; :attr:`FlopsReport.gflops` is per image.
      formulation: ``"paper"`` (layers with a ``reference_call`` count it instead of their
        optimised ``call``; semantic inference at the input resolution) or ``"executed"``
        (what ``call`` and ``semantic_logits`` run); see the module docstring.
      dtype: the input dtype.
    Returns: a :class:`FlopsReport`.
    Raises: ValueError for an unknown formulation.
    """
    import tensorflow as tf

    if formulation not in ("paper", "executed"):
        raise ValueError(f"formulation must be 'paper' or 'executed', got {formulation!r}")
    spec = tf.TensorSpec((batch_size,) + tuple(input_shape), dtype)
    reference = _ReferenceCalls(model) if formulation == "paper" else None
    fn = tf.function(lambda x: _segmentation_scores(model, x, formulation), autograph=False)
    if reference is not None:
        with reference:
            concrete = fn.get_concrete_function(spec)
        reference_layers = ["/".join(p) for p, _ in reference.layers]
    else:
        concrete = fn.get_concrete_function(spec)
        reference_layers = []
    ops, unknown, uncounted = count_graph_macs(concrete.graph, concrete.inputs[:1])
    ops = [dataclasses.replace(op, layer=_layer_of(op.name, model)) for op in ops]
    layer_params = {}
    for path, layer in _walk_layers(model):
        layer_params["/".join(path)] = sum(math.prod(w.shape) for w in layer.weights)
    return FlopsReport(
        model_name=getattr(model, "variant", None) or model.name,
        input_shape=tuple(input_shape),
        batch_size=batch_size,
        formulation=formulation,
        macs=sum(op.macs for op in ops),
        weight_only_macs=sum(op.macs for op in ops if not op.data_dependent),
        params=int(model.count_params()),
        ops=ops,
        layer_params=layer_params,
        unknown=unknown,
        uncounted=uncounted,
        reference_layers=reference_layers,
    )
