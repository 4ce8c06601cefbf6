import keras
import numpy as np
import pytest

import kseg
from kseg.config import OptimConfig, ScheduleConfig
from kseg.training import WarmupPolyDecay, build_optimizer


def mmcv_poly(step, lr, max_steps, warmup, ratio, power, min_lr=0.0):
    """mmcv PolyLrUpdaterHook with linear warmup, written out independently."""
    regular = (lr - min_lr) * (1 - step / max_steps) ** power + min_lr
    if step < warmup:
        k = (1 - step / warmup) * (1 - ratio)
        return regular * (1 - k)
    return regular


@pytest.mark.parametrize("step", [0, 1, 50, 99, 100, 500, 999, 1000])
def test_warmup_poly_matches_mmcv(step):
    s = WarmupPolyDecay(6e-5, 1000, warmup_steps=100, warmup_ratio=1e-6, power=1.0)
    assert float(s(step)) == pytest.approx(mmcv_poly(step, 6e-5, 1000, 100, 1e-6, 1.0), rel=1e-5, abs=1e-12)


def test_param_groups_head_lr_and_no_decay():
    model = kseg.build_model("segformer_mit_b0", num_classes=3)
    opt = build_optimizer(OptimConfig(lr=1e-3, head_lr_mult=10.0), ScheduleConfig(warmup_steps=0), 100,
                          model.head_path_pattern)
    opt.build(model.trainable_variables)
    head = [v for v in model.trainable_variables if v.path.startswith("segformer/decode_head/")]
    enc = [v for v in model.trainable_variables if v.path.startswith("segformer/encoder/")]
    assert head and enc
    subs = {id(o): o for o in opt.optimizers}
    assert len(subs) == 2
    lrs = sorted(float(o.learning_rate) for o in opt.optimizers)
    assert lrs == pytest.approx([1e-3, 1e-2])
    head_opt = opt._optimizer_map(head[0])
    enc_opt = opt._optimizer_map(enc[0])
    assert float(head_opt.learning_rate) == pytest.approx(1e-2)
    assert float(enc_opt.learning_rate) == pytest.approx(1e-3)
    by_name = {v.path: v for v in model.trainable_variables}
    assert not enc_opt._use_weight_decay(by_name["segformer/encoder/block_0_0/layer_norm_1/gamma"])
    assert not enc_opt._use_weight_decay(by_name["segformer/encoder/block_0_0/attention/query/bias"])
    assert enc_opt._use_weight_decay(by_name["segformer/encoder/block_0_0/attention/query/kernel"])


def test_weight_decay_leaves_bias_alone_in_a_real_step():
    """With zero gradients AdamW only decays: kernels shrink, biases and norms stay."""
    model = kseg.build_model("segformer_mit_b0", num_classes=3)
    opt = build_optimizer(OptimConfig(lr=0.1, weight_decay=0.5, head_lr_mult=1.0),
                          ScheduleConfig(name="constant", warmup_steps=0), 10)
    variables = model.trainable_variables
    before = {v.path: np.array(v) for v in variables}
    opt.apply_gradients([(np.zeros(v.shape, "float32"), v) for v in variables])
    k = "segformer/encoder/block_0_0/attention/query/"
    after = {v.path: np.array(v) for v in variables}
    np.testing.assert_allclose(after[k + "kernel"], before[k + "kernel"] * (1 - 0.1 * 0.5), rtol=1e-5)
    np.testing.assert_array_equal(after[k + "bias"], before[k + "bias"])


def test_sgd_momentum_matches_the_pytorch_update():
    """optim.name sgd (SETR / Segmenter recipes): heavy-ball momentum as torch.optim.SGD
    (v = m v + g; w -= lr v), which equals Keras' form at a constant learning rate."""
    import numpy as np

    from kseg.config import OptimConfig, ScheduleConfig
    from kseg.training.optimizer import build_optimizer

    opt = build_optimizer(OptimConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=0.0, head_lr_mult=1.0),
                          ScheduleConfig(name="constant", warmup_steps=0), max_steps=10)
    w = keras.Variable(np.array([1.0, -2.0], np.float32))
    grads = [np.array([0.5, 1.0], np.float32), np.array([-1.0, 0.25], np.float32)]
    ref, v = np.array([1.0, -2.0], np.float32), np.zeros(2, np.float32)
    for g in grads:
        opt.apply([keras.ops.convert_to_tensor(g)], [w])
        v = 0.9 * v + g
        ref = ref - 0.1 * v
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-6)
