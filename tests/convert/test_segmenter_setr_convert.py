"""Segmenter and SETR converters: round trips through each foreign layout.

For every layout a random kseg model is written out as a state dict in that layout's key
names and shapes (the inverse mappings below are written from the reference code's names,
independently of the converters), loaded into a fresh model, and the two models must agree
exactly, weight by weight and on the logits. Plus the errors: another class count or decoder,
unexpected keys under ``strict``, and nothing assigned when a load fails.
"""

import numpy as np
import pytest

import kseg
from kseg.convert import load_segmenter, load_setr, load_vit
from kseg.convert.common import ShapeMismatchError

X = np.random.default_rng(0).uniform(0, 255, size=(1, 32, 48, 3)).astype("float32")  # 2x3 tokens


# --------------------------------------------------------------------------- helpers


def randomize(model, seed=0):
    """Every variable to random values of a sensible scale (LN/BN gammas around 1, positive variances)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape, path = tuple(w.shape), w.path
        if "moving_variance" in path:
            v = rng.uniform(0.5, 1.5, shape)
        elif "gamma" in path:
            v = 1.0 + 0.2 * rng.standard_normal(shape)
        elif len(shape) >= 2:
            v = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
        else:
            v = 0.1 * rng.standard_normal(shape)
        w.assign(v.astype(w.dtype))
    return model


def lin(layer):  # Dense (in, out) -> torch Linear (out, in)
    return {"weight": np.asarray(layer.kernel).T, "bias": np.asarray(layer.bias)}


def conv(layer):  # Conv2D (kh, kw, in, out) -> torch (out, in, kh, kw)
    out = {"weight": np.asarray(layer.kernel).transpose(3, 2, 0, 1)}
    if layer.use_bias:
        out["bias"] = np.asarray(layer.bias)
    return out


def ln(layer):
    return {"weight": np.asarray(layer.gamma), "bias": np.asarray(layer.beta)}


def bn(layer):
    return {"weight": np.asarray(layer.gamma), "bias": np.asarray(layer.beta),
            "running_mean": np.asarray(layer.moving_mean), "running_var": np.asarray(layer.moving_variance),
            "num_batches_tracked": np.array(7, np.int64)}


def put(sd, prefix, params):
    sd.update({f"{prefix}.{k}": v for k, v in params.items()})


def timm_vit(sd, p, enc):
    """timm / authors' ViT names."""
    put(sd, f"{p}patch_embed.proj", conv(enc.patch_embed.proj))
    sd[f"{p}cls_token"], sd[f"{p}pos_embed"] = np.asarray(enc.cls_token), np.asarray(enc.pos_embed)
    for i, blk in enumerate(enc.blocks):
        timm_block(sd, f"{p}blocks.{i}", blk)
    if enc.final_norm:
        put(sd, f"{p}norm", ln(enc.norm))


def timm_block(sd, p, blk):
    put(sd, f"{p}.norm1", ln(blk.norm1))
    put(sd, f"{p}.attn.qkv", lin(blk.attn.qkv))
    put(sd, f"{p}.attn.proj", lin(blk.attn.proj))
    put(sd, f"{p}.norm2", ln(blk.norm2))
    put(sd, f"{p}.mlp.fc1", lin(blk.mlp.fc1))
    put(sd, f"{p}.mlp.fc2", lin(blk.mlp.fc2))


def mmseg_block(sd, p, blk):
    """mmseg TransformerEncoderLayer: ln1, attn.attn (nn.MultiheadAttention), ln2, ffn (mmcv FFN)."""
    put(sd, f"{p}.ln1", ln(blk.norm1))
    qkv = lin(blk.attn.qkv)
    sd[f"{p}.attn.attn.in_proj_weight"], sd[f"{p}.attn.attn.in_proj_bias"] = qkv["weight"], qkv["bias"]
    put(sd, f"{p}.attn.attn.out_proj", lin(blk.attn.proj))
    put(sd, f"{p}.ln2", ln(blk.norm2))
    put(sd, f"{p}.ffn.layers.0.0", lin(blk.mlp.fc1))
    put(sd, f"{p}.ffn.layers.1", lin(blk.mlp.fc2))


