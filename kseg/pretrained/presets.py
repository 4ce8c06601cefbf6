"""The public checkpoints of the five methods and their encoders, as data.

One entry per checkpoint, keyed by its kseg preset name (``kseg.from_pretrained(name)``):

- ``variant``: the registered kseg variant it is built as;
- ``normalization``: the pixel statistics it was trained with, a key of
  ``kseg.backbones.normalization.NORMALIZATIONS`` ("imagenet" mean/std, or "inception"
  127.5/127.5 for Google's ViT weights), which the model is built with;
- ``source``: ``hf:<repo id>`` (a Hugging Face model folder), ``hf:<repo id>/<file>`` (one file
  of a Hub repo) or an ``https://`` URL (mmseg / torch-hub file names carry the first 8 hex
  digits of the file's sha256 before the suffix, which the download checks);
- ``config``: constructor settings the weights need and their keys cannot tell (normalisation,
  auxiliary taps, run-time position-embedding interpolation...); those the keys do tell
  (position grid, widths, LayerNorm epsilon of a layout) are read at conversion
  (``kseg.convert`` ``describe_checkpoint(...)["config"]``);
- ``dataset``: the class names and palette (``kseg.data.palettes``) the classifier predicts,
  None for ImageNet encoders; ``crop_size``: the training crop (H, W);
- ``miou``: single-scale mIoU (%) the paper (or, where the paper has no such row, the
  authors' README) reports for it, and ``ref``: where the entry's facts come from.

Sources (read for this table): NVlabs/SegFormer and the ``nvidia/*`` Hub cards with SegFormer
Table 1; rstrudel/segmenter README and ``segm/config.yml``; fudan-zvg/SETR README and
``configs/SETR/*``; mmsegmentation ``configs/setr/README.md`` and ``configs/_base_/models/
setr_*.py``; zbwxp/SegVit README and ``configs/segvit/*``; facebookresearch/MaskFormer
``MODEL_ZOO.md`` and ``configs/ade20k-150/*``; the ``facebook/maskformer-*`` Hub models;
timm's ``augreg_in21k_ft_in1k`` ViTs (the Segmenter / SegViT backbones) and the DeiT models.
"""

_SEGFORMER_REF = "SegFormer Table 1 (single-scale); https://huggingface.co/nvidia"
_SEGMENTER_REF = "github.com/rstrudel/segmenter README (model zoo, SS), segm/config.yml"
_SETR_REF = "github.com/fudan-zvg/SETR README and configs/SETR (img_norm_cfg ImageNet, drop_rate 0)"
_MMSEG_SETR_REF = "mmsegmentation configs/setr/README.md and _base_/models/setr_{pup,mla}.py"
_SEGVIT_REF = "github.com/zbwxp/SegVit README (Hub repo Akide/SegViTv1) and configs/segvit"
_MASKFORMER_REF = "facebookresearch/MaskFormer MODEL_ZOO.md (ADE20K-150 / COCO-Stuff-10K, SS)"
_GDRIVE = "https://drive.google.com/file/d/{}/view"

