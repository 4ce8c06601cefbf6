"""Mix Transformer (MiT-B0..B5), the hierarchical encoder of SegFormer (Xie et al. 2021).

Four stages, each: overlapping patch embedding -> blocks of efficient self-attention and
Mix-FFN (pre-norm, residual, stochastic depth) -> LayerNorm. No position embedding, so
any input size works without interpolation (SegFormer Sec. 3.1). Stage outputs have
strides 4, 8, 16, 32.

The per-variant hyper-parameters are not in the paper's main text; they come from the
authors' code (NVlabs/SegFormer ``mix_transformer.py``) and reproduce the paper's
Table 1a parameter counts. LayerNorm epsilons follow that code: 1e-6 in blocks and at
stage ends, 1e-5 after the patch-embedding and spatial-reduction convolutions.
Layer names mirror the HF ``SegformerModel`` checkpoint tree so converters only rename.
"""

import keras

from kseg.layers import DropPath, EfficientSelfAttention, MixFFN, OverlapPatchEmbed


@keras.saving.register_keras_serializable(package="kseg")
class MiTBlock(keras.layers.Layer):
    """x + DropPath(Attn(LN(x))), then x + DropPath(MixFFN(LN(x))). (B, H, W, C) -> same."""

    def __init__(self, dim, num_heads, sr_ratio, mlp_ratio=4, drop_path=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_heads, self.sr_ratio = dim, num_heads, sr_ratio
        self.mlp_ratio, self.drop_path_rate = mlp_ratio, drop_path
        self.layer_norm_1 = keras.layers.LayerNormalization(epsilon=1e-6, name="layer_norm_1")
        self.attention = EfficientSelfAttention(dim, num_heads, sr_ratio, name="attention")
        self.layer_norm_2 = keras.layers.LayerNormalization(epsilon=1e-6, name="layer_norm_2")
        self.mlp = MixFFN(dim, int(dim * mlp_ratio), name="mlp")
        self.drop_path = DropPath(drop_path, name="drop_path")

    def build(self, input_shape):
        for layer in (self.layer_norm_1, self.attention, self.layer_norm_2, self.mlp):
            layer.build(input_shape)
        self.built = True

    def call(self, x, training=None):
        x = x + self.drop_path(self.attention(self.layer_norm_1(x)), training=training)
        return x + self.drop_path(self.mlp(self.layer_norm_2(x)), training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "num_heads": self.num_heads,
            "sr_ratio": self.sr_ratio,
            "mlp_ratio": self.mlp_ratio,
            "drop_path": self.drop_path_rate,
        }


@keras.saving.register_keras_serializable(package="kseg")
class MiT(keras.layers.Layer):
    """The Mix Transformer encoder.

    Input: (B, H, W, 3) float, already normalised (the model normalises raw pixels).
    Output: dict ``{"stage1": (B, H/4, W/4, C1), "stage2": (B, H/8, W/8, C2),
    "stage3": (B, H/16, W/16, C3), "stage4": (B, H/32, W/32, C4)}`` (sizes rounded up).

    Args:
      hidden_sizes, depths, num_heads, sr_ratios, mlp_ratios: per-stage lists (4 each).
      patch_sizes, strides: patch-embedding kernel and stride per stage (7/4, 3/2, 3/2, 3/2).
      drop_path_rate: stochastic depth at the last block, linearly increasing from 0.
    """

    def __init__(
        self,
        hidden_sizes,
        depths,
        num_heads=(1, 2, 5, 8),
        sr_ratios=(8, 4, 2, 1),
        mlp_ratios=(4, 4, 4, 4),
        patch_sizes=(7, 3, 3, 3),
        strides=(4, 2, 2, 2),
        drop_path_rate=0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_sizes, self.depths = list(hidden_sizes), list(depths)
        self.num_heads, self.sr_ratios = list(num_heads), list(sr_ratios)
        self.mlp_ratios, self.patch_sizes, self.strides = list(mlp_ratios), list(patch_sizes), list(strides)
        self.drop_path_rate = drop_path_rate
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.patch_embeddings, self.block, self.layer_norm = [], [], []
        for i, dim in enumerate(self.hidden_sizes):
            self.patch_embeddings.append(
                OverlapPatchEmbed(dim, self.patch_sizes[i], self.strides[i], name=f"patch_embeddings_{i}")
            )
            first = sum(depths[:i])
            self.block.append(
                [
                    MiTBlock(dim, self.num_heads[i], self.sr_ratios[i], self.mlp_ratios[i],
                             rates[first + j], name=f"block_{i}_{j}")
                    for j in range(depths[i])
                ]
            )
            self.layer_norm.append(keras.layers.LayerNormalization(epsilon=1e-6, name=f"layer_norm_{i}"))

    def build(self, input_shape):
        channels = input_shape[-1]
        for i, dim in enumerate(self.hidden_sizes):
            self.patch_embeddings[i].build((None, None, None, channels))
            for blk in self.block[i]:
                blk.build((None, None, None, dim))
            self.layer_norm[i].build((None, None, None, dim))
            channels = dim
        self.built = True

    def call(self, x, training=None):
        features = {}
        for i in range(len(self.hidden_sizes)):
            x = self.patch_embeddings[i](x)
            for blk in self.block[i]:
                x = blk(x, training=training)
            x = self.layer_norm[i](x)
            features[f"stage{i + 1}"] = x
        return features

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_sizes": self.hidden_sizes,
            "depths": self.depths,
            "num_heads": self.num_heads,
            "sr_ratios": self.sr_ratios,
            "mlp_ratios": self.mlp_ratios,
            "patch_sizes": self.patch_sizes,
            "strides": self.strides,
            "drop_path_rate": self.drop_path_rate,
        }


# MiT variants (NVlabs/SegFormer mix_transformer.py mit_b0..mit_b5; heads 1/2/5/8,
# spatial reduction 8/4/2/1 and MLP ratio 4 in every variant).
MIT_VARIANTS = {
    "mit_b0": {"hidden_sizes": (32, 64, 160, 256), "depths": (2, 2, 2, 2)},
    "mit_b1": {"hidden_sizes": (64, 128, 320, 512), "depths": (2, 2, 2, 2)},
    "mit_b2": {"hidden_sizes": (64, 128, 320, 512), "depths": (3, 4, 6, 3)},
    "mit_b3": {"hidden_sizes": (64, 128, 320, 512), "depths": (3, 4, 18, 3)},
    "mit_b4": {"hidden_sizes": (64, 128, 320, 512), "depths": (3, 8, 27, 3)},
    "mit_b5": {"hidden_sizes": (64, 128, 320, 512), "depths": (3, 6, 40, 3)},
}
