"""Interactive segmentation and the embedding stage of every mode: :class:`Predictor`.

``Predictor(model).set_image(image)`` validates and normalises the image (``preprocess``, with
the model's ``config.normalization``) and makes its image embedding available; ``predict`` turns
prompts into masks with ``model.sam.prompt_encoder`` and ``model.sam.mask_decoder`` run directly
on that embedding, exactly as segment-anything's ``SamPredictor`` does (same coordinate
transform, same mask post-processing), so masks match SAM's for the same weights.

Large images are tiled (``tiling.TileGrid`` with ``fit_edge``, bioimageio.core's block layout):
each tile's window (inner tile + halo, exactly one model input) is encoded at native
resolution, the last window on each axis moved back to end at the image edge and windows that
reach past the image padded ``symmetric`` -- so the ``ais_network`` package run blockwise by
bioimageio.core computes the same maps. Embeddings are computed lazily -- a prompt only needs the tile it
falls in -- and at most ``max_tiles_in_memory`` of them are kept in memory; full-image passes
(``ais_outputs``, AMG) stream through the tiles and never hold more than one tile's features.
With an :class:`~samzoo.segmentation.embedding_cache.EmbeddingCache` every computed embedding is
also stored on disk and later runs load it instead of running the encoder.

Prompt zoom: a model trained on objects of one size (its metadata ``object_diameter``, stated by
samzoo's real-data models) draws a much smaller object on a few cells of its mask decoder's
low-resolution grid (4 image pixels a cell at native resolution) and sees a much larger one as
parts. A box or mask prompt tells the object's size exactly, so with ``zoom_prompts`` each such
prompt is decoded on its own window, sized so that the encoder -- which resizes every window to
its input -- sees the object at the model's prompt diameter (``zoom_window``; metadata
``object_diameter["prompt"]``, else the trained median: ``segmentation.diameter.model_prompt_diameter``).
That costs one encoder call per prompt instead of one per image, which is why it is on by default
only for models that state their object size.

Box clipping: a box prompt states its object's extent, so with ``clip_to_boxes`` a box prompt's
mask keeps only the pixels inside its box (the box's last row and column included). Small decoders
leak: a mask spills into the neighbouring nucleus or grows a stray blob elsewhere in a zoomed
window, and no user wants a mask outside the box they drew. On by default, like prompt zoom, only
for models that state their object size (samzoo's own), so SAM and μSAM checkpoints return what
segment-anything and micro-sam return. The low-resolution logits are the decoder's, unclipped.

Coordinates are SAM's: points are ``(x, y)`` pixels of the original image, boxes
``(x0, y0, x1, y1)``. (``samzoo.visualize`` draws prompts in numpy's ``(y, x)`` order; convert
with ``points[:, ::-1]`` / ``boxes[:, [1, 0, 3, 2]]``.)
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...errors import InputError
from .model import SamzooModel
from ...segmentation.embedding_cache import (
    EmbeddingCache,
    as_embedding_cache,
    image_digest,
    model_fingerprint,
    tiling_descriptor,
    window_entry,
)
from ...segmentation.diameter import declares_object_diameter, model_prompt_diameter
from ...segmentation.preprocess import as_image_stack, normalize_to_uint8_range
from ...segmentation.tiling import BlendedMap, Tile, TileGrid, crop_padding, pad_window, stitch_into

Window = tuple[slice, slice]
"""A rectangular part of the image (rows, columns) that is encoded as one SAM input."""

Padding = tuple[tuple[int, int], tuple[int, int]]
"""How far a window is padded (``symmetric``) beyond the image: ((top, bottom), (left, right))."""

NO_PADDING: Padding = ((0, 0), (0, 0))

MASK_THRESHOLD = 0.0  # SAM's mask_threshold on the logits
_MASK_LOGIT_EPS = 1e-3  # binary mask prompt -> logits of +-6.9 (micro-sam's conversion)


@dataclass(frozen=True)
class WindowEmbedding:
    """The embedding of one window: ``embedding`` (1, C, g, g) on the model's device, SAM's
    resized ``input_shape`` (before padding) and the ``window`` in image coordinates."""

    embedding: torch.Tensor
    input_shape: tuple[int, int]
    window: Window
    padding: Padding = NO_PADDING

    @property
    def window_shape(self) -> tuple[int, int]:
        return (self.window[0].stop - self.window[0].start, self.window[1].stop - self.window[1].start)

    @property
    def padded_shape(self) -> tuple[int, int]:
        """The shape of what was encoded: the window plus its padding."""
        (h, w), ((t, b), (l, r)) = self.window_shape, self.padding
        return (h + t + b, w + l + r)

    @property
    def offset(self) -> tuple[int, int]:
        """(x, y) of the window's top-left corner in the image."""
        return (self.window[1].start, self.window[0].start)


