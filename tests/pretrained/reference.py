"""Torch re-implementations of the authors' forward passes, written for the parity tests from
their code (none of it imported: timm / mmcv / the authors' packages are not installed).

- Segmenter: rstrudel/segmenter ``segm/model/{segmenter,vit,blocks,decoder,utils}.py``:
  ``padding`` (bottom/right zeros), ViT (``nn.LayerNorm`` eps 1e-5, ``resize_pos_embed``
  bilinear), ``MaskTransformer``, ``F.interpolate`` to the padded size, ``unpadding``.
- SETR-PUP: fudan-zvg/SETR ``mmseg/models/backbones/vit.py`` (eps 1e-6, no final norm on the
  taps) and ``decode_heads/vit_up_head.py`` (norm, 4 x [conv 3x3, BN, ReLU] with x2 after the
  first three, 1x1 classifier, resize to the image). The authors' PatchEmbed asserts the
  training size and the head squares ``h = w = sqrt(hw)``; for other sizes the reference pads
  bottom/right like mmseg's ``AdaptivePadding`` and crops like Segmenter's authors.
- SegViT: zbwxp/SegVit ``decode_heads/atm_head.py`` (``TPN_DecoderLayer``: post-norm
  self-attention, ATM cross-attention whose pre-softmax scores averaged over heads are the
  masks, ReLU FFN; per-stage masks summed; class logits from the last stage; masks resized to
  the image then ``semantic_inference``) on mmseg's ``VisionTransformer`` (``with_cls_token``
  False, bicubic position resampling). ``d3_to_d4`` there assumes square grids; here the true
  (h, w) is used.

Inputs: normalised images (B, 3, H, W) float64 torch; state dicts of torch float64 tensors.
Outputs: per-pixel scores (B, K, H, W).
"""

import math

import torch
import torch.nn.functional as F


def pad(x, p):
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % p, 0, (-h) % p))


def lin(sd, x, p):
    return F.linear(x, sd[f"{p}.weight"], sd.get(f"{p}.bias"))


def ln(sd, x, p, eps):
    return F.layer_norm(x, (x.shape[-1],), sd[f"{p}.weight"], sd[f"{p}.bias"], eps=eps)


def bn(sd, x, p, eps=1e-5):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        training=False, eps=eps)


def vit_block(sd, x, p, heads, eps, names):
    b, n, c = x.shape
    qkv = F.linear(ln(sd, x, p + names["norm1"], eps), sd[p + names["qkv_w"]], sd[p + names["qkv_b"]])
    q, k, v = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(-1)
    x = x + lin(sd, (attn @ v).transpose(1, 2).reshape(b, n, c), p + names["proj"])
    h = F.gelu(lin(sd, ln(sd, x, p + names["norm2"], eps), p + names["fc1"]))
    return x + lin(sd, h, p + names["fc2"])


TIMM = {"norm1": ".norm1", "qkv_w": ".attn.qkv.weight", "qkv_b": ".attn.qkv.bias", "proj": ".attn.proj",
        "norm2": ".norm2", "fc1": ".mlp.fc1", "fc2": ".mlp.fc2", "patch": "patch_embed.proj", "block": "blocks"}
MMSEG = {"norm1": ".ln1", "qkv_w": ".attn.attn.in_proj_weight", "qkv_b": ".attn.attn.in_proj_bias",
         "proj": ".attn.attn.out_proj", "norm2": ".ln2", "fc1": ".ffn.layers.0.0", "fc2": ".ffn.layers.1",
         "patch": "patch_embed.projection", "block": "layers"}


def vit(sd, prefix, x, patch, heads, depth, eps, mode, names=TIMM, keep_cls=True):
    """Block outputs (B, 1 + h*w or h*w, C) of a timm / mmseg ViT on a padded image, and (h, w)."""
    x = F.conv2d(x, sd[f"{prefix}{names['patch']}.weight"], sd[f"{prefix}{names['patch']}.bias"], stride=patch)
    b, c, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    pos = sd[f"{prefix}pos_embed"]
    g = int(math.sqrt(pos.shape[1] - 1))
    grid = pos[:, 1:].reshape(1, g, g, c).permute(0, 3, 1, 2)
    if (g, g) != (h, w):
        grid = F.interpolate(grid, size=(h, w), mode=mode, align_corners=False)
    x = x + grid.flatten(2).transpose(1, 2)
    if keep_cls:
        x = torch.cat([sd[f"{prefix}cls_token"].expand(b, -1, -1) + pos[:, :1], x], 1)
    outs = []
    for i in range(depth):
        x = vit_block(sd, x, f"{prefix}{names['block']}.{i}", heads, eps, names)
        outs.append(x)
    return outs, (h, w)


def unpad(y, size, padded):
    return F.interpolate(y, size=padded, mode="bilinear", align_corners=False)[..., : size[0], : size[1]]


