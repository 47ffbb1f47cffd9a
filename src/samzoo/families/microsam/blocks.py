"""μSAM's side of blockwise and batched segmentation: decoder maps for blocks, watershed inputs.

``segmentation.blockwise`` (shared, family-agnostic) cuts an image into blocks and stitches; it asks the
family for four things, which this module provides for μSAM's AIS decoder (see the
``BlockModel`` protocol in ``blockwise``):

- ``intensity_stats(source, plane)``: the whole-plane statistics its normalisation needs (μSAM
  normalises each 2D image as a whole, min-max or percentiles), computed without loading the
  plane when it is large;
- ``predict_maps(blocks, stats)``: per-pixel maps ``(3, h, w)`` for a list of raw 2D blocks,
  encoded in batches (one encoder call for several blocks on a GPU);
- ``watershed_inputs(maps)``: (foreground mask, seed mask, height map) of a block of maps;
- ``context`` (pixels of map context ``watershed_inputs`` needs) and ``min_size``;
- ``tiling`` (the block grid: the family's tile and halo) and ``fits_whole`` / ``labels_from_maps``
  for batches of whole images (``segmentation.batch``).

Exactness: a block normalised with the plane's statistics holds the same float32 values as
the same window of the normalised plane, so each tile's maps equal the tiled ``Predictor``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...errors import InputError
from ...segmentation.preprocess import PERCENTILES, as_image_stack
from .ais import AisParams, smoothing_radius, watershed_from_decoder_outputs, watershed_inputs
from .model import SamzooModel
from .predictor import resolve_tiling
from .segment import resolve_ais_params

EXACT_STATS_PIXELS = 1 << 26
"""Planes up to this many pixels get exact percentiles (the plane is read once, ~0.8 GB of
float32 for three channels); larger ones use every k-th row and column (see ``intensity_stats``)."""

_STRIP_ROWS = 512


@dataclass
class AisBlockModel:
    """A μSAM model with AIS decoder, seen blockwise. ``precision``: ``float32``, ``bfloat16``
    (autocast; the maps come back as float32) or ``int8`` (the ViT linears dynamically quantised,
    CPU; the quantised copy is made where the maps are computed, e.g. on each dask worker, so the
    float model is what travels)."""

    model: SamzooModel
    params: AisParams
    batch_size: int = 1
    precision: str = "float32"
    family: str = field(default="microsam", init=False)

    def __post_init__(self) -> None:
        if not self.model.has_ais_decoder:
            raise InputError(f"model {self.model.config.name!r} has no AIS decoder; blockwise segmentation needs one")
        if self.precision not in ("float32", "bfloat16", "int8"):
            raise InputError(f"precision must be float32, bfloat16 or int8, got {self.precision!r}")
        if self.precision == "int8" and self.model.device.type != "cpu":
            raise InputError(f"int8 inference runs on the CPU only; the model is on {self.model.device}")
        self.model.eval()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_int8_model", None)  # rebuilt where it is used
        return state

    def _network(self) -> SamzooModel:
        """The model that computes maps: the int8 copy (made once) or the model itself."""
        if self.precision != "int8":
            return self.model
        if "_int8_model" not in self.__dict__:
            from .quantization import quantize_int8

            self.__dict__["_int8_model"] = quantize_int8(self.model)
        return self.__dict__["_int8_model"]

    n_maps = 3

    @property
    def img_size(self) -> int:
        return int(self.model.config.img_size)

    @property
    def context(self) -> int:
        return smoothing_radius(self.params)

    @property
    def min_size(self) -> int:
        return int(self.params.min_size)

    # ---------------------------------------------------------------- normalisation
    def intensity_stats(self, read, shape: tuple[int, ...], dtype: np.dtype) -> dict[str, Any]:
        """Low and high values of the normalisation of one plane.

        ``read(rows, cols)`` returns a raw block of the plane of spatial ``shape``. Min-max is
        exact at any size (streamed in row strips); percentiles are exact up to
        ``EXACT_STATS_PIXELS`` and otherwise taken on a regular subsample (every k-th row and
        column, about that many pixels), which differs from the exact value by interpolation
        between neighbouring order statistics only.
        """
        method = self.model.config.normalization
        height, width = shape[:2]
        if method == "minmax":
            if np.dtype(dtype) == np.uint8:
                return {"identity": True}
            low, high = np.inf, -np.inf
            for start in range(0, height, _STRIP_ROWS):
                strip = self._three_channels(read(slice(start, min(start + _STRIP_ROWS, height)), slice(0, width)))
                low, high = min(low, float(strip.min())), max(high, float(strip.max()))
            return {"low": low, "high": high}
        if height * width <= EXACT_STATS_PIXELS:
            values = self._three_channels(read(slice(0, height), slice(0, width)))
        else:
            step = int(np.ceil(np.sqrt(height * width / EXACT_STATS_PIXELS)))
            rows = [self._three_channels(read(slice(r, r + 1), slice(0, width)))[:, ::step]
                    for r in range(0, height, step)]
            values = np.concatenate(rows, axis=0)
        low, high = (float(v) for v in np.percentile(values, PERCENTILES))
        if high <= low:
            low, high = float(values.min()), float(values.max())
        return {"low": low, "high": high}

    @staticmethod
    def _three_channels(block: np.ndarray) -> np.ndarray:
        stack, _ = as_image_stack(np.asarray(block), is_volume=False)
        return stack[0]

    @staticmethod
    def _normalise(block: np.ndarray, stats: dict[str, Any]) -> np.ndarray:
        """Same arithmetic as ``preprocess.normalize_to_uint8_range`` with the plane's values."""
        values = block
        if stats.get("identity"):
            return values
        low, high = stats["low"], stats["high"]
        if high <= low:
            return np.zeros_like(values)
        scaled = (values - np.float32(low)) * np.float32(255.0 / (high - low))
        return np.clip(scaled, 0.0, 255.0, out=scaled)

    # ---------------------------------------------------------------- maps
    @torch.inference_mode()
    def predict_maps(self, blocks: Sequence[np.ndarray], stats: Sequence[dict[str, Any]]) -> list[np.ndarray]:
        """Decoder maps ``(3, h, w)`` float32 of raw 2D blocks; same-shape blocks share encoder calls."""
        images = [self._normalise(self._three_channels(b), s) for b, s in zip(blocks, stats)]
        out: list[np.ndarray | None] = [None] * len(images)
        order = sorted(range(len(images)), key=lambda i: images[i].shape)
        network = self._network()
        device = network.device
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16")
        start = 0
        while start < len(order):
            shape = images[order[start]].shape
            group = [order[start]]
            while (start + len(group) < len(order) and len(group) < self.batch_size
                   and images[order[start + len(group)]].shape == shape):
                group.append(order[start + len(group)])
            # contiguous NCHW, as the predictor passes it: the encoder's float results depend on the
            # memory layout (about 1e-6), and blockwise labels must equal segment()'s exactly
            batch = torch.from_numpy(np.stack([images[i] for i in group])).permute(0, 3, 1, 2).contiguous()
            with autocast:
                embedding, input_shape = network.embed(batch)
                maps = network.decode_ais(embedding, tuple(int(v) for v in input_shape), shape[:2], float32=True)
            maps = maps.float().cpu().numpy()
            for j, i in enumerate(group):
                out[i] = maps[j]
            start += len(group)
        return out  # type: ignore[return-value]

    def watershed_inputs(self, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return watershed_inputs(maps[0], maps[1], maps[2], self.params)

    def labels_from_maps(self, maps: np.ndarray) -> np.ndarray:
        """Labels of a whole image from its maps (the in-memory path, as ``segment`` does)."""
        return watershed_from_decoder_outputs(maps[0], maps[1], maps[2], self.params)

    # ---------------------------------------------------------------- geometry
    def tiling(self, tile_shape=None, halo=None) -> tuple[tuple[int, int], tuple[int, int]]:
        """Tile and halo of the block grid: ``resolve_tiling``'s rule for an image that needs tiling."""
        huge = (1 << 40, 1 << 40)
        tile, halo_ = resolve_tiling(huge, self.img_size, tile_shape, halo)
        assert tile is not None and halo_ is not None
        return tile, halo_

    def fits_whole(self, shape: tuple[int, ...]) -> bool:
        """Whether ``segment`` would encode a 2D image of ``shape`` in one piece (no tiling)."""
        return len(shape) == 2 and resolve_tiling(tuple(shape), self.img_size)[0] is None


def block_model(model: SamzooModel, params: "AisParams | dict[str, Any] | None" = None, *, batch_size: int = 1,
                precision: str = "float32", **_: Any) -> AisBlockModel:
    """``FamilySpec.block_model`` of μSAM: ``params`` override the model's tuned AIS parameters."""
    return AisBlockModel(model, resolve_ais_params(model, params), batch_size=batch_size, precision=precision)
