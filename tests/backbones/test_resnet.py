import numpy as np
import pytest
import tensorflow as tf

from kseg.backbones.resnet import RESNET_VARIANTS, ResNet, build_backbone
from kseg.layers.conv_norm_act import ConvNormAct

KEYS = ("res2", "res3", "res4", "res5")
TINY = dict(depths=(1, 1, 2, 1), stem_channels=16, width_per_group=8)


def _up(n, k):
    return -(-n // k)


def _params(layer):
    """Parameters as torchvision counts them: BN running statistics are buffers, not parameters."""
    return sum(int(np.prod(w.shape)) for w in layer.weights if "moving_" not in w.path)


def test_shapes_non_square_and_two_sizes_one_graph():
    model = ResNet(**TINY, norm="bn", name="backbone")
    model.build((None, None, None, 3))
    fn = tf.function(lambda x: model(x, training=False),
                     input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    for h, w in [(64, 96), (65, 47)]:
        out = fn(tf.random.normal((2, h, w, 3)))
        assert list(out) == list(KEYS)
        size = (_up(h, 4), _up(w, 4))
        for i, key in enumerate(KEYS):
            if i:
                size = (_up(size[0], 2), _up(size[1], 2))
            assert tuple(out[key].shape) == (2, *size, 32 * 2 ** i), (h, w, key)
    assert model.out_channels == {"res2": 32, "res3": 64, "res4": 128, "res5": 256}


def test_r50_forward_and_names():
    model = build_backbone("r50", name="backbone")
    out = model(tf.random.normal((1, 64, 96, 3)))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (1, 16, 24, 256), "res3": (1, 8, 12, 512), "res4": (1, 4, 6, 1024), "res5": (1, 2, 3, 2048)}
    paths = {w.path for w in model.weights}
    for p in ("backbone/stem/conv1/kernel", "backbone/stem/conv1/norm/moving_variance",
              "backbone/res2_0/shortcut/kernel", "backbone/res4_5/conv3/norm/gamma"):
        assert p in paths, p
    assert "backbone/res2_1/shortcut/kernel" not in paths
    assert tuple(model.stem.conv1.kernel.shape) == (7, 7, 3, 64)
    assert model.stages[1][0].conv2.strides == 2 and model.stages[1][0].conv1.strides == 1  # v1.5


# torchvision resnet50 / resnet101 without fc: 23,508,032 / 42,500,160 (spec: 23.51M, 42.50M).
@pytest.mark.parametrize("name,spec", [("r50", 23.51), pytest.param("r101", 42.50, marks=pytest.mark.slow)])
def test_param_counts_match_spec(name, spec):
    model = build_backbone(name)
    model.build((None, None, None, 3))
    n = _params(model)
    assert abs(n / 1e6 - spec) < 0.005, n
    assert n == {"r50": 23_508_032, "r101": 42_500_160}[name]


@pytest.mark.slow
def test_r101c_deep_stem():
    model = build_backbone("r101c")
    model.build((None, None, None, 3))
    assert [tuple(c.kernel.shape) for c in model.stem.convs] == [(3, 3, 3, 64), (3, 3, 64, 64), (3, 3, 64, 128)]
    assert model.stages[0][0].in_channels == 128
    # +3x3 stem (112,320 - 9,408) + BN (+256 - 128... as gamma/beta) + wider res2 entry (64 more input channels).
    delta = (112_320 - 9_408) + 2 * (64 + 64 + 128 - 64) + 64 * 64 + 64 * 256
    assert _params(model) == 42_500_160 + delta
    assert tuple(model.stem(tf.random.normal((1, 40, 71, 3))).shape) == (1, 10, 18, 128)


def test_frozen_bn_never_updates_and_bn_does():
    x = tf.random.normal((2, 32, 48, 3)) * 3 + 1
    frozen = ResNet(**TINY)  # detectron2 default FrozenBN
    frozen(x)
    before = [w.numpy().copy() for w in frozen.non_trainable_weights]
    assert not any("gamma" in w.path for w in frozen.trainable_weights)
    frozen(x, training=True)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, frozen.non_trainable_weights))
    frozen.trainable = True  # un-freezing the backbone keeps FrozenBN frozen
    assert not any("norm" in w.path for w in frozen.trainable_weights)
    assert any("kernel" in w.path for w in frozen.trainable_weights)
    trained = ResNet(**TINY, norm="bn")
    trained(x)
    mean = trained.stem.conv1.norm.moving_mean.numpy().copy()
    trained(x, training=True)
    assert not np.allclose(mean, trained.stem.conv1.norm.moving_mean.numpy())
    assert any("gamma" in w.path for w in trained.trainable_weights)


def test_freeze_at_and_stride_in_1x1():
    model = ResNet(**TINY, norm="bn", freeze_at=2)
    model.build((None, None, None, 3))
    trainable = {w.path for w in model.trainable_weights}
    assert not any("/stem/" in p or "/res2_" in p for p in trainable)
    assert any("/res3_0/" in p for p in trainable)
    msra = ResNet(**TINY, stride_in_1x1=True)
    assert msra.stages[1][0].conv1.strides == 2 and msra.stages[1][0].conv2.strides == 1
    with pytest.raises(ValueError, match="freeze_at"):
        ResNet(freeze_at=7)
    with pytest.raises(KeyError, match="r50"):
        build_backbone("r152")
    with pytest.raises(ValueError, match="norm"):
        ConvNormAct(8, norm="ln")


def test_config_round_trip_and_variants():
    assert {"r50", "r101", "r101c"} <= set(RESNET_VARIANTS)
    model = ResNet(**TINY, out_features=("res4",))
    x = tf.random.normal((1, 33, 50, 3))
    out = model(x)
    assert list(out) == ["res4"] and model.out_channels == {"res4": 128}
    clone = ResNet.from_config(model.get_config())
    clone.build((None, None, None, 3))
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(x)["res4"].numpy(), out["res4"].numpy(), atol=1e-6)


def test_conv_padding_matches_pytorch_geometry():
    conv = ConvNormAct(4, 3, 2, norm=None)
    assert tuple(conv(tf.zeros((1, 9, 10, 2))).shape) == (1, 5, 5, 4)  # floor((n + 2 - 3) / 2) + 1
    conv7 = ConvNormAct(4, 7, 2, norm="gn", groups=2)
    assert tuple(conv7(tf.zeros((1, 9, 10, 2))).shape) == (1, 5, 5, 4)
