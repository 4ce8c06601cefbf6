"""SegViT decoders (Zhang et al. 2022): the Attention-to-Mask (ATM) cascade and the Shrunk
structure's query-based up-sampling (QU) + single ATM.

ATM (Sec. 3.1, Fig. 2): learnable class tokens G (N = K, one per class) are the queries of a
transformer decoder whose keys/values are ViT tokens F_i. In the cross-attention
``S = Q K^T / sqrt(d)`` (N x L) gives both the token update (``softmax_L(S) V``) and the mask
``sigmoid(S)``, reshaped to N x h x w. Class logits over K+1 (last = "no object") come from
one Linear on the updated tokens. The paper leaves the internals open (segvit.md §7.4-7.7);
every choice below follows the authors' code (github.com/zbwxp/SegVit, ``decode_heads/
atm_head.py``, ``tpn_atm_head.py``, ``atm_single_head.py``); with them an analytic MAC
count reproduces all of the paper's GFLOPs within 1 G (see :mod:`kseg.models.segvit`):

- one ATM = a stack of ``num_layers`` = 3 post-norm decoder layers (PyTorch
  ``nn.TransformerDecoderLayer`` layout: self-attention among the class tokens, cross-attention
  to the features, ReLU FFN of 4x width, each followed by dropout 0.1, residual and LayerNorm
  eps 1e-5; attention dropout 0.1); width ``dim`` = ViT width / 2, heads = ViT heads;
- features pass ``input_proj_i`` (Linear C -> dim) and ``proj_norm_i`` (LayerNorm) first;
- the mask of an ATM is the *mean over heads* of the scaled similarity (code:
  ``attn.sum(dim=1) / num_heads``; the paper's Fig. 1 says "summed": same up to scale) of its
  last layer, taken before the softmax;
- cascade: ATM #1 reads the deepest tap, its tokens are the queries of ATM #2, ...; the mask
  logits of group j are the running sum of the groups 1..j (sum of logits, not sigmoids);
  every group is supervised; one ``class_embed`` is shared by all groups;
- Shrunk (Sec. 3.3, Fig. 3c): QU = learnable tokens laid out on the 1/16 grid, decoded by
  two standard decoders (3 layers each) over the projected low 1/16 tap and the last 1/32
  layer; the resulting 1/16 token map feeds a single ATM (no projection) whose 3 layers are
  each one supervised group, masks not summed;
- initialisation as the authors' ``init_weights``: Linear layers trunc-normal std 0.02 with
  zero bias, LayerNorm 1/0, class and QU token tables N(0, 1) (``nn.Embedding`` default), the
  self-attention ``in_proj`` xavier-uniform (``nn.MultiheadAttention``).

Deviation for dynamic input sizes: the authors' QU tokens are a fixed ``(img_size/16)^2``
table; here that table is stored as the same ``(g*g, dim)`` weight and resampled at run time to
the input's 1/16 grid (bicubic, PyTorch kernel, identity at the training size), like the ViT
position embedding.

Names mirror the authors' checkpoint (``decode_head.q``, ``class_embed``, ``input_proj_{i}``,
``proj_norm_{i}``, ``decoder_{i}.layers.{j}.{self_attn.{in_proj,out_proj}, multihead_attn.
{q,k,v,proj}, linear1, linear2, norm1, norm2, norm3}``, ``atm.*``), so
:mod:`kseg.convert.segvit` only renames and transposes.

Outputs are float32 (similarities and class logits are computed in float32).
"""

import keras
import tensorflow as tf
from keras import ops

from kseg.layers.attention import merge_heads, scaled_dot_product_attention, split_heads
from kseg.layers.pos_embed import INTERPOLATIONS, resample_grid

TORCH_LN_EPS = 1e-5  # nn.LayerNorm / nn.TransformerDecoderLayer default


def _linear(units, name):
    """Dense initialised as the authors' ``init_weights``: trunc-normal std 0.02, bias 0."""
    return keras.layers.Dense(units, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02), name=name)


def _embedding_init():
    """nn.Embedding's default N(0, 1), which the authors' init_weights leaves as is (class
    tokens and QU tokens). A fresh unseeded initializer per weight (a shared one repeats values)."""
    return keras.initializers.RandomNormal(stddev=1.0)


def _attend(q, k, v, num_heads, dropout, training):
    """Multi-head attention returning (output (B, Nq, D), head-mean scaled scores fp32 (B, Nq, Nk))."""
    qh, kh, vh = (split_heads(t, num_heads) for t in (q, k, v))
    out, scores = scaled_dot_product_attention(qh, kh, vh, dropout=dropout, training=training, return_scores=True)
    return merge_heads(out), ops.mean(scores, axis=1)


