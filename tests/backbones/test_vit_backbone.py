import numpy as np
import pytest
import tensorflow as tf
import torch
import torch.nn.functional as F

from kseg.backbones.vit import VIT_VARIANTS, ViT, vit_arch
from kseg.layers.pos_embed import resample_grid, resample_pos_embed


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [(5, 7), (12, 9), (3, 3)])
def test_resampling_matches_pytorch_interpolate(method, size):
    grid = np.random.default_rng(0).normal(size=(6, 6, 4)).astype("float32")
    ref = F.interpolate(torch.from_numpy(grid).permute(2, 0, 1)[None], size=size, mode=method,
                        align_corners=False)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(resample_grid(grid, *size, method=method).numpy(), ref, atol=1e-5)


def test_resample_pos_embed_keeps_prefix_and_identity():
    pos = np.random.default_rng(1).normal(size=(1, 2 + 16, 8)).astype("float32")
    out = resample_pos_embed(pos, (5, 3), num_prefix_tokens=2)
    assert out.shape == (1, 2 + 15, 8)
    np.testing.assert_array_equal(out[:, :2], pos[:, :2])
    np.testing.assert_array_equal(resample_pos_embed(pos, (4, 4), num_prefix_tokens=2), pos)


def test_feature_dict_shapes_non_square_and_dynamic_sizes():
    enc = ViT(32, 3, 2, 8, img_size=32, out_layers=(1, 3), distilled=True)
    enc.build((None, None, None, 3))
    fn = tf.function(lambda x: enc(x), input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    for h, w in [(64, 96), (40, 24), (33, 47)]:
        out = fn(tf.random.normal((2, h, w, 3)))
        assert sorted(out) == ["final", "layer1", "layer3"]
        for v in out.values():
            assert tuple(v.shape) == (2, -(-h // 8), -(-w // 8), 32)  # padded bottom/right to multiples of 8


def test_pos_embed_at_stored_grid_is_used_as_is():
    enc = ViT(16, 1, 2, 8, img_size=32)
    enc.build((None, None, None, 3))
    _, grid = enc.interpolated_pos_embed(4, 4)
    np.testing.assert_allclose(grid.numpy(), enc.pos_embed.numpy()[:, 1:], atol=1e-6)


def test_drop_path_linear_and_bad_arguments():
    enc = ViT(16, 4, 2, 8, drop_path_rate=0.3)
    rates = [b.drop_path.rate for b in enc.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3) and rates == sorted(rates)
    with pytest.raises(ValueError, match="out_layers"):
        ViT(16, 4, 2, 8, out_layers=(5,))
    with pytest.raises(ValueError, match="interpolation"):
        ViT(16, 4, 2, 8, pos_embed_interpolation="nearest")


def test_variant_table():
    assert {"vit_t16", "vit_s16", "vit_b8", "vit_b16", "vit_b32", "vit_l16", "vit_l32", "deit_b16"} <= set(VIT_VARIANTS)
    arch, (mean, std) = vit_arch("vit_b16")
    assert arch["embed_dim"] == 768 and mean == (127.5,) * 3
    arch, (mean, _) = vit_arch("deit_b16")
    assert arch["distilled"] and mean[0] == pytest.approx(123.675)
    with pytest.raises(KeyError, match="vit_b16"):
        vit_arch("vit_x16")
