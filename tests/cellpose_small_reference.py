"""cellpose's own CPSAM network and CellposeModel.eval running a Cellpose-SAM model of any size.

cellpose's ``CPSAM`` constructor always builds SAM's ViT-L; this builds the same class at another
size (segment-anything's ``ImageEncoderViT`` with cellpose's settings: global attention in every
block, rel-pos tables of the model's sizes) and loads a state dict strictly, leaving ``forward``
and ``CellposeModel.eval`` unchanged. Imports neither samzoo nor anything of it, so the clean
consumer environment (where cellpose is installed as the network package's declared dependency)
can run it too.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping

import torch


def cellpose_model(config: Mapping[str, Any], state: Mapping[str, torch.Tensor]):
    """A ``cellpose.models.CellposeModel`` (CPU, float32) running ``state``.

    ``config``: the architecture fields (img_size, patch_size, embed_dim, depth, num_heads,
    mlp_ratio, neck_dim, nout, rel_pos_rows), e.g. a package's architecture kwargs. ``state``:
    samzoo's network keys (``encoder.*``, ``out.*``); cellpose's fixed ``W2`` (identity pixel
    shuffle) and diameter entries are added when absent."""
    from cellpose.models import CellposeModel
    from cellpose.vit import CPSAM
    from segment_anything.modeling import ImageEncoderViT

    c = dict(config)
    patch, nout, head_dim = int(c["patch_size"]), int(c["nout"]), int(c["embed_dim"]) // int(c["num_heads"])
    net = CPSAM.__new__(CPSAM)
    torch.nn.Module.__init__(net)
    net._dtype, net.rdrop, net.nout, net.ps = torch.float32, 0.0, nout, patch
    net.encoder = ImageEncoderViT(img_size=int(c["img_size"]), patch_size=patch, embed_dim=int(c["embed_dim"]),
                                  depth=int(c["depth"]), num_heads=int(c["num_heads"]),
                                  mlp_ratio=float(c["mlp_ratio"]), out_chans=int(c["neck_dim"]), qkv_bias=True,
                                  norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                                  window_size=0, global_attn_indexes=())
    for block, rows in zip(net.encoder.blocks, c["rel_pos_rows"]):
        block.attn.rel_pos_h = torch.nn.Parameter(torch.zeros(int(rows), head_dim))
        block.attn.rel_pos_w = torch.nn.Parameter(torch.zeros(int(rows), head_dim))
    channels = nout * patch ** 2
    net.out = torch.nn.Conv2d(int(c["neck_dim"]), channels, 1)
    net.W2 = torch.nn.Parameter(torch.zeros(channels, nout, patch, patch), requires_grad=False)
    net.diam_labels = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    net.diam_mean = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    state = dict(state)
    state.setdefault("W2", torch.eye(channels).reshape(channels, nout, patch, patch))
    state.setdefault("diam_labels", torch.full((1,), 30.0))
    state.setdefault("diam_mean", torch.full((1,), 30.0))
    net.load_state_dict(state, strict=True)
    model = CellposeModel.__new__(CellposeModel)
    model.device, model.gpu, model.backbone, model.net = torch.device("cpu"), False, "sam_vitl", net.eval()
    return model