def segmenter(sd, x, patch, heads, depth, dec_heads, dec_depth, num_classes):
    size = x.shape[-2:]
    xp = pad(x, patch)
    outs, (h, w) = vit(sd, "encoder.", xp, patch, heads, depth, 1e-5, "bilinear")
    z = ln(sd, outs[-1], "encoder.norm", 1e-5)[:, 1:]
    z = lin(sd, z, "decoder.proj_dec")
    z = torch.cat([z, sd["decoder.cls_emb"].expand(z.shape[0], -1, -1)], 1)
    for i in range(dec_depth):
        z = vit_block(sd, z, f"decoder.blocks.{i}", dec_heads, 1e-5, TIMM)
    z = ln(sd, z, "decoder.decoder_norm", 1e-5)
    patches = z[:, :-num_classes] @ sd["decoder.proj_patch"]
    cls = z[:, -num_classes:] @ sd["decoder.proj_classes"]
    patches = patches / patches.norm(dim=-1, keepdim=True)
    cls = cls / cls.norm(dim=-1, keepdim=True)
    masks = ln(sd, patches @ cls.transpose(1, 2), "decoder.mask_norm", 1e-5)
    masks = masks.transpose(1, 2).reshape(x.shape[0], num_classes, h, w)
    return unpad(masks, size, xp.shape[-2:])


def setr_pup(sd, x, patch, heads, depth):
    size = x.shape[-2:]
    xp = pad(x, patch)
    outs, (h, w) = vit(sd, "backbone.", xp, patch, heads, depth, 1e-6, "bilinear")
    t = ln(sd, outs[-1][:, 1:], "decode_head.norm", 1e-6)
    y = t.transpose(1, 2).reshape(x.shape[0], -1, h, w)
    for i in range(4):
        y = F.conv2d(y, sd[f"decode_head.conv_{i}.weight"], sd[f"decode_head.conv_{i}.bias"], padding=1)
        y = F.relu(bn(sd, y, f"decode_head.syncbn_fc_{i}"))
        if i < 3:
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
    y = F.conv2d(y, sd["decode_head.conv_4.weight"], sd["decode_head.conv_4.bias"])
    return unpad(y, size, xp.shape[-2:])


def _mha_self(sd, x, p, heads):
    """nn.MultiheadAttention(x, x, x) with (B, N, C) tensors (the authors use sequence-first)."""
    b, n, c = x.shape
    q, k, v = F.linear(x, sd[f"{p}.in_proj_weight"], sd[f"{p}.in_proj_bias"]).chunk(3, -1)
    split = [t.reshape(b, -1, heads, c // heads).transpose(1, 2) for t in (q, k, v)]
    attn = ((split[0] @ split[1].transpose(-2, -1)) * (c // heads) ** -0.5).softmax(-1)
    return lin(sd, (attn @ split[2]).transpose(1, 2).reshape(b, n, c), f"{p}.out_proj")


def _atm_layer(sd, q, mem, p, heads):
    q = ln(sd, q + _mha_self(sd, q, f"{p}.self_attn", heads), f"{p}.norm1", 1e-5)
    b, nq, c = q.shape
    a = f"{p}.multihead_attn"
    qq = lin(sd, q, f"{a}.q").reshape(b, nq, heads, -1).transpose(1, 2)
    kk = lin(sd, mem, f"{a}.k").reshape(b, mem.shape[1], heads, -1).transpose(1, 2)
    vv = lin(sd, mem, f"{a}.v").reshape(b, mem.shape[1], heads, -1).transpose(1, 2)
    scores = (qq @ kk.transpose(-2, -1)) * (c // heads) ** -0.5
    out = lin(sd, (scores.softmax(-1) @ vv).transpose(1, 2).reshape(b, nq, c), f"{a}.proj")
    q = ln(sd, q + out, f"{p}.norm2", 1e-5)
    q = ln(sd, q + lin(sd, F.relu(lin(sd, q, f"{p}.linear1")), f"{p}.linear2"), f"{p}.norm3", 1e-5)
    return q, scores.sum(1) / heads


def segvit(sd, x, patch, heads, depth, taps, dec_heads, dec_layers):
    """Cascade ATM head (taps 1-based, decoded deepest first); semantic scores (B, K, H, W)."""
    size = x.shape[-2:]
    xp = pad(x, patch)
    outs, (h, w) = vit(sd, "backbone.", xp, patch, heads, depth, 1e-6, "bicubic", MMSEG, keep_cls=False)
    q = sd["decode_head.q.weight"].expand(x.shape[0], -1, -1)
    masks = None
    for s, tap in enumerate(sorted(taps, reverse=True), start=1):
        mem = ln(sd, lin(sd, outs[tap - 1], f"decode_head.input_proj_{s}"), f"decode_head.proj_norm_{s}", 1e-5)
        for j in range(dec_layers):
            q, attn = _atm_layer(sd, q, mem, f"decode_head.decoder_{s}.layers.{j}", dec_heads)
        attn = attn.reshape(x.shape[0], -1, h, w)  # (B, K, h*w) -> (B, K, h, w): d3_to_d4 of its transpose
        masks = attn if masks is None else masks + attn
    cls = lin(sd, q, "decode_head.class_embed").softmax(-1)[..., :-1]
    masks = unpad(masks, size, xp.shape[-2:]).sigmoid()
    return torch.einsum("bqc,bqhw->bchw", cls, masks)