@keras.saving.register_keras_serializable(package="kseg")
class DecoderSelfAttention(keras.layers.Layer):
    """``nn.MultiheadAttention`` self-attention: fused ``in_proj`` (rows q, k, v) and ``out_proj``.

    Input/output (B, N, dim); softmax in float32, attention dropout ``dropout``.
    """

    def __init__(self, dim, num_heads, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(f"decoder dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.dropout_rate = dim, num_heads, dropout
        self.in_proj = keras.layers.Dense(3 * dim, name="in_proj")  # xavier-uniform, as nn.MultiheadAttention
        self.out_proj = _linear(dim, "out_proj")
        self.attn_drop = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        self.in_proj.build((None, None, self.dim))
        self.out_proj.build((None, None, self.dim))
        self.built = True

    def call(self, x, training=None):
        q, k, v = ops.split(self.in_proj(x), 3, axis=-1)
        out, _ = _attend(q, k, v, self.num_heads, self.attn_drop, training)
        return self.out_proj(out)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads, "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="kseg")
class DecoderCrossAttention(keras.layers.Layer):
    """Cross-attention with separate ``q``, ``k``, ``v`` and ``proj`` (the ATM ``Attention``).

    ``call(queries (B, N, dim), memory (B, L, dim))`` -> ``(out (B, N, dim), similarity
    (B, N, L) float32)``, the similarity being ``Q K^T / sqrt(d_head)`` averaged over heads
    (the ATM mask logits). Attention dropout ``dropout`` (0.1, authors' code).
    """

    def __init__(self, dim, num_heads, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(f"decoder dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.dropout_rate = dim, num_heads, dropout
        self.q, self.k, self.v, self.proj = (_linear(dim, n) for n in ("q", "k", "v", "proj"))
        self.attn_drop = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        for layer in (self.q, self.k, self.v, self.proj):
            layer.build((None, None, self.dim))
        self.built = True

    def call(self, queries, memory, training=None):
        out, sim = _attend(self.q(queries), self.k(memory), self.v(memory), self.num_heads, self.attn_drop, training)
        return self.proj(out), sim

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads, "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="kseg")
class ATMDecoderLayer(keras.layers.Layer):
    """Post-norm transformer decoder layer (``nn.TransformerDecoderLayer``, ReLU, eps 1e-5)::

        t = norm1(t + drop(self_attn(t)))
        t = norm2(t + drop(cross)),  (cross, S) = multihead_attn(t, memory)
        t = norm3(t + drop(linear2(drop(relu(linear1(t))))))

    ``call(tokens (B, N, dim), memory (B, L, dim))`` -> ``(tokens, S (B, N, L) float32)``.
    """

    def __init__(self, dim, num_heads, ffn_dim=None, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_heads, self.ffn_dim = dim, num_heads, ffn_dim or 4 * dim
        self.dropout_rate = dropout
        self.self_attn = DecoderSelfAttention(dim, num_heads, dropout, name="self_attn")
        self.multihead_attn = DecoderCrossAttention(dim, num_heads, dropout, name="multihead_attn")
        self.linear1 = _linear(self.ffn_dim, "linear1")
        self.linear2 = _linear(dim, "linear2")
        self.norm1, self.norm2, self.norm3 = (
            keras.layers.LayerNormalization(epsilon=TORCH_LN_EPS, name=f"norm{i}") for i in (1, 2, 3)
        )
        self.drop = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        shape = (None, None, self.dim)
        for layer in (self.self_attn, self.multihead_attn, self.linear1, self.norm1, self.norm2, self.norm3):
            layer.build(shape)
        self.linear2.build((None, None, self.ffn_dim))
        self.built = True

    def call(self, tokens, memory, training=None):
        t = self.norm1(tokens + self.drop(self.self_attn(tokens, training=training), training=training))
        cross, sim = self.multihead_attn(t, memory, training=training)
        t = self.norm2(t + self.drop(cross, training=training))
        ffn = self.linear2(self.drop(ops.relu(self.linear1(t)), training=training))
        return self.norm3(t + self.drop(ffn, training=training)), sim

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads, "ffn_dim": self.ffn_dim,
                "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="kseg")
class ATMDecoder(keras.layers.Layer):
    """``num_layers`` :class:`ATMDecoderLayer` (``layers_{j}``) without a final norm.

    ``call(tokens, memory)`` -> list of ``(tokens, similarity)`` per layer.
    """

    def __init__(self, dim, num_heads, num_layers=3, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_heads, self.num_layers, self.dropout_rate = dim, num_heads, num_layers, dropout
        self.layers = [ATMDecoderLayer(dim, num_heads, dropout=dropout, name=f"layers_{j}") for j in range(num_layers)]

    def build(self, input_shape):
        for layer in self.layers:
            layer.build(None)
        self.built = True

    def call(self, tokens, memory, training=None):
        outs = []
        for layer in self.layers:
            tokens, sim = layer(tokens, memory, training=training)
            outs.append((tokens, sim))
        return outs

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "num_layers": self.num_layers, "dropout": self.dropout_rate}


def _flatten(x):
    """(B, h, w, C) -> ((B, h*w, C), h, w)."""
    shape = tf.shape(x)
    return tf.reshape(x, (shape[0], -1, x.shape[-1])), shape[1], shape[2]


@keras.saving.register_keras_serializable(package="kseg")
class ATMHead(keras.layers.Layer):
    """ATM decoder over one or more feature maps with K learnable class tokens.

    Input: a list of ``num_stages`` token maps (B, h, w, in_dim) in decoding order (deepest
    tap first; all on one h x w grid). Output dict (float32):
      ``class_logits`` (B, K, K+1), ``mask_logits`` (B, h, w, K) of the last group, and
      ``aux_outputs``: the earlier groups as ``{"class_logits", "mask_logits"}`` dicts.

    Args:
      num_classes: K (= number of class tokens, fixed token-to-class assignment).
      in_dim: channels of the input maps. dim: decoder width (authors: ViT width // 2).
      num_heads: decoder heads (authors: the ViT's). num_layers: decoder layers per ATM (3).
      num_stages: number of input maps / cascaded ATMs (3 for SegViT, 1 in the Shrunk model).
      use_proj: ``input_proj_i`` + ``proj_norm_i`` before each ATM (False in the Shrunk
        model, whose QU output already has width ``dim``; then in_dim must equal dim).
      groups: ``"stage"`` (one supervised group per ATM, the output of its last layer; masks
        summed over the cascade) or ``"layer"`` (one group per decoder layer of the single
        ATM, masks not summed: the Shrunk model's ``ATMSingleHead``).
      dropout: decoder dropout and attention dropout (0.1).
    Raises: ValueError for a bad ``groups``, or ``use_proj=False`` with in_dim != dim.
    """

    def __init__(self, num_classes, in_dim, dim, num_heads, num_layers=3, num_stages=3, use_proj=True,
                 groups="stage", dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        if groups not in ("stage", "layer"):
            raise ValueError(f"groups must be 'stage' or 'layer', got {groups!r}")
        if not use_proj and in_dim != dim:
            raise ValueError(f"use_proj=False needs in_dim == dim, got in_dim {in_dim} and dim {dim}")
        self.num_classes, self.in_dim, self.dim, self.num_heads = num_classes, in_dim, dim, num_heads
        self.num_layers, self.num_stages, self.use_proj, self.groups = num_layers, num_stages, use_proj, groups
        self.dropout_rate = dropout
        self.input_proj, self.proj_norm = [], []
        if use_proj:
            self.input_proj = [_linear(dim, f"input_proj_{i + 1}") for i in range(num_stages)]
            self.proj_norm = [keras.layers.LayerNormalization(epsilon=TORCH_LN_EPS, name=f"proj_norm_{i + 1}")
                              for i in range(num_stages)]
        self.decoder = [ATMDecoder(dim, num_heads, num_layers, dropout, name=f"decoder_{i + 1}")
                        for i in range(num_stages)]
        self.class_embed = _linear(num_classes + 1, "class_embed")

    def build(self, input_shape):
        self.q = self.add_weight((self.num_classes, self.dim), _embedding_init(), name="q")
        for proj, norm in zip(self.input_proj, self.proj_norm):
            proj.build((None, None, self.in_dim))
            norm.build((None, None, self.dim))
        for dec in self.decoder:
            dec.build(None)
        self.class_embed.build((None, None, self.dim))
        self.built = True

    def call(self, features, training=None):
        if len(features) != self.num_stages:
            raise ValueError(f"ATMHead expects {self.num_stages} feature maps, got {len(features)}")
        shape = tf.shape(features[0])
        b, h, w = shape[0], shape[1], shape[2]
        dtype = features[0].dtype
        tokens = tf.tile(tf.cast(self.q, dtype)[None], [b, 1, 1])
        groups = []
        for i, (x, dec) in enumerate(zip(features, self.decoder)):
            memory, _, _ = _flatten(x)
            if self.use_proj:
                memory = self.proj_norm[i](self.input_proj[i](memory))
            outs = dec(tokens, memory, training=training)
            tokens = outs[-1][0]
            groups.extend(outs if self.groups == "layer" else outs[-1:])
        results, running = [], None
        for tok, sim in groups:
            masks = tf.reshape(tf.transpose(sim, (0, 2, 1)), (b, h, w, self.num_classes))
            if self.groups == "stage":
                running = masks if running is None else running + masks
                masks = running
            logits = ops.cast(self.class_embed(tok), "float32")
            results.append({"class_logits": logits, "mask_logits": masks})
        return {**results[-1], "aux_outputs": results[:-1]}

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "in_dim": self.in_dim, "dim": self.dim,
                "num_heads": self.num_heads, "num_layers": self.num_layers, "num_stages": self.num_stages,
                "use_proj": self.use_proj, "groups": self.groups, "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="kseg")
class ShrunkATMHead(keras.layers.Layer):
    """The Shrunk model's decoder: query-based up-sampling (QU) then a single ATM.

    Input: ``[low, last]``: the low 1/16 tap (B, h, w, in_dim) and the last layer's 1/32 map
    (B, h', w', in_dim) from a query-downsampled encoder. QU: the learnable token table ``q``
    (``grid_size**2`` x dim, the 1/16 grid of the training crop) is resampled to h x w, decoded
    by ``decoder_1`` over ``proj_norm_1(input_proj_1(low))`` and then by ``decoder_2`` over
    ``proj_norm_2(input_proj_2(last))`` (3 standard decoder layers each); the (B, h, w, dim)
    result feeds ``atm`` (:class:`ATMHead` with one stage, no projection, one group per layer).
    Output: as :class:`ATMHead`, masks at 1/16 (h x w).

    Args: num_classes, in_dim, dim, num_heads, num_layers, dropout as :class:`ATMHead`;
      grid_size: side of the stored QU token grid (crop size // 16: 32 at 512, 40 at 640).
      interpolation: resampling of the token grid ("bicubic" or "bilinear").
    """

    def __init__(self, num_classes, in_dim, dim, num_heads, grid_size, num_layers=3, dropout=0.1,
                 interpolation="bicubic", **kwargs):
        super().__init__(**kwargs)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        self.num_classes, self.in_dim, self.dim, self.num_heads = num_classes, in_dim, dim, num_heads
        self.grid_size, self.num_layers, self.dropout_rate = grid_size, num_layers, dropout
        self.interpolation = interpolation
        self.input_proj = [_linear(dim, f"input_proj_{i + 1}") for i in range(2)]
        self.proj_norm = [keras.layers.LayerNormalization(epsilon=TORCH_LN_EPS, name=f"proj_norm_{i + 1}")
                          for i in range(2)]
        self.decoder = [ATMDecoder(dim, num_heads, num_layers, dropout, name=f"decoder_{i + 1}") for i in range(2)]
        self.atm = ATMHead(num_classes, dim, dim, num_heads, num_layers, num_stages=1, use_proj=False,
                           groups="layer", dropout=dropout, name="atm")

    def build(self, input_shape):
        self.q = self.add_weight((self.grid_size ** 2, self.dim), _embedding_init(), name="q")
        for proj, norm, dec in zip(self.input_proj, self.proj_norm, self.decoder):
            proj.build((None, None, self.in_dim))
            norm.build((None, None, self.dim))
            dec.build(None)
        self.atm.build(None)
        self.built = True

    def upsample_queries(self, h, w):
        """The QU token table resampled to an h x w grid: float32 (h*w, dim)."""
        g = self.grid_size
        grid = tf.reshape(tf.cast(ops.convert_to_tensor(self.q), tf.float32), (g, g, self.dim))
        return tf.reshape(resample_grid(grid, h, w, self.interpolation), (-1, self.dim))

    def call(self, features, training=None):
        if len(features) != 2:
            raise ValueError(f"ShrunkATMHead expects [low 1/16 map, last 1/32 map], got {len(features)} maps")
        low, last = features
        shape = tf.shape(low)
        b, h, w = shape[0], shape[1], shape[2]
        tokens = tf.tile(tf.cast(self.upsample_queries(h, w), low.dtype)[None], [b, 1, 1])
        for x, proj, norm, dec in zip((low, last), self.input_proj, self.proj_norm, self.decoder):
            memory, _, _ = _flatten(x)
            tokens = dec(tokens, norm(proj(memory)), training=training)[-1][0]
        return self.atm([tf.reshape(tokens, (b, h, w, self.dim))], training=training)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "in_dim": self.in_dim, "dim": self.dim,
                "num_heads": self.num_heads, "grid_size": self.grid_size, "num_layers": self.num_layers,
                "dropout": self.dropout_rate, "interpolation": self.interpolation}