# --------------------------------------------------------------------------------------------
# tiling policy


def _as_pair(name: str, value: int | Sequence[int], minimum: int) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    else:
        try:
            items = tuple(value)  # type: ignore[arg-type]
        except TypeError:
            raise InputError(f"{name} must be an integer or a pair of integers, got {value!r}") from None
        if len(items) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
            raise InputError(f"{name} must be an integer or a pair of integers, got {value!r}")
        pair = (int(items[0]), int(items[1]))
    if min(pair) < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def min_tile_side(img_size: int) -> int:
    """The smallest tile side accepted: an eighth of the model input, at least 16 px."""
    return max(16, img_size // 8)


def resolve_tiling(image_shape: tuple[int, int], img_size: int, tile_shape=None, halo=None
                   ) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """The ``(tile_shape, halo)`` to use for an image, or ``(None, None)`` for no tiling.

    Default (``tile_shape=None``): tile when the longest side exceeds ``img_size`` (as a
    bioimageio.core consumer of the ``ais_network`` package must), with ``halo = img_size // 8``
    and ``tile_shape = img_size - 2 * halo`` so each window is exactly one SAM input (native
    resolution, no resizing). Images up to ``img_size`` are encoded whole. An
    explicit ``tile_shape`` always tiles, with ``halo`` defaulting to ``img_size // 8`` capped at
    a quarter of the tile. ``halo`` alone changes the automatic tiling's halo. A grid of a single
    tile is no tiling.
    """
    height, width = image_shape
    if halo is not None:
        halo = _as_pair("halo", halo, 0)
    if tile_shape is None:
        if max(height, width) <= img_size:
            return None, None
        halo = halo or (img_size // 8, img_size // 8)
        tile = (img_size - 2 * halo[0], img_size - 2 * halo[1])
        if min(tile) < 1:
            raise InputError(f"halo {halo} leaves no tile inside the model's {img_size} px input")
    else:
        # a floor on the tile: --tile-shape 1 would run one encoder pass per pixel (16,384 of them
        # on a 128 px image) for tiles no model can read
        tile = _as_pair("tile_shape", tile_shape, min_tile_side(img_size))
        if halo is None:
            halo = (min(img_size // 8, tile[0] // 4), min(img_size // 8, tile[1] // 4))
        if 2 * halo[0] > tile[0] or 2 * halo[1] > tile[1]:
            raise InputError(f"halo {halo} is more than half of tile_shape {tile}; swapped arguments?")
    if tile[0] >= height and tile[1] >= width:
        return None, None
    return tile, halo


# --------------------------------------------------------------------------------------------
# prompt validation


def _finite(name: str, array: np.ndarray) -> None:
    if not np.isfinite(array).all():
        raise InputError(f"{name} contain NaN or infinite coordinates")


def _as_float_array(name: str, value) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numbers, got {value!r}") from None
    return array


def validate_points(points, point_labels, image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Points as ``(B, N, 2)`` float (x, y) and labels ``(B, N)`` int; ``(N, 2)`` means B = 1.

    Labels: 1 positive, 0 negative, -1 ignored (padding); ``None`` means all positive.
    """
    coords = _as_float_array("points", points)
    if coords.ndim == 1 and coords.size == 2:
        coords = coords[None]
    if coords.ndim == 2:
        coords = coords[None]
    if coords.ndim != 3 or coords.shape[-1] != 2:
        raise InputError(f"points must have shape (N, 2) as (x, y) (or (B, N, 2)), got shape {np.shape(points)}")
    if coords.shape[1] == 0:
        raise InputError("points is empty; pass None for no points")
    _finite("points", coords)
    height, width = image_shape
    outside = (coords[..., 0] < 0) | (coords[..., 0] >= width) | (coords[..., 1] < 0) | (coords[..., 1] >= height)
    if outside.any():
        x, y = coords[outside][0]
        raise InputError(f"point (x={x:g}, y={y:g}) lies outside the {width}x{height} (width x height) image")
    if point_labels is None:
        labels = np.ones(coords.shape[:2], dtype=np.int64)
    else:
        labels_raw = _as_float_array("point_labels", point_labels)
        if labels_raw.size != coords.shape[0] * coords.shape[1]:
            raise InputError(f"{coords.shape[0] * coords.shape[1]} points but {labels_raw.size} point labels")
        if not np.isin(labels_raw, (-1, 0, 1)).all():
            raise InputError("point labels must be 1 (positive), 0 (negative) or -1 (ignored)")
        labels = labels_raw.astype(np.int64).reshape(coords.shape[:2])
    return coords, labels


def validate_boxes(boxes, image_shape: tuple[int, int]) -> np.ndarray:
    """Boxes as ``(B, 4)`` float ``(x0, y0, x1, y1)`` inside the image."""
    array = _as_float_array("boxes", boxes)
    if array.ndim == 1 and array.size == 4:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 4:
        raise InputError(f"boxes must have shape (B, 4) as (x0, y0, x1, y1), got shape {np.shape(boxes)}")
    if array.shape[0] == 0:
        raise InputError("boxes is empty; pass None for no boxes")
    _finite("boxes", array)
    height, width = image_shape
    for i, (x0, y0, x1, y1) in enumerate(array):
        where = f"box {i} ({x0:g}, {y0:g}, {x1:g}, {y1:g})"
        if x1 < x0:
            raise InputError(f"{where} has x1 < x0; boxes are (x0, y0, x1, y1)")
        if y1 < y0:
            raise InputError(f"{where} has y1 < y0; boxes are (x0, y0, x1, y1)")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise InputError(f"{where} extends outside the {width}x{height} (width x height) image")
    return array


# --------------------------------------------------------------------------------------------


class Predictor:
    """Prompt-based segmentation on one image at a time (see the module docstring).

    ``progress`` shows tqdm bars over tiles; ``max_tiles_in_memory`` bounds how many tile
    embeddings interactive prompting keeps in memory (the disk cache keeps all of them).
    ``zoom_prompts``: decode each box or mask prompt on a window that shows its object at the
    model's prompt diameter (module docstring); None (default) turns it on for models whose
    metadata states an ``object_diameter``. ``clip_to_boxes``: keep a box prompt's mask inside its
    box (module docstring); None (default): the same models.
    """

    def __init__(self, model: SamzooModel, *, progress: bool = False, max_tiles_in_memory: int = 1,
                 zoom_prompts: bool | None = None, clip_to_boxes: bool | None = None) -> None:
        if not isinstance(model, SamzooModel):
            raise InputError(f"Predictor needs a SamzooModel, got {type(model).__name__}")
        if max_tiles_in_memory < 1:
            raise InputError("max_tiles_in_memory must be >= 1")
        for name, value in (("zoom_prompts", zoom_prompts), ("clip_to_boxes", clip_to_boxes)):
            if value is not None and not isinstance(value, bool):
                raise InputError(f"{name} must be True, False or None (automatic), got {value!r}")
        self.model = model.eval()
        self.progress = progress
        self.max_tiles_in_memory = int(max_tiles_in_memory)
        self.zoom_prompts = declares_object_diameter(model) if zoom_prompts is None else zoom_prompts
        self.clip_to_boxes = declares_object_diameter(model) if clip_to_boxes is None else clip_to_boxes
        self.encoder_calls = 0
        self.reset_image()

    # ---------------------------------------------------------------- image
    def reset_image(self) -> None:
        self._image: np.ndarray | None = None  # normalised float32 (H, W, 3), kept for lazy tiles
        self._memory: OrderedDict[str, WindowEmbedding] = OrderedDict()
        self._cache: EmbeddingCache | None = None
        self._cache_key: str | None = None
        self.tile_shape: tuple[int, int] | None = None
        self.halo: tuple[int, int] | None = None
        self.grid: TileGrid | None = None
        self.original_shape: tuple[int, int] | None = None

    @property
    def is_image_set(self) -> bool:
        return self._image is not None

    @property
    def is_tiled(self) -> bool:
        return self.grid is not None

    @property
    def prompt_windows_vary(self) -> bool:
        """Whether prompts may be decoded on different windows (tiles or prompt zoom): then a mask
        prompt must be a binary mask of the image, since low-resolution logits belong to one window."""
        return self.is_tiled or self.zoom_prompts

    @property
    def config(self):
        return self.model.config

    def set_image(self, image: np.ndarray, *, tile_shape: int | Sequence[int] | None = None,
                  halo: int | Sequence[int] | None = None,
                  embedding_cache: EmbeddingCache | str | os.PathLike | bool | None = None) -> "Predictor":
        """Validate, normalise and (for untiled images) encode a 2D image.

        ``image``: any 2D layout ``preprocess`` accepts (grayscale, RGB, 2-channel, uint8/uint16/
        float). Tiling follows :func:`resolve_tiling`. ``embedding_cache``: None (off), True
        (``samzoo.cache.cache_dir()/embeddings``), a folder, or an ``EmbeddingCache``.
        Returns ``self``.
        """
        raw = np.asarray(image) if not isinstance(image, np.ndarray) else image
        stack, is_volume = as_image_stack(raw)
        if is_volume or stack.shape[0] != 1:
            raise InputError(
                f"Predictor.set_image takes one 2D image, got an array of shape {np.shape(raw)} read as a volume of "
                f"{stack.shape[0]} slices; use samzoo.segment for volumes or pass one slice"
            )
        normalized = normalize_to_uint8_range(stack[0], self.config.normalization, source_dtype=raw.dtype)
        cache = as_embedding_cache(embedding_cache)
        tiles, halos = resolve_tiling(normalized.shape[:2], self.config.img_size, tile_shape, halo)

        self.reset_image()
        self._image = normalized
        self.original_shape = tuple(normalized.shape[:2])
        self.tile_shape, self.halo = tiles, halos
        self.grid = TileGrid(self.original_shape, tiles, halos, fit_edge=True) if tiles is not None else None
        if cache is not None:
            self._cache = cache
            image_sha = image_digest(raw)
            model_sha = model_fingerprint(self.model)
            tiling = tiling_descriptor(tiles, halos)
            self._cache_key = cache.make_key(image_sha, model_sha, self.config.normalization, tiling)
            cache.describe(self._cache_key, {
                "image_sha256": image_sha, "image_shape": list(raw.shape), "image_dtype": str(raw.dtype),
                "model_sha256": model_sha, "model_name": self.config.name,
                "normalization": self.config.normalization, "tiling": tiling,
            })
        if self.grid is None:
            self.window_embedding(self.full_window)  # encode now: the usual interactive contract
        return self

    @property
    def full_window(self) -> Window:
        self._require_image()
        return (slice(0, self.original_shape[0]), slice(0, self.original_shape[1]))

    def _require_image(self) -> None:
        if self._image is None:
            raise InputError("no image set: call set_image(image) first")

    # ---------------------------------------------------------------- embeddings
    @torch.inference_mode()
    def _encode(self, window: Window, padding: Padding = NO_PADDING) -> WindowEmbedding:
        block = np.ascontiguousarray(pad_window(self._image[window], padding))
        tensor = torch.from_numpy(block).permute(2, 0, 1)[None].contiguous()  # NCHW as SAM and core pass it
        self.encoder_calls += 1
        embedding, input_shape = self.model.embed(tensor)
        return WindowEmbedding(embedding, tuple(int(v) for v in input_shape), window, padding)

    def _load_or_encode(self, window: Window, padding: Padding = NO_PADDING, persist: bool = True) -> WindowEmbedding:
        entry = self._entry(window, padding)
        if self._cache is not None and persist:
            stored = self._cache.load(self._cache_key, entry, expected_channels=self.config.prompt_embed_dim)
            if stored is not None:
                embedding = torch.from_numpy(stored.embedding)[None].to(self.model.device)
                return WindowEmbedding(embedding, stored.input_shape, window, padding)
        computed = self._encode(window, padding)
        if self._cache is not None and persist:
            self._cache.save(self._cache_key, entry, computed.embedding[0].float().cpu().numpy(),
                             computed.input_shape, window)
        return computed

    def _entry(self, window: Window, padding: Padding = NO_PADDING) -> str:
        if padding == NO_PADDING:
            return "full" if window == self.full_window else window_entry(window)
        (t, b), (l, r) = padding
        return f"{window_entry(window)}_pad{t}-{b}-{l}-{r}"

    def window_embedding(self, window: Window | None = None, padding: Padding = NO_PADDING,
                         persist: bool = True) -> WindowEmbedding:
        """The embedding of ``window`` (default: the whole image) padded by ``padding``
        (``symmetric``, as a tile's ``padding``), kept in the in-memory LRU and, when ``persist``,
        in the disk cache (prompt-zoom windows are not: each serves one prompt, and a cache entry
        per box would grow the cache by an embedding per object)."""
        self._require_image()
        window = self.full_window if window is None else window
        entry = self._entry(window, padding)
        if entry in self._memory:
            self._memory.move_to_end(entry)
            return self._memory[entry]
        result = self._load_or_encode(window, padding, persist)
        self._memory[entry] = result
        while len(self._memory) > self.max_tiles_in_memory:
            self._memory.popitem(last=False)
        return result

    def get_image_embedding(self) -> torch.Tensor:
        """The (1, C, g, g) embedding of an untiled image (like ``SamPredictor``)."""
        self._require_image()
        if self.is_tiled:
            raise InputError("the image is tiled; use window_embedding(tile.outer) or iter_tile_embeddings()")
        return self.window_embedding().embedding

    def iter_tile_embeddings(self, *, progress: bool | None = None, desc: str = "tiles"
                             ) -> Iterator[tuple[Tile | None, WindowEmbedding]]:
        """Each tile with its embedding, one at a time (``(None, full)`` for an untiled image).

        Tile embeddings are not added to the in-memory LRU, so a full pass holds one tile's
        features at a time; drop the yielded embedding before asking for the next one.
        """
        self._require_image()
        if self.grid is None:
            yield None, self.window_embedding()
            return
        show = self.progress if progress is None else progress
        for tile in tqdm(self.grid, total=len(self.grid), desc=desc, disable=not show, leave=False):
            entry = self._entry(tile.outer, tile.padding)
            cached = self._memory.get(entry)
            yield tile, (cached if cached is not None else self._load_or_encode(tile.outer, tile.padding))

    # ---------------------------------------------------------------- AIS
    @torch.inference_mode()
    def ais_outputs(self, *, progress: bool | None = None, blend: bool = True) -> np.ndarray:
        """AIS decoder outputs ``(3, H, W)`` float32 (foreground, center and boundary distances)
        for the whole image. Tiled images are decoded tile by tile (each tile sees its halo) and
        the maps blended across the tiles' overlaps (``tiling.BlendedMap``); ``blend=False``
        pastes each tile's inner block instead (the maps then jump at tile edges)."""
        self._require_image()
        if not self.model.has_ais_decoder:
            raise InputError(f"model {self.config.name!r} has no AIS decoder; use mode='amg' or prompts")
        if self.grid is None:
            emb = self.window_embedding()
            out = self.model.decode_ais(emb.embedding, emb.input_shape, self.original_shape, float32=True)
            return out[0].float().cpu().numpy()
        if not blend:
            stitched = np.zeros((3, *self.original_shape), dtype=np.float32)
        else:
            blended = BlendedMap(3, self.original_shape, self.halo)
        for tile, emb in self.iter_tile_embeddings(progress=progress, desc="AIS tiles"):
            prediction = self.model.decode_ais(emb.embedding, emb.input_shape, emb.padded_shape, float32=True)
            maps = crop_padding(prediction[0].float().cpu().numpy(), emb.padding)
            if blend:
                blended.add(maps, tile)
            else:
                stitch_into(stitched, maps, tile)
            del emb, prediction  # keep at most one tile's features alive
        return blended.result() if blend else stitched

    # ---------------------------------------------------------------- prompts (low level)
    def transform_coords(self, coords: np.ndarray, emb: WindowEmbedding) -> np.ndarray:
        """Image (x, y) -> the (padded) window's resized SAM frame (``ResizeLongestSide.apply_coords``)."""
        (h, w), (rh, rw) = emb.padded_shape, emb.input_shape
        x0, y0 = emb.offset
        x0, y0 = x0 - emb.padding[1][0], y0 - emb.padding[0][0]
        out = np.array(coords, dtype=np.float64, copy=True)
        out[..., 0] = (out[..., 0] - x0) * (rw / w)
        out[..., 1] = (out[..., 1] - y0) * (rh / h)
        return out

    @property
    def low_res_size(self) -> int:
        return 4 * self.config.embedding_size

    def mask_to_logits(self, mask: np.ndarray, emb: WindowEmbedding) -> torch.Tensor:
        """A full-resolution binary mask (the window's shape) -> (1, 1, L, L) low-res logits,
        resized like the image and zero-padded in logit space (micro-sam's conversion)."""
        low = self.low_res_size
        rh, rw = emb.input_shape
        size = self.config.img_size
        th, tw = max(1, round(rh * low / size)), max(1, round(rw * low / size))
        values = torch.from_numpy(np.pad(np.asarray(mask, dtype=np.float32), emb.padding))[None, None]
        values = F.interpolate(values, (th, tw), mode="bilinear", align_corners=False, antialias=True)
        logits = torch.logit(values.clamp(_MASK_LOGIT_EPS, 1 - _MASK_LOGIT_EPS))
        logits = F.pad(logits, (0, low - tw, 0, low - th), value=0.0)
        return logits.to(self.model.device)

    @torch.inference_mode()
    def decode(self, emb: WindowEmbedding, coords: np.ndarray | None = None, labels: np.ndarray | None = None,
               boxes: np.ndarray | None = None, mask_logits: torch.Tensor | None = None,
               multimask: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Run prompt encoder + mask decoder for B prompts given in *image* coordinates.

        ``coords`` (B, N, 2), ``labels`` (B, N), ``boxes`` (B, 4), ``mask_logits`` (B, 1, L, L).
        Returns low-res logits (B, K, L, L) and predicted IoUs (B, K), K = 3 if ``multimask``.
        """
        sam, device = self.model.sam, self.model.device
        points = None
        if coords is not None:
            points = (torch.as_tensor(self.transform_coords(coords, emb), dtype=torch.float32, device=device),
                      torch.as_tensor(labels, dtype=torch.int, device=device))
        box_tensor = None
        if boxes is not None:
            corners = self.transform_coords(np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2), emb)
            box_tensor = torch.as_tensor(corners.reshape(-1, 4), dtype=torch.float32, device=device)
        sparse, dense = sam.prompt_encoder(points=points, boxes=box_tensor, masks=mask_logits)
        low_res, iou = sam.mask_decoder(
            image_embeddings=emb.embedding,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        return low_res, iou

    def upscale_logits(self, low_res: torch.Tensor, emb: WindowEmbedding) -> torch.Tensor:
        """Low-res logits (..., L, L) -> logits at the window's size (SAM's ``postprocess_masks``;
        a padded window's padding is cut off)."""
        size = self.config.img_size
        lead = low_res.shape[:-2]
        x = low_res.reshape(-1, 1, *low_res.shape[-2:]).float()
        x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False)
        x = x[..., : emb.input_shape[0], : emb.input_shape[1]]
        x = F.interpolate(x, emb.padded_shape, mode="bilinear", align_corners=False)
        x = crop_padding(x, emb.padding)
        return x.reshape(*lead, *emb.window_shape)

    # ---------------------------------------------------------------- prompts (public)
    def predict(self, points=None, point_labels=None, boxes=None, mask_input=None,
                multimask: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for prompts on the current image.

        ``points`` (N, 2) as (x, y) pixels with ``point_labels`` (N,) 1/0 (default all 1) form
        one prompt; ``boxes`` (B, 4) as (x0, y0, x1, y1) give one prompt -- and one mask -- per
        box (points for several boxes as (B, N, 2)); ``mask_input`` is low-res logits (1, L, L)
        from a previous call (L = 4 * embedding size, 256 for SAM) or a binary mask of the
        image's shape. ``multimask`` (default: only for a single prompt made of one point)
        returns 3 candidates per prompt.

        Returns ``masks`` bool (N, H, W), ``scores`` (N,) (predicted IoU) and ``low_res_logits``
        (N, L, L), prompt-major (N = B or 3 * B). On a tiled image each prompt is decoded on the
        embedding of the tile that contains it, and with prompt zoom each box or mask prompt on its
        own window (``zoom_window``); masks are pasted into the full frame.
        """
        self._require_image()
        shape = self.original_shape
        coords = labels = box_array = None
        if points is not None:
            coords, labels = validate_points(points, point_labels, shape)
        elif point_labels is not None:
            raise InputError("point_labels given without points")
        if boxes is not None:
            box_array = validate_boxes(boxes, shape)
        sizes = {len(a) for a in (coords, box_array) if a is not None}
        if coords is not None and box_array is not None and len(sizes) > 1:
            raise InputError(
                f"{len(box_array)} boxes but {len(coords)} point prompts; give points per box as (B, N, 2)"
            )
        batch = sizes.pop() if sizes else 1
        masks_full, masks_low = self._split_mask_input(mask_input, batch)
        if coords is None and box_array is None and mask_input is None:
            raise InputError("no prompt: give points, boxes or mask_input")
        if multimask is None:
            multimask = batch == 1 and box_array is None and mask_input is None and coords.shape[1] == 1

        groups = self._group_by_window(coords, labels, box_array, masks_full, batch)
        k = 3 if multimask else 1
        low = self.low_res_size
        out_masks = np.zeros((batch * k, *shape), dtype=bool)
        out_scores = np.zeros(batch * k, dtype=np.float32)
        out_low = np.zeros((batch * k, low, low), dtype=np.float32)
        for window, padding, index, persist in groups:
            emb = self.window_embedding(window, padding, persist)
            logits_in = None
            if masks_low is not None:
                logits_in = masks_low[index]
            elif masks_full is not None:
                crop = masks_full[(slice(None), *window)]
                logits_in = torch.cat([self.mask_to_logits(crop[i], emb) for i in index], dim=0)
            with torch.inference_mode():
                low_res, iou = self.decode(
                    emb,
                    None if coords is None else coords[index],
                    None if labels is None else labels[index],
                    None if box_array is None else box_array[index],
                    logits_in, multimask,
                )
                binary = (self.upscale_logits(low_res, emb) > MASK_THRESHOLD).cpu().numpy()
            rows = (np.asarray(index)[:, None] * k + np.arange(k)[None]).ravel()
            out_masks[(rows, *window)] = binary.reshape(len(rows), *emb.window_shape)
            out_scores[rows] = iou.float().cpu().numpy().ravel()
            out_low[rows] = low_res.float().cpu().numpy().reshape(len(rows), low, low)
        if self.clip_to_boxes and box_array is not None:
            clip_masks_to_boxes(out_masks, box_array, k)
        return out_masks, out_scores, out_low

    def _split_mask_input(self, mask_input, batch: int) -> tuple[np.ndarray | None, torch.Tensor | None]:
        """(full-resolution binary masks (B, H, W), low-res logits (B, 1, L, L)); one is None."""
        if mask_input is None:
            return None, None
        if isinstance(mask_input, torch.Tensor):
            mask_input = mask_input.detach().cpu().numpy()
        array = np.asarray(mask_input)
        if array.dtype.kind not in "biuf":
            raise InputError(f"mask_input must be numeric, got dtype {array.dtype}")
        shape, low = self.original_shape, self.low_res_size
        binary = array.dtype == bool or (array.size > 0 and np.isin(array, (0, 1)).all())
        if array.shape[-2:] == shape and binary and array.ndim in (2, 3):
            masks = array.reshape(-1, *shape).astype(bool)
            if len(masks) not in (1, batch):
                raise InputError(f"{len(masks)} mask prompts for {batch} prompts")
            return np.broadcast_to(masks, (batch, *shape)), None
        if array.shape[-2:] == (low, low) and array.ndim in (2, 3, 4):
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise InputError("mask_input contains NaN or infinite values")
            logits = torch.as_tensor(array.reshape(-1, 1, low, low), dtype=torch.float32)
            if len(logits) not in (1, batch):
                raise InputError(f"{len(logits)} mask prompts for {batch} prompts")
            if self.prompt_windows_vary:
                reason = "a tiled image" if self.is_tiled else "prompt zoom (zoom_prompts)"
                raise InputError(f"with {reason} pass mask prompts as a binary mask of the image's shape")
            return None, logits.expand(batch, -1, -1, -1).to(self.model.device)
        raise InputError(
            f"mask_input must be a binary mask of the image's shape {shape} or low-resolution logits "
            f"(1, {low}, {low}); got shape {array.shape}"
        )

    def _group_by_window(self, coords, labels, boxes, masks_full, batch: int
                         ) -> list[tuple[Window, Padding, list[int], bool]]:
        """Which (padded) window each prompt is decoded on -- the whole image, the tile containing
        it, or (prompt zoom) a window sized to its object -- and whether that window's embedding
        goes to the disk cache (not for prompt-zoom windows)."""
        if self.grid is None and not self.zoom_prompts:
            return [(self.full_window, NO_PADDING, list(range(batch)), True)]
        groups: dict[tuple, list[int]] = {}
        for b in range(batch):
            sized = boxes is not None or (masks_full is not None and masks_full[b].any())
            zoomed = self.zoom_prompts and sized
            if self.grid is None and not sized:
                window, padding = self.full_window, NO_PADDING
            else:
                extent = self._prompt_extent(b, coords, labels, boxes, masks_full)
                if zoomed:
                    window, padding = zoom_window(extent, self.original_shape, self.config.img_size,
                                                  model_prompt_diameter(self.model)), NO_PADDING
                else:
                    window, padding = self._window_for(extent)
            key = (window[0].start, window[0].stop, window[1].start, window[1].stop, padding, not zoomed)
            groups.setdefault(key, []).append(b)
        return [((slice(k[0], k[1]), slice(k[2], k[3])), k[4], idx, k[5]) for k, idx in groups.items()]

    def _prompt_extent(self, b, coords, labels, boxes, masks_full) -> tuple[float, float, float, float]:
        xs, ys = [], []
        if coords is not None:
            used = labels[b] != -1
            xs += list(coords[b, used, 0])
            ys += list(coords[b, used, 1])
        if boxes is not None:
            xs += [boxes[b, 0], boxes[b, 2]]
            ys += [boxes[b, 1], boxes[b, 3]]
        if masks_full is not None and masks_full[b].any():
            rows, cols = np.nonzero(masks_full[b])
            xs += [cols.min(), cols.max() + 1]
            ys += [rows.min(), rows.max() + 1]
        if not xs:
            raise InputError("the prompt has no point, box or foreground pixel to locate it on the tiled image")
        return min(xs), min(ys), max(xs), max(ys)

    def _window_for(self, extent: tuple[float, float, float, float]) -> tuple[Window, Padding]:
        """The grid tile whose outer block contains the prompt (the one centred best), else a
        tile-sized window centred on the prompt; a prompt larger than a tile gets a window around
        it with a margin, which the encoder sees downscaled to its input size (``large_prompt_window``)."""
        x0, y0, x1, y1 = extent
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        best, best_distance = None, math.inf
        for tile in self.grid:
            ys, xs = tile.outer
            if xs.start <= x0 and x1 <= xs.stop and ys.start <= y0 and y1 <= ys.stop:
                iy, ix = tile.inner
                distance = math.hypot(cx - (ix.start + ix.stop) / 2, cy - (iy.start + iy.stop) / 2)
                if distance < best_distance:
                    best, best_distance = (tile.outer, tile.padding), distance
        if best is not None:
            return best
        height, width = self.original_shape
        th = min(self.tile_shape[0] + 2 * self.halo[0], height)
        tw = min(self.tile_shape[1] + 2 * self.halo[1], width)
        if y1 - y0 > th or x1 - x0 > tw:
            return large_prompt_window(extent, self.original_shape, (th, tw)), NO_PADDING
        return window_around(extent, self.original_shape, th, tw), NO_PADDING


def clip_masks_to_boxes(masks: np.ndarray, boxes: np.ndarray, per_box: int) -> None:
    """Zero, in place, every pixel of ``masks`` (B * per_box, H, W; prompt-major) outside its box
    (x0, y0, x1, y1); the pixel row and column at x1 / y1 stay, so inclusive and exclusive corners
    both keep the whole object."""
    height, width = masks.shape[1:]
    for b, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=np.float64)):
        top, left = max(int(math.floor(y0)), 0), max(int(math.floor(x0)), 0)
        bottom, right = min(int(math.floor(y1)) + 1, height), min(int(math.floor(x1)) + 1, width)
        inside = np.zeros((height, width), dtype=bool)
        inside[top:bottom, left:right] = True
        masks[b * per_box:(b + 1) * per_box] &= inside


def window_around(extent: tuple[float, float, float, float], image_shape: tuple[int, int], h: int, w: int) -> Window:
    """An ``h`` x ``w`` window (each at most the image's side) centred on ``extent`` (x0, y0, x1, y1)
    and moved inside the image where it would reach past an edge."""
    x0, y0, x1, y1 = extent
    height, width = image_shape
    top = int(min(max(round((y0 + y1) / 2 - h / 2), 0), height - h))
    left = int(min(max(round((x0 + x1) / 2 - w / 2), 0), width - w))
    return (slice(top, top + h), slice(left, left + w))


LARGE_PROMPT_MARGIN = 0.125
"""Context added on each side of a prompt larger than a tile, as a fraction of its extent (SAM
sees boxes with some surroundings in training)."""


def large_prompt_window(extent: tuple[float, float, float, float], image_shape: tuple[int, int],
                        tile: tuple[int, int]) -> Window:
    """A square-ish window around a prompt that does not fit one tile: the prompt's extent plus
    ``LARGE_PROMPT_MARGIN`` on each side, at least one tile, clipped to the image. The window is
    encoded like any other (``SamzooModel.preprocess`` resizes its longest side to the model's
    input), i.e. at the coarser resolution that makes the whole prompt fit, instead of refusing."""
    x0, y0, x1, y1 = extent
    height, width = image_shape
    side = max(x1 - x0, y1 - y0) * (1 + 2 * LARGE_PROMPT_MARGIN)
    h, w = int(min(height, max(tile[0], math.ceil(side)))), int(min(width, max(tile[1], math.ceil(side))))
    return window_around(extent, image_shape, h, w)


MAX_PROMPT_ZOOM = 4.0
"""Prompt zoom enlarges a small object at most this much: a speck of a few pixels blown up to the
trained size would fill the window with interpolated pixels and leave it almost no context."""


def zoom_window(extent: tuple[float, float, float, float], image_shape: tuple[int, int], img_size: int,
                diameter: float) -> Window:
    """The window on which a prompt of ``extent`` (x0, y0, x1, y1) is decoded with prompt zoom:
    a square of side ``longest side x img_size / diameter`` centred on it -- the encoder resizes it
    to ``img_size``, so the object appears ``diameter`` px across -- but at least the prompt plus
    ``LARGE_PROMPT_MARGIN`` on each side and at most ``MAX_PROMPT_ZOOM`` x enlarged, clipped to
    the image (a side longer than the image becomes the image's)."""
    x0, y0, x1, y1 = extent
    height, width = image_shape
    longest = max(x1 - x0, y1 - y0, 1.0)
    side = max(longest * img_size / diameter, longest * (1 + 2 * LARGE_PROMPT_MARGIN), img_size / MAX_PROMPT_ZOOM)
    return window_around(extent, image_shape, int(min(height, math.ceil(side))), int(min(width, math.ceil(side))))
