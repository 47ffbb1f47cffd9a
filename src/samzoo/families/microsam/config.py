"""How to build a model: one serialisable config object, stored inside every samzoo checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ...errors import CheckpointError

ENCODER_KINDS = ("vit", "tiny_vit")
# Sane bounds for every number of the architecture (vit_h, the largest SAM, is well inside): a
# config from a file is checked against them before anything is built, and the built skeleton
# against the file's tensors (checkpoint.load_from_state) before any memory is allocated.
BOUNDS: dict[str, tuple[float, float]] = {
    "img_size": (16, 4096), "patch_size": (2, 64), "embed_dim": (8, 2048), "depth": (1, 64),
    "num_heads": (1, 64), "window_size": (1, 256), "mlp_ratio": (0.25, 16), "prompt_embed_dim": (8, 1024),
    "mask_decoder_depth": (1, 16), "mask_decoder_mlp_dim": (8, 16384), "mask_decoder_heads": (1, 64),
    "iou_head_hidden_dim": (8, 4096), "ais_initial_features": (1, 512),
}
NORMALIZATIONS = ("minmax", "percentile")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a SAM model plus its optional AIS (UNETR) decoder.

    The defaults are SAM vit_b. ``normalization`` says how non-uint8 images are mapped to SAM's
    0..255 input range: ``minmax`` is what micro-sam does; ``percentile`` (1..99.8) is robust to
    hot pixels and is what samzoo's own models are trained with.
    """

    name: str = "vit_b"
    encoder: str = "vit"
    img_size: int = 1024
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    mlp_ratio: float = 4.0
    prompt_embed_dim: int = 256
    mask_decoder_depth: int = 2
    mask_decoder_mlp_dim: int = 2048
    mask_decoder_heads: int = 8
    iou_head_hidden_dim: int = 256
    ais_decoder: bool = True
    ais_initial_features: int = 64
    normalization: str = "minmax"
    tiny_vit: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ...schema import summarize, type_problems

        problems = type_problems(self)
        if problems:  # wrong types first: the checks below assume numbers
            raise CheckpointError("invalid model config: " + summarize(problems))
        object.__setattr__(self, "global_attn_indexes", tuple(int(i) for i in self.global_attn_indexes))
        problems = [f"{name} must be in [{low:g}, {high:g}], got {getattr(self, name)}"
                    for name, (low, high) in BOUNDS.items() if not low <= getattr(self, name) <= high]
        if problems:  # zeros divide, huge values allocate: nothing below runs on them
            raise CheckpointError("invalid model config: " + summarize(problems))
        if self.encoder not in ENCODER_KINDS:
            problems.append(f"encoder must be one of {ENCODER_KINDS}, got {self.encoder!r}")
        if self.normalization not in NORMALIZATIONS:
            problems.append(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.img_size % self.patch_size:
            problems.append(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.encoder == "vit":
            if self.embed_dim % self.num_heads:
                problems.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
            bad = [i for i in self.global_attn_indexes if not 0 <= i < self.depth]
            if bad:
                problems.append(f"global_attn_indexes {bad} outside 0..{self.depth - 1}")
        if self.prompt_embed_dim % self.mask_decoder_heads:
            problems.append("prompt_embed_dim must be divisible by mask_decoder_heads")
        if problems:
            raise CheckpointError("invalid model config: " + "; ".join(problems))

    @property
    def embedding_size(self) -> int:
        """Side of the image-embedding grid (64 for SAM at 1024 px)."""
        return self.img_size // self.patch_size

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["global_attn_indexes"] = list(self.global_attn_indexes)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "ModelConfig":
        if not isinstance(data, dict):
            raise CheckpointError(f"model config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"model config has unknown fields: {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


# the ``architecture`` names a registry entry of a μSAM model may give (the presets but "test")
REGISTRY_ARCHITECTURES = ("vit_b", "vit_l", "vit_h", "vit_t", "tiny")

PRESETS: dict[str, ModelConfig] = {
    "vit_b": ModelConfig(name="vit_b"),
    "vit_l": ModelConfig(
        name="vit_l", embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)
    ),
    "vit_h": ModelConfig(
        name="vit_h", embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)
    ),
    # MobileSAM's TinyViT-5M encoder (samzoo.families.microsam.tiny_vit). Its stage widths, depths and heads
    # live in ``tiny_vit`` (defaults there); embed_dim/depth/num_heads here only describe the last stage.
    "vit_t": ModelConfig(name="vit_t", encoder="tiny_vit", embed_dim=320, depth=4, num_heads=10,
                         global_attn_indexes=()),
    # Small SAM-architecture model: samzoo's shipped default (samzoo-lm-tiny) has this architecture.
    # 256 px input with 8 px patches (32x32 tokens): a token sees what a 16 px token sees on a 2x
    # upscaled image, as in μSAM (512 px images -> 1024 px input), which small nuclei need. Images
    # larger than 256 px are tiled at native resolution by the predictor. Trained on CPU as a
    # 16 px-patch model (4x cheaper steps), then converted (training.rescale) and finetuned.
    "tiny": ModelConfig(
        name="tiny", img_size=256, patch_size=8, embed_dim=192, depth=6, num_heads=6,
        global_attn_indexes=(2, 5),
        window_size=8, prompt_embed_dim=128, mask_decoder_mlp_dim=512, mask_decoder_heads=8,
        iou_head_hidden_dim=128, ais_initial_features=16, normalization="percentile",
    ),
    # Very small: unit tests only (builds and runs in milliseconds).
    "test": ModelConfig(
        name="test", img_size=128, embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,),
        window_size=4, prompt_embed_dim=32, mask_decoder_mlp_dim=64, mask_decoder_heads=2,
        iou_head_hidden_dim=32, ais_initial_features=8, normalization="percentile",
    ),
}


def architecture(name: str, **changes: Any) -> ModelConfig:
    """A named architecture (vit_b, vit_l, vit_h, vit_t, tiny, test), optionally with fields
    changed. "Preset" means a *training* preset (``samzoo train --preset``); this is the model's
    shape. ``preset`` is this function's old name and keeps working for one release."""
    if name not in PRESETS:
        raise CheckpointError(f"unknown architecture {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]


preset = architecture  # old name (one release): "preset" now means training presets only