PRESETS = {
    # ------------------------------------------------------------------ SegFormer: MiT encoders
    **{f"mit_b{i}_imagenet": {
        "variant": f"segformer_mit_b{i}", "normalization": "imagenet", "source": f"hf:nvidia/mit-b{i}", "dataset": None,
        "crop_size": (224, 224), "miou": None,
        "ref": f"https://huggingface.co/nvidia/mit-b{i} (ImageNet-1K, encoder only)"}
       for i in range(6)},
    # ------------------------------------------------------------------ SegFormer: ADE20K
    "segformer_b0_ade20k_512": {"variant": "segformer_mit_b0", "normalization": "imagenet", "source": "hf:nvidia/segformer-b0-finetuned-ade-512-512",
                                "dataset": "ade20k", "crop_size": (512, 512), "miou": 37.4, "ref": _SEGFORMER_REF},
    "segformer_b1_ade20k_512": {"variant": "segformer_mit_b1", "normalization": "imagenet", "source": "hf:nvidia/segformer-b1-finetuned-ade-512-512",
                                "dataset": "ade20k", "crop_size": (512, 512), "miou": 42.2, "ref": _SEGFORMER_REF},
    "segformer_b2_ade20k_512": {"variant": "segformer_mit_b2", "normalization": "imagenet", "source": "hf:nvidia/segformer-b2-finetuned-ade-512-512",
                                "dataset": "ade20k", "crop_size": (512, 512), "miou": 46.5, "ref": _SEGFORMER_REF},
    "segformer_b3_ade20k_512": {"variant": "segformer_mit_b3", "normalization": "imagenet", "source": "hf:nvidia/segformer-b3-finetuned-ade-512-512",
                                "dataset": "ade20k", "crop_size": (512, 512), "miou": 49.4, "ref": _SEGFORMER_REF},
    "segformer_b4_ade20k_512": {"variant": "segformer_mit_b4", "normalization": "imagenet", "source": "hf:nvidia/segformer-b4-finetuned-ade-512-512",
                                "dataset": "ade20k", "crop_size": (512, 512), "miou": 50.3, "ref": _SEGFORMER_REF},
    "segformer_b5_ade20k_640": {"variant": "segformer_mit_b5", "normalization": "imagenet", "source": "hf:nvidia/segformer-b5-finetuned-ade-640-640",
                                "dataset": "ade20k", "crop_size": (640, 640), "miou": 51.0, "ref": _SEGFORMER_REF},
    # ------------------------------------------------------------------ SegFormer: Cityscapes
    **{f"segformer_b{i}_cityscapes_1024": {
        "variant": f"segformer_mit_b{i}", "normalization": "imagenet", "source": f"hf:nvidia/segformer-b{i}-finetuned-cityscapes-1024-1024",
        "dataset": "cityscapes", "crop_size": (1024, 1024), "miou": miou, "ref": _SEGFORMER_REF}
       for i, miou in enumerate((76.2, 78.5, 81.0, 81.7, 82.3, 82.4))},
    **{f"segformer_b0_cityscapes_{h}x{w}": {
        "variant": "segformer_mit_b0", "normalization": "imagenet", "source": f"hf:nvidia/segformer-b0-finetuned-cityscapes-{h}-{w}",
        "dataset": "cityscapes", "crop_size": (h, w), "miou": None,
        "ref": "SegFormer Table 7 (real-time settings; the Hub card has no single number)"}
       for h, w in ((512, 1024), (640, 1280), (768, 768))},
    # ------------------------------------------------------------------ Segmenter (authors)
    # ViT backbones: 127.5/127.5 ("vit" normalisation), DeiT: ImageNet; the variant table's
    # defaults. LayerNorm 1e-5 and bilinear position resampling come from the authors' layout.
    "segmenter_vit_t16_mask_ade20k": {
        "variant": "segmenter_vit_t16_mask", "normalization": "inception", "dataset": "ade20k", "crop_size": (512, 512), "miou": 38.1,
        "source": "https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints/ade20k/seg_tiny_mask/checkpoint.pth",
        "ref": _SEGMENTER_REF},
    "segmenter_vit_s16_mask_ade20k": {
        "variant": "segmenter_vit_t16_mask", "normalization": "inception", "config": {"backbone": "vit_s16"}, "dataset": "ade20k",
        "crop_size": (512, 512), "miou": 45.3,
        "source": "https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints/ade20k/seg_small_mask/checkpoint.pth",
        "ref": _SEGMENTER_REF},
    "segmenter_vit_b16_mask_ade20k": {
        "variant": "segmenter_vit_b16_mask", "normalization": "inception", "dataset": "ade20k", "crop_size": (512, 512), "miou": 48.5,
        "source": "https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints/ade20k/seg_base_mask/checkpoint.pth",
        "ref": _SEGMENTER_REF},
    "segmenter_vit_b8_linear_ade20k": {
        "variant": "segmenter_vit_b8_linear", "normalization": "inception", "dataset": "ade20k", "crop_size": (512, 512), "miou": 49.5,
        "source": "https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints/ade20k/seg_base_patch8/checkpoint.pth",
        "ref": _SEGMENTER_REF},
    "segmenter_vit_l16_mask_ade20k_640": {
        "variant": "segmenter_vit_l16_mask", "normalization": "inception", "dataset": "ade20k", "crop_size": (640, 640), "miou": 51.8,
        "source": "https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints/ade20k/seg_large_mask_640/checkpoint.pth",
        "ref": _SEGMENTER_REF},
    "segmenter_deit_b16_linear_ade20k": {
        "variant": "segmenter_deit_b16_linear", "normalization": "imagenet", "dataset": "ade20k", "crop_size": (512, 512), "miou": 47.1,
        "source": "https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints/ade20k/seg_base_deit_linear/checkpoint.pth",
        "ref": _SEGMENTER_REF},
    "segmenter_deit_b16_mask_ade20k": {
        "variant": "segmenter_deit_b16_mask", "normalization": "imagenet", "dataset": "ade20k", "crop_size": (512, 512), "miou": 48.7,
        "source": "https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints/ade20k/seg_base_deit_mask/checkpoint.pth",
        "ref": _SEGMENTER_REF},
    "segmenter_vit_l16_mask_pascal_context": {
        "variant": "segmenter_vit_l16_mask", "normalization": "inception", "dataset": "pascal_context", "crop_size": (480, 480), "miou": 58.1,
        "source": "https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints/pascal_context/seg_large_mask/checkpoint.pth",
        "ref": _SEGMENTER_REF},
    "segmenter_vit_l16_mask_cityscapes": {
        "variant": "segmenter_vit_l16_mask", "normalization": "inception", "dataset": "cityscapes", "crop_size": (768, 768), "miou": 79.1,
        "source": "https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints/cityscapes/seg_large_mask/checkpoint.pth",
        "ref": _SEGMENTER_REF},
    # ------------------------------------------------------------------ SETR (authors, Google Drive)
    # ImageNet mean/std, backbone drop_rate 0 (kseg default now), bilinear position resampling
    # (the authors' pos_embed_interp); ViT-B Naive auxiliary taps Z3/6/9 (kseg default for 12 layers).
    "setr_naive_vit_l16_ade20k": {
        "variant": "setr_naive_vit_l16", "normalization": "imagenet", "source": _GDRIVE.format("17ZlPBcJRKO3c3XoAeNutrExIETu23qKY"),
        "dataset": "ade20k", "crop_size": (512, 512), "miou": 48.06, "ref": _SETR_REF + "; README ADE20K (SS)"},
    "setr_mla_vit_l16_ade20k_bs8": {
        "variant": "setr_mla_vit_l16", "normalization": "imagenet", "source": _GDRIVE.format("1Zcaut5LAKYibjyeCcD3m-aG-ETWW6uhA"),
        "dataset": "ade20k", "crop_size": (512, 512), "miou": 48.27, "ref": _SETR_REF + "; paper Table 3 (8, 160k, SS)"},
    "setr_pup_vit_l16_ade20k": {
        "variant": "setr_pup_vit_l16", "normalization": "imagenet", "source": _GDRIVE.format("1hCeiz60ITgVPkWsrKwah8JnwM3G8VVL4"),
        "dataset": "ade20k", "crop_size": (512, 512), "miou": 48.58, "ref": _SETR_REF + "; paper Table 3 (16, 160k, SS)"},
    "setr_naive_vit_l16_cityscapes_40k": {
        "variant": "setr_naive_vit_l16", "normalization": "imagenet", "source": _GDRIVE.format("1f3b7I7IwKx-hcr16afjcxkAyXyeNQCAz"),
        "dataset": "cityscapes", "crop_size": (768, 768), "miou": 77.37, "ref": _SETR_REF + "; README Cityscapes"},
    "setr_naive_vit_l16_cityscapes_80k": {
        "variant": "setr_naive_vit_l16", "normalization": "imagenet", "source": _GDRIVE.format("1dplB4wceJhyVRQfZR5AWODywMN90CY0h"),
        "dataset": "cityscapes", "crop_size": (768, 768), "miou": 77.90, "ref": _SETR_REF + "; README Cityscapes"},
    "setr_mla_vit_l16_cityscapes_40k": {
        "variant": "setr_mla_vit_l16", "normalization": "imagenet", "source": _GDRIVE.format("18k26X-xM7BEQZUjzkvroeGV-6XwPgBqN"),
        "dataset": "cityscapes", "crop_size": (768, 768), "miou": 76.65, "ref": _SETR_REF + "; README Cityscapes"},
    "setr_mla_vit_l16_cityscapes_80k": {
        "variant": "setr_mla_vit_l16", "normalization": "imagenet", "source": _GDRIVE.format("1ke6wcsCwP_J-p8sYriCZ3pC8G61bE0v_"),
        "dataset": "cityscapes", "crop_size": (768, 768), "miou": 77.24, "ref": _SETR_REF + "; README Cityscapes"},
    "setr_pup_vit_l16_cityscapes_40k": {
        "variant": "setr_pup_vit_l16", "normalization": "imagenet", "source": _GDRIVE.format("1DcZltdh6eHwmQ5BvCdHudJRgJUjPzS56"),
        "dataset": "cityscapes", "crop_size": (768, 768), "miou": 78.39, "ref": _SETR_REF + "; paper Table 5 (40k, SS)"},
    "setr_pup_vit_l16_cityscapes_80k": {
        "variant": "setr_pup_vit_l16", "normalization": "imagenet", "source": _GDRIVE.format("1469aYtEAuhT39BrHn0yOv1s71unF85JE"),
        "dataset": "cityscapes", "crop_size": (768, 768), "miou": 79.34, "ref": _SETR_REF + "; paper Table 5 (80k, SS)"},
    "setr_naive_vit_b16_cityscapes_40k": {
        "variant": "setr_naive_vit_b16", "normalization": "imagenet", "source": _GDRIVE.format("1kGzdSLCazsbgZe0Y1Lo6sNwv9s5V3CAp"),
        "config": {"aux_layers": [3, 6, 9]},
        "dataset": "cityscapes", "crop_size": (768, 768), "miou": 75.54,
        "ref": _SETR_REF + "; SETR_Naive_Base_768x768_40k_cityscapes_bs_8.py (aux in_index 2, 5, 8)"},
    "setr_naive_vit_b16_cityscapes_80k": {
        "variant": "setr_naive_vit_b16", "normalization": "imagenet", "source": _GDRIVE.format("1vOD1-PGNfuM9IUvwnm2CrAXsPkadoyW8"),
        "config": {"aux_layers": [3, 6, 9]},
        "dataset": "cityscapes", "crop_size": (768, 768), "miou": 76.25,
        "ref": _SETR_REF + "; SETR_Naive_Base_768x768_80k_cityscapes_bs_8.py (aux in_index 2, 5, 8)"},
    "setr_naive_vit_l16_pascal_context": {
        "variant": "setr_naive_vit_l16", "normalization": "imagenet", "source": _GDRIVE.format("140T7-wQ3UOzHA0-6pjO3lik_5Vi5RvqJ"),
        "dataset": "pascal_context_60", "crop_size": (480, 480), "miou": 52.89, "ref": _SETR_REF + "; README"},
    "setr_mla_vit_l16_pascal_context_bs8": {
        "variant": "setr_mla_vit_l16", "normalization": "imagenet", "source": _GDRIVE.format("1XvhUVIMcdcEYUYKudUcV99vOwhisYh61"),
        "dataset": "pascal_context_60", "crop_size": (480, 480), "miou": 54.39, "ref": _SETR_REF + "; paper Table 4"},
    "setr_mla_vit_l16_pascal_context": {
        "variant": "setr_mla_vit_l16", "normalization": "imagenet", "source": _GDRIVE.format("1k5CwpKfpNUdAFWOuzwWz9PrRwiGS0Xu9"),
        "dataset": "pascal_context_60", "crop_size": (480, 480), "miou": 54.87, "ref": _SETR_REF + "; paper Table 4"},
    "setr_pup_vit_l16_pascal_context": {
        "variant": "setr_pup_vit_l16", "normalization": "imagenet", "source": _GDRIVE.format("1kXZYyqjA96d2DTL-tRvQjixfDBIZFIyR"),
        "dataset": "pascal_context_60", "crop_size": (480, 480), "miou": 54.40, "ref": _SETR_REF + "; paper Table 4"},
    # ------------------------------------------------------------------ SETR (mmsegmentation)
    # mmseg's Naive head has two convs before its classifier (the authors' one): not loadable.
    "setr_pup_vit_l16_ade20k_mmseg": {
        "variant": "setr_pup_vit_l16", "normalization": "imagenet", "dataset": "ade20k", "crop_size": (512, 512), "miou": 48.24,
        "source": "https://download.openmmlab.com/mmsegmentation/v0.5/setr/setr_pup_512x512_160k_b16_ade20k/"
                  "setr_pup_512x512_160k_b16_ade20k_20210619_191343-7e0ce826.pth",
        "ref": _MMSEG_SETR_REF},
    "setr_mla_vit_l16_ade20k_bs8_mmseg": {
        "variant": "setr_mla_vit_l16", "normalization": "imagenet", "dataset": "ade20k", "crop_size": (512, 512), "miou": 47.34,
        "source": "https://download.openmmlab.com/mmsegmentation/v0.5/setr/setr_mla_512x512_160k_b8_ade20k/"
                  "setr_mla_512x512_160k_b8_ade20k_20210619_191118-c6d21df0.pth",
        "ref": _MMSEG_SETR_REF},
    "setr_mla_vit_l16_ade20k_mmseg": {
        "variant": "setr_mla_vit_l16", "normalization": "imagenet", "dataset": "ade20k", "crop_size": (512, 512), "miou": 47.54,
        "source": "https://download.openmmlab.com/mmsegmentation/v0.5/setr/setr_mla_512x512_160k_b16_ade20k/"
                  "setr_mla_512x512_160k_b16_ade20k_20210619_191057-f9741de7.pth",
        "ref": _MMSEG_SETR_REF},
    "setr_pup_vit_l16_cityscapes_mmseg": {
        "variant": "setr_pup_vit_l16", "normalization": "imagenet", "dataset": "cityscapes", "crop_size": (768, 768), "miou": 79.21,
        "source": "https://download.openmmlab.com/mmsegmentation/v0.5/setr/setr_pup_vit-large_8x1_768x768_80k_cityscapes/"
                  "setr_pup_vit-large_8x1_768x768_80k_cityscapes_20211122_155115-f6f37b8f.pth",
        "ref": _MMSEG_SETR_REF},
    "setr_mla_vit_l16_cityscapes_mmseg": {
        "variant": "setr_mla_vit_l16", "normalization": "imagenet", "dataset": "cityscapes", "crop_size": (768, 768), "miou": 77.00,
        "source": "https://download.openmmlab.com/mmsegmentation/v0.5/setr/setr_mla_vit-large_8x1_768x768_80k_cityscapes/"
                  "setr_mla_vit-large_8x1_768x768_80k_cityscapes_20211119_101003-7f8dccbe.pth",
        "ref": _MMSEG_SETR_REF},
    # ------------------------------------------------------------------ SegViT (authors, Hub)
    # ViT-L configs normalise with the "jax" 127.5/127.5 (variant default); the repository has
    # no ViT-B config beyond _base_/models/seg_vit-b16.py, whose 512 dataset config
    # (_base_/datasets/ade20k.py) uses the ImageNet statistics.
    "segvit_vit_b16_ade20k": {
        "variant": "segvit_vit_b16", "normalization": "imagenet", "source": "hf:Akide/SegViTv1/ade_51.3.pth",
        "dataset": "ade20k", "crop_size": (512, 512), "miou": 51.3, "ref": _SEGVIT_REF + "; SegViT Table 1"},
    "segvit_vit_l16_ade20k": {
        "variant": "segvit_vit_l16", "normalization": "inception", "source": "hf:Akide/SegViTv1/ade_54.6.pth",
        "dataset": "ade20k", "crop_size": (640, 640), "miou": 54.6, "ref": _SEGVIT_REF + "; SegViT Table 1"},
    "segvit_vit_l16_shrunk_ade20k": {
        "variant": "segvit_vit_l16_shrunk", "normalization": "inception", "source": "hf:Akide/SegViTv1/ade_shrunk_53.9.pth",
        "dataset": "ade20k", "crop_size": (640, 640), "miou": 53.9, "ref": _SEGVIT_REF + "; SegViT Table 1"},
    "segvit_vit_l16_coco_stuff10k": {
        "variant": "segvit_vit_l16", "normalization": "inception", "source": "hf:Akide/SegViTv1/COCOstuff_49.9.pth", "config": {"img_size": 512},
        "dataset": "coco_stuff10k", "crop_size": (512, 512), "miou": 49.9, "ref": _SEGVIT_REF + "; SegViT Table 2"},
    "segvit_vit_l16_shrunk_coco_stuff10k": {
        "variant": "segvit_vit_l16_shrunk", "normalization": "inception", "source": "hf:Akide/SegViTv1/COCOstuff10k_shrunk_49.1.pth",
        "config": {"img_size": 512},
        "dataset": "coco_stuff10k", "crop_size": (512, 512), "miou": 49.1, "ref": _SEGVIT_REF + "; SegViT Table 2"},
    "segvit_vit_l16_pascal_context": {
        "variant": "segvit_vit_l16", "normalization": "inception", "source": "hf:Akide/SegViTv1/PC59cls_64.1.pth", "config": {"img_size": 480},
        "dataset": "pascal_context", "crop_size": (480, 480), "miou": 64.1, "ref": _SEGVIT_REF + "; SegViT Table 3"},
    "segvit_vit_l16_shrunk_pascal_context": {
        "variant": "segvit_vit_l16_shrunk", "normalization": "inception", "source": "hf:Akide/SegViTv1/PC59cls_62.3.pth", "config": {"img_size": 480},
        "dataset": "pascal_context", "crop_size": (480, 480), "miou": 62.3, "ref": _SEGVIT_REF + "; SegViT Table 3"},
    # ------------------------------------------------------------------ MaskFormer (transformers)
    **{f"maskformer_swin_{s[0]}_ade20k": {
        "variant": f"maskformer_swin_{s[0]}", "normalization": "imagenet", "source": f"hf:facebook/maskformer-swin-{s}-ade", "dataset": "ade20k",
        "crop_size": crop, "miou": miou, "ref": _MASKFORMER_REF + f"; https://huggingface.co/facebook/maskformer-swin-{s}-ade"}
       for s, crop, miou in (("tiny", (512, 512), 46.7), ("small", (512, 512), 49.8), ("base", (640, 640), 52.7),
                             ("large", (640, 640), 54.1))},
    "maskformer_r50_ade20k": {"variant": "maskformer_r50", "normalization": "imagenet", "source": "hf:facebook/maskformer-resnet50-ade",
                              "dataset": "ade20k", "crop_size": (512, 512), "miou": 44.5, "ref": _MASKFORMER_REF},
    "maskformer_r101_ade20k": {"variant": "maskformer_r101", "normalization": "imagenet", "source": "hf:facebook/maskformer-resnet101-ade",
                               "dataset": "ade20k", "crop_size": (512, 512), "miou": 45.5, "ref": _MASKFORMER_REF},
    # ------------------------------------------------------------------ MaskFormer (detectron2 model zoo)
    **{f"maskformer_{v}_ade20k_d2": {
        "variant": f"maskformer_{v}", "normalization": "imagenet", "dataset": "ade20k", "crop_size": crop, "miou": miou, "ref": _MASKFORMER_REF,
        "source": f"https://dl.fbaipublicfiles.com/maskformer/semantic-ade20k/{run}/model_final_{h}.pkl"}
       for v, run, h, crop, miou in (
           ("r50", "maskformer_R50_bs16_160k", "d8dbeb", (512, 512), 44.5),
           ("r101", "maskformer_R101_bs16_160k", "1aeb94", (512, 512), 45.5),
           ("r101c", "maskformer_R101c_bs16_160k", "b432ea", (512, 512), 46.0),
           ("swin_t", "maskformer_swin_tiny_bs16_160k", "8657a5", (512, 512), 46.7),
           ("swin_s", "maskformer_swin_small_bs16_160k", "528157", (512, 512), 49.8),
           ("swin_b", "maskformer_swin_base_IN21k_384_bs16_160k_res640", "45388b", (640, 640), 52.7),
           ("swin_l", "maskformer_swin_large_IN21k_384_bs16_160k_res640", "aefa3b", (640, 640), 54.1))},
    **{f"maskformer_{v}_coco_stuff10k_d2": {
        "variant": f"maskformer_{v}", "normalization": "imagenet", "dataset": "coco_stuff10k", "crop_size": (640, 640), "miou": miou,
        "ref": _MASKFORMER_REF,
        "source": f"https://dl.fbaipublicfiles.com/maskformer/semantic-coco-stuff-10k/{run}/model_final_{h}.pkl"}
       for v, run, h, miou in (("r50", "maskformer_R50_bs32_60k", "cb03eb", 37.1),
                               ("r101", "maskformer_R101_bs32_60k", "eb19bb", 38.1),
                               ("r101c", "maskformer_R101c_bs32_60k", "bffd25", 38.0))},
    # ------------------------------------------------------------------ ViT / DeiT encoders (ImageNet)
    # AugReg in21k->in1k (timm): the Segmenter backbones (segm/config.yml vit_*_384), 127.5/127.5.
    **{f"vit_{s}{p}_augreg_{r}": {
        "variant": variant, "normalization": "inception",
        "source": f"hf:timm/vit_{name}_patch{p}_{r}.augreg_in21k_ft_in1k", "dataset": None,
        "crop_size": (r, r), "miou": None,
        "ref": "timm augreg_in21k_ft_in1k (How to train your ViT?), Segmenter's segm/config.yml backbones"}
       for s, name, p, r, variant in (("t", "tiny", 16, 384, "segmenter_vit_t16_mask"),
                                      ("s", "small", 16, 384, "segmenter_vit_t16_mask"),
                                      ("b", "base", 16, 384, "segmenter_vit_b16_mask"),
                                      ("l", "large", 16, 384, "segmenter_vit_l16_mask"),
                                      ("b", "base", 8, 224, "segmenter_vit_b8_linear"))},
    # The original in21k->in1k ViT-L/16 at 384 (SETR's jx_vit_large_p16_384), as transformers stores it.
    "vit_l16_in21k_384": {"variant": "setr_pup_vit_l16", "normalization": "inception", "source": "hf:google/vit-large-patch16-384", "dataset": None,
                          "crop_size": (384, 384), "miou": None, "ref": "https://huggingface.co/google/vit-large-patch16-384"},
    "vit_b16_in21k_384": {"variant": "setr_naive_vit_b16", "normalization": "inception", "source": "hf:google/vit-base-patch16-384", "dataset": None,
                          "crop_size": (384, 384), "miou": None, "ref": "https://huggingface.co/google/vit-base-patch16-384"},
    # DeiT distilled (ImageNet mean/std): Segmenter's B-dagger backbone is deit_base_distilled_patch16_384.
    "deit_t16_distilled_224": {"variant": "segmenter_deit_s16_linear", "normalization": "imagenet", "config": {"backbone": "deit_t16"},
                               "source": "hf:facebook/deit-tiny-distilled-patch16-224", "dataset": None,
                               "crop_size": (224, 224), "miou": None, "ref": "DeiT Table 5; Hub facebook/deit-*"},
    "deit_s16_distilled_224": {"variant": "segmenter_deit_s16_linear", "normalization": "imagenet", "source": "hf:facebook/deit-small-distilled-patch16-224",
                               "dataset": None, "crop_size": (224, 224), "miou": None, "ref": "DeiT Table 5; Hub facebook/deit-*"},
    "deit_b16_distilled_384": {"variant": "segmenter_deit_b16_mask", "normalization": "imagenet", "source": "hf:facebook/deit-base-distilled-patch16-384",
                               "dataset": None, "crop_size": (384, 384), "miou": None, "ref": "DeiT Table 5; Hub facebook/deit-*"},
}