def mmseg_vit(sd, p, enc):
    put(sd, f"{p}patch_embed.projection", conv(enc.patch_embed.proj))
    sd[f"{p}cls_token"], sd[f"{p}pos_embed"] = np.asarray(enc.cls_token), np.asarray(enc.pos_embed)
    for i, blk in enumerate(enc.blocks):
        mmseg_block(sd, f"{p}layers.{i}", blk)
    if enc.final_norm:
        put(sd, f"{p}ln1", ln(enc.norm))


def assert_same(a, b, x=X):
    wa, wb = {w.path: w for w in a.weights}, {w.path: w for w in b.weights}
    assert wa.keys() == wb.keys()
    for path in wa:
        np.testing.assert_array_equal(np.asarray(wa[path]), np.asarray(wb[path]), err_msg=path)
    ya, yb = np.asarray(a(x)), np.asarray(b(x))
    assert np.abs(ya).max() > 1e-3  # not trivially zero
    np.testing.assert_array_equal(ya, yb)


# --------------------------------------------------------------------------- Segmenter


def segmenter(decoder="mask", num_classes=5, seed=None):
    m = kseg.build_model("segmenter_vit_t16_mask", num_classes=num_classes, depth=2, decoder=decoder)
    return randomize(m, seed) if seed is not None else m


def segmenter_authors(m):
    """rstrudel/segmenter ``checkpoint.pth["model"]`` names (segm/model/{vit,decoder}.py)."""
    sd = {}
    timm_vit(sd, "encoder.", m.encoder)
    sd["encoder.head.weight"] = np.zeros((1000, m.encoder.embed_dim), "float32")  # ImageNet head: skipped
    sd["encoder.head.bias"] = np.zeros(1000, "float32")
    h = m.decode_head
    if m.decoder == "linear":
        put(sd, "decoder.head", lin(h.head))
        return sd
    sd["decoder.cls_emb"] = np.asarray(h.cls_emb)
    put(sd, "decoder.proj_dec", lin(h.proj_dec))
    for i, blk in enumerate(h.blocks):
        timm_block(sd, f"decoder.blocks.{i}", blk)
    sd["decoder.proj_patch"], sd["decoder.proj_classes"] = np.asarray(h.proj_patch), np.asarray(h.proj_classes)
    put(sd, "decoder.decoder_norm", ln(h.decoder_norm))
    put(sd, "decoder.mask_norm", ln(h.mask_norm))
    return sd


def segmenter_mmseg(m):
    """mmseg 1.x EncoderDecoder(VisionTransformer, SegmenterMaskTransformerHead | FCNHead(num_convs=0))."""
    sd = {}
    mmseg_vit(sd, "backbone.", m.encoder)
    h = m.decode_head
    if m.decoder == "linear":
        w = lin(h.head)
        sd["decode_head.conv_seg.weight"] = w["weight"][:, :, None, None]
        sd["decode_head.conv_seg.bias"] = w["bias"]
        return sd
    for i, blk in enumerate(h.blocks):
        mmseg_block(sd, f"decode_head.layers.{i}", blk)
    put(sd, "decode_head.dec_proj", lin(h.proj_dec))
    sd["decode_head.cls_emb"] = np.asarray(h.cls_emb)
    # bias-free nn.Linear: y = x @ W.T, and kseg's parameter P is used as x @ P, so W = P.T
    sd["decode_head.patch_proj.weight"] = np.asarray(h.proj_patch).T
    sd["decode_head.classes_proj.weight"] = np.asarray(h.proj_classes).T
    put(sd, "decode_head.decoder_norm", ln(h.decoder_norm))
    put(sd, "decode_head.mask_norm", ln(h.mask_norm))
    return sd


@pytest.fixture(scope="module")
def seg_mask():
    return segmenter("mask", seed=1)


@pytest.mark.parametrize("layout", ["authors", "mmseg"])
def test_segmenter_mask_round_trip(seg_mask, layout):
    sd = (segmenter_authors if layout == "authors" else segmenter_mmseg)(seg_mask)
    fresh = segmenter("mask")
    report = load_segmenter(fresh, sd)
    assert not report.missing and not report.unexpected and not report.untouched, report
    assert (layout == "mmseg") == ("MMSegmentation" in report.layout)
    assert report.info["checkpoint"]["num_classes"] == 5
    assert_same(seg_mask, fresh)


@pytest.mark.parametrize("layout", ["authors", "mmseg"])
def test_segmenter_linear_round_trip(layout):
    src = segmenter("linear", seed=2)
    sd = (segmenter_authors if layout == "authors" else segmenter_mmseg)(src)
    fresh = segmenter("linear")
    report = load_segmenter(fresh, sd)
    assert not report.missing and not report.unexpected and not report.untouched, report
    assert_same(src, fresh)


def test_segmenter_errors_leave_the_model_untouched(seg_mask):
    sd = segmenter_authors(seg_mask)
    other = segmenter("mask", num_classes=7)
    before = [np.asarray(w).copy() for w in other.weights]
    with pytest.raises(ShapeMismatchError, match=r"'decoder\.cls_emb' has shape \(1, 5, 192\).*\(1, 7, 192\)"
                                                 r".*another class count.*num_classes=5"):
        load_segmenter(other, sd)
    with pytest.raises(ValueError, match="mask decoder but the model .*linear decoder"):
        load_segmenter(segmenter("linear"), sd)
    # mmseg names in the message of the layout they came from
    with pytest.raises(ShapeMismatchError, match=r"stored as 'decode_head\.cls_emb'"):
        load_segmenter(other, segmenter_mmseg(seg_mask))
    extra = {**sd, "decoder.extra.weight": np.zeros(3, "float32")}
    with pytest.raises(ValueError, match=r"1 unexpected keys \['decoder\.extra\.weight'\]"):
        load_segmenter(other, extra, skip_classifier=True)
    for w, b in zip(other.weights, before):
        np.testing.assert_array_equal(np.asarray(w), b)
    report = load_segmenter(other, extra, strict=False, skip_classifier=True)
    assert report.unexpected == ["decoder.extra.weight"] and "decoder.cls_emb" in report.skipped
    np.testing.assert_array_equal(np.asarray(other.decode_head.proj_patch), np.asarray(seg_mask.decode_head.proj_patch))


def test_segmenter_encoder_only_checkpoints(seg_mask):
    # an mmseg ViT backbone checkpoint (no prefix, as mmseg's vit2mmseg pretraining weights)
    sd = {}
    mmseg_vit(sd, "", seg_mask.encoder)
    fresh = segmenter("mask")
    report = load_segmenter(fresh, sd)
    assert report.layout.startswith("mmseg") and not report.missing and not report.unexpected
    assert any("decode heads left at initialisation" in n for n in report.notes)
    for a, b in zip(seg_mask.encoder.weights, fresh.encoder.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    enc_only = {k: v for k, v in segmenter_authors(seg_mask).items() if k.startswith("encoder.")}
    enc_only = {k[len("encoder."):]: v for k, v in enc_only.items()}  # a timm state dict
    assert load_vit(segmenter("mask").encoder, enc_only).layout.startswith("timm")


# --------------------------------------------------------------------------- SETR


def setr(decoder, num_classes=5, seed=None):
    m = kseg.build_model(f"setr_{decoder}_vit_b16", num_classes=num_classes, depth=4, backbone="vit_t16",
                         channels=32, mla_channels=32, mla_head_channels=16)
    return randomize(m, seed) if seed is not None else m


def zero_conv_bias_before_bn(m):
    """mmseg's ConvModule has no conv bias next to its BN: fold kseg's into the BN mean (same function)."""
    heads = [m.decode_head] + list(m.aux) if m.decoder != "mla" else []
    for h in heads:
        for c, b in zip(h.convs, h.bns):
            b.moving_mean.assign(np.asarray(b.moving_mean) - np.asarray(c.bias))
            c.bias.assign(np.zeros(c.bias.shape, "float32"))
    return m


def authors_up_head(sd, p, h):
    """VisionTransformerUpHead: norm, conv_{i} + syncbn_fc_{i}, classifier conv_{n}; unused conv_seg."""
    put(sd, f"{p}.norm", ln(h.norm))
    for i, (c, b) in enumerate(zip(h.convs, h.bns)):
        put(sd, f"{p}.conv_{i}", conv(c))
        put(sd, f"{p}.syncbn_fc_{i}", bn(b))
    put(sd, f"{p}.conv_{len(h.convs)}", conv(h.cls))
    sd[f"{p}.conv_seg.weight"] = np.zeros((h.num_classes, 512, 1, 1), "float32")  # BaseDecodeHead leftover
    sd[f"{p}.conv_seg.bias"] = np.zeros(h.num_classes, "float32")


def setr_authors(m):
    sd = {}
    timm_vit(sd, "backbone.", m.encoder)
    if m.decoder != "mla":
        authors_up_head(sd, "decode_head", m.decode_head)
        for j, a in enumerate(m.aux):
            authors_up_head(sd, f"auxiliary_head.{j}", a)
        return sd
    n = m.mla_neck  # VIT_MLA: norm_{i} and Conv_MLA inside the backbone
    for i in range(4):
        k = i + 2
        put(sd, f"backbone.norm_{i}", ln(n.norms[i]))
        put(sd, f"backbone.mla.mla_p{k}_1x1.0", conv(n.reduce[i]))
        put(sd, f"backbone.mla.mla_p{k}_1x1.1", bn(n.reduce_bn[i]))
        put(sd, f"backbone.mla.mla_p{k}.0", conv(n.smooth[i]))
        put(sd, f"backbone.mla.mla_p{k}.1", bn(n.smooth_bn[i]))
    h = m.decode_head
    for i in range(4):
        p = f"decode_head.mlahead.head{i + 2}"
        put(sd, f"{p}.0", conv(h.convs[i][0]))
        put(sd, f"{p}.1", bn(h.bns[i][0]))
        put(sd, f"{p}.3", conv(h.convs[i][1]))
        put(sd, f"{p}.4", bn(h.bns[i][1]))
    put(sd, "decode_head.cls", conv(h.cls))
    for j, a in enumerate(m.aux):
        put(sd, f"auxiliary_head.{j}.aux", conv(a.aux))
    return sd


def mmseg_up_head(sd, p, h):
    """SETRUPHead: norm, up_convs.{i}.0 = ConvModule(conv without bias, bn), classifier conv_seg."""
    put(sd, f"{p}.norm", ln(h.norm))
    for i, (c, b) in enumerate(zip(h.convs, h.bns)):
        sd[f"{p}.up_convs.{i}.0.conv.weight"] = conv(c)["weight"]
        put(sd, f"{p}.up_convs.{i}.0.bn", bn(b))
    put(sd, f"{p}.conv_seg", conv(h.cls))


def setr_mmseg(m):
    sd = {}
    mmseg_vit(sd, "backbone.", m.encoder)
    if m.decoder != "mla":
        mmseg_up_head(sd, "decode_head", m.decode_head)
        for j, a in enumerate(m.aux):
            mmseg_up_head(sd, f"auxiliary_head.{j}", a)
        return sd
    # MLANeck: channel_proj[i] on tap i (shallow first); mid sums deepest first and
    # feat_extract[j] smooths the sum of the j+1 deepest taps = kseg's smooth[3 - j].
    n = m.mla_neck
    for i in range(4):
        put(sd, f"neck.norm.{i}", ln(n.norms[i]))
        sd[f"neck.mla.channel_proj.{i}.conv.weight"] = conv(n.reduce[i])["weight"]
        put(sd, f"neck.mla.channel_proj.{i}.bn", bn(n.reduce_bn[i]))
        sd[f"neck.mla.feat_extract.{3 - i}.conv.weight"] = conv(n.smooth[i])["weight"]
        put(sd, f"neck.mla.feat_extract.{3 - i}.bn", bn(n.smooth_bn[i]))
    # neck outputs deepest first: mmseg head{k} / in_index k-2 read kseg's stream 5-k.
    h = m.decode_head
    for i in range(4):
        p = f"decode_head.mlahead.head{5 - i}"
        put(sd, f"{p}.0", conv(h.convs[i][0]))
        put(sd, f"{p}.1", bn(h.bns[i][0]))
        put(sd, f"{p}.3", conv(h.convs[i][1]))
        put(sd, f"{p}.4", bn(h.bns[i][1]))
    cls = conv(h.cls)
    blocks = np.split(cls["weight"], 4, axis=1)
    sd["decode_head.conv_seg.weight"] = np.concatenate(blocks[::-1], axis=1)
    sd["decode_head.conv_seg.bias"] = cls["bias"]
    for j, a in enumerate(m.aux):  # FCNHead(num_convs=0, kernel_size=1): conv_seg with a bias
        sd[f"auxiliary_head.{3 - j}.conv_seg.weight"] = conv(a.aux)["weight"]
        sd[f"auxiliary_head.{3 - j}.conv_seg.bias"] = np.zeros(a.num_classes, "float32")
    return sd


def aux_outputs(m, x=X):
    feats = m.encoder(m.normalize(x))
    if m.decoder == "mla":
        taps = m.mla_neck([feats[f"layer{i}"] for i in m.mla_layers])
    else:
        taps = [feats[f"layer{i}"] for i in m.aux_layers]
    return [np.asarray(h(t)) for h, t in zip(m.aux, taps)]


@pytest.mark.parametrize("decoder", ["naive", "pup", "mla"])
@pytest.mark.parametrize("layout", ["authors", "mmseg"])
def test_setr_round_trip(decoder, layout):
    src = zero_conv_bias_before_bn(setr(decoder, seed=3)) if layout == "mmseg" else setr(decoder, seed=3)
    sd = (setr_authors if layout == "authors" else setr_mmseg)(src)
    fresh = setr(decoder)
    report = load_setr(fresh, sd)
    assert not report.missing and not report.unexpected and not report.untouched, report
    assert report.info["checkpoint"]["decoder"] == decoder and report.info["checkpoint"]["num_classes"] == 5
    assert_same(src, fresh)
    for a, b in zip(aux_outputs(src), aux_outputs(fresh)):
        np.testing.assert_array_equal(a, b)


def test_setr_errors():
    src = setr("pup", seed=4)
    sd = setr_mmseg(zero_conv_bias_before_bn(src))
    with pytest.raises(ShapeMismatchError, match=r"'decode_head\.conv_4\.weight' has shape \(5, 32, 1, 1\).*"
                                                 r"another class count.*stored as 'decode_head\.conv_seg\.weight'"):
        load_setr(setr("pup", num_classes=6), sd)
    with pytest.raises(ValueError, match="PUP decoder but the model .*naive decoder"):
        load_setr(setr("naive"), sd)
    with pytest.raises(ValueError, match=r"unexpected keys \['decode_head\.extra'\]"):
        load_setr(setr("pup"), {**sd, "decode_head.extra": np.zeros(2, "float32")})
    # mmseg's ADE20K configs: two-conv auxiliary heads cannot be held by kseg's: skipped, noted
    two = dict(sd)
    two["auxiliary_head.0.up_convs.1.0.conv.weight"] = np.zeros((32, 32, 3, 3), "float32")
    fresh = setr("pup")
    report = load_setr(fresh, two)
    assert any("not loaded" in n for n in report.notes) and report.untouched
    assert all("auxiliary_head_0" in p for p in report.untouched)
    np.testing.assert_array_equal(np.asarray(fresh(X)), np.asarray(src(X)))
    # skip_classifier: everything but the classifiers (main conv_4, auxiliary conv_1) loads
    six = setr("pup", num_classes=6)
    report = load_setr(six, sd, skip_classifier=True)
    classifiers = [w.path for w in six.weights
                   if ("decode_head/conv_4/" in w.path) or ("auxiliary_head" in w.path and "/conv_1/" in w.path)]
    assert sorted(report.untouched) == sorted(classifiers) and len(classifiers) == 10
    np.testing.assert_array_equal(np.asarray(six.decode_head.convs[1].kernel), np.asarray(src.decode_head.convs[1].kernel))
    # a bare mmseg backbone (``backbone.`` prefix, no heads): the encoder only
    report = load_setr(setr("pup"), {k: v for k, v in sd.items() if k.startswith("backbone.")})
    assert report.layout.startswith("mmseg") and any("left at initialisation" in n for n in report.notes)
    assert not report.missing and not report.unexpected


def test_mask_transformer_matches_a_torch_reimplementation(seg_mask):
    """kseg's MaskTransformerHead with converted weights == the authors' MaskTransformer.forward
    (segm/model/decoder.py) re-implemented in torch from their description, on the same tokens."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)).double() for k, v in segmenter_authors(seg_mask).items()}
    head = seg_mask.decode_head
    k, d, heads = head.num_classes, head.dim, head.num_heads
    feats = np.random.default_rng(9).standard_normal((2, 3, 4, head.in_dim)).astype("float32")

    def lin_(x, p):
        return F.linear(x, sd[f"{p}.weight"], sd[f"{p}.bias"])

    def ln_(x, p):
        return F.layer_norm(x, (x.shape[-1],), sd[f"{p}.weight"], sd[f"{p}.bias"], eps=1e-5)

    with torch.no_grad():
        x = lin_(torch.from_numpy(feats).double().reshape(2, 12, -1), "decoder.proj_dec")
        x = torch.cat([x, sd["decoder.cls_emb"].expand(2, -1, -1)], 1)
        for i in range(head.depth):
            p = f"decoder.blocks.{i}"
            b, n, _ = x.shape
            q, kk, v = lin_(ln_(x, f"{p}.norm1"), f"{p}.attn.qkv").reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
            attn = ((q @ kk.transpose(-2, -1)) * (d // heads) ** -0.5).softmax(-1)
            x = x + lin_((attn @ v).transpose(1, 2).reshape(b, n, d), f"{p}.attn.proj")
            x = x + lin_(F.gelu(lin_(ln_(x, f"{p}.norm2"), f"{p}.mlp.fc1")), f"{p}.mlp.fc2")
        x = ln_(x, "decoder.decoder_norm")
        patches, cls = x[:, :-k] @ sd["decoder.proj_patch"], x[:, -k:] @ sd["decoder.proj_classes"]
        patches = patches / patches.norm(dim=-1, keepdim=True)
        cls = cls / cls.norm(dim=-1, keepdim=True)
        ref = ln_(patches @ cls.transpose(1, 2), "decoder.mask_norm").reshape(2, 3, 4, k).numpy()
    got = np.asarray(head(feats))
    diff = np.abs(got - ref).max()
    print(f"mask transformer vs torch re-implementation: max abs diff {diff:.2e}")
    assert diff < 1e-4 and np.abs(ref).max() > 0.5
