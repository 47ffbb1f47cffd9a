"""CellSAM's large-image mode: blocks with overlap, objects linked across blocks by IoU.

As the reference's ``segment_wsi``: the image is cut into ``block_size`` cores; each core is
segmented with ``overlap`` pixels of context on every side; for two neighbouring blocks the
objects each found in a band of ``iou_depth`` pixels on both sides of their shared boundary are
compared, and pairs with IoU >= ``link_iou_threshold`` (inside the band) become one object
(connected components over all such links); finally every pixel takes its label from the block
whose core holds it. Difference: the reference pads the image border with a "periodic"/reflected
copy so edge blocks have context there too; samzoo gives edge blocks context only towards the
image inside (no invented pixels).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

from .model import CellSAMModel
from .params import CellSAMParams

Core = tuple[int, int, int, int]


def _starts(length: int, block: int) -> list[int]:
    return list(range(0, length, block)) if length > block else [0]


def block_grid(shape: tuple[int, int], block_size: int) -> list[list[Core]]:
    """Rows of block cores (y0, y1, x0, x1) covering ``shape``."""
    h, w = shape
    return [[(y, min(y + block_size, h), x, min(x + block_size, w)) for x in _starts(w, block_size)]
            for y in _starts(h, block_size)]


def _window(core: Core, overlap: int, shape: tuple[int, int]) -> Core:
    y0, y1, x0, x1 = core
    return max(y0 - overlap, 0), min(y1 + overlap, shape[0]), max(x0 - overlap, 0), min(x1 + overlap, shape[1])


def band_links(a: np.ndarray, b: np.ndarray, iou_threshold: float) -> np.ndarray:
    """(2, K) label pairs (a_label, b_label), both non-zero, whose IoU over these two equally shaped
    label crops is >= ``iou_threshold``."""
    a = a.ravel().astype(np.int64)
    b = b.ravel().astype(np.int64)
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    inter = coo_matrix((np.ones(a.size), (ia, ib)), shape=(ua.size, ub.size)).toarray()
    area_a = np.bincount(ia, minlength=ua.size)[:, None]
    area_b = np.bincount(ib, minlength=ub.size)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(inter > 0, inter / (area_a + area_b - inter), 0.0)
    i, j = np.nonzero(iou >= iou_threshold) if iou_threshold > 0 else np.nonzero(inter > 0)
    pairs = np.stack([ua[i], ub[j]])
    return pairs[:, np.all(pairs != 0, axis=0)]


def segment_tiled(model: CellSAMModel, image: np.ndarray, params: CellSAMParams, *,
                  per_block: Callable[[np.ndarray], np.ndarray] | None = None, progress: bool = False,
                  segment: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Labels (H, W) uint32 of ``image`` (H, W, 3) segmented block by block.

    ``per_block``: normalisation applied to each block window; ``segment``: window -> labels
    (default: ``segment_block`` with ``params``; tests pass their own)."""
    from .segment import segment_block

    shape = image.shape[:2]
    grid = block_grid(shape, params.block_size)
    if segment is None:
        def segment(window: np.ndarray) -> np.ndarray:
            return segment_block(model, window, params).labels

    results: dict[tuple[int, int], tuple[Core, np.ndarray]] = {}
    offset = 0
    cells = [(r, c) for r in range(len(grid)) for c in range(len(grid[r]))]
    for r, c in tqdm(cells, desc="CellSAM blocks", disable=not progress):
        win = _window(grid[r][c], params.overlap, shape)
        crop = image[win[0]:win[1], win[2]:win[3]]
        labels = np.asarray(segment(per_block(crop) if per_block else crop)).astype(np.int64)
        n = int(labels.max()) if labels.size else 0
        labels[labels > 0] += offset
        offset += n
        results[(r, c)] = (win, labels)

    links = [np.zeros((2, 0), dtype=np.int64)]
    d = params.iou_depth
    if d > 0:
        for (r, c), (win, labels) in results.items():
            y0, y1, x0, x1 = grid[r][c]
            for nb, axis in (((r, c + 1), 1), ((r + 1, c), 0)):
                if nb not in results:
                    continue
                nwin, nlabels = results[nb]
                if axis == 1:  # boundary at x = x1
                    region = (max(y0 - d, 0), min(y1 + d, shape[0]), max(x1 - d, 0), min(x1 + d, shape[1]))
                else:
                    region = (max(y1 - d, 0), min(y1 + d, shape[0]), max(x0 - d, 0), min(x1 + d, shape[1]))
                a = _crop(labels, win, region)
                b = _crop(nlabels, nwin, region)
                links.append(band_links(a, b, params.link_iou_threshold))
    pairs = np.concatenate(links, axis=1)
    graph = coo_matrix((np.ones(pairs.shape[1]), (pairs[0], pairs[1])), shape=(offset + 1, offset + 1))
    _, component = connected_components(graph, directed=False)

    out = np.zeros(shape, dtype=np.int64)
    for (r, c), (win, labels) in results.items():
        y0, y1, x0, x1 = grid[r][c]
        out[y0:y1, x0:x1] = _crop(labels, win, (y0, y1, x0, x1))
    merged = np.where(out > 0, component[out] + 1, 0)
    values, relabeled = np.unique(merged, return_inverse=True)
    if values[0] != 0:  # no background pixel: labels must still start at 1
        relabeled = relabeled + 1
    return relabeled.reshape(shape).astype(np.uint32)


def _crop(labels: np.ndarray, win: Core, region: Core) -> np.ndarray:
    return labels[region[0] - win[0]:region[1] - win[0], region[2] - win[2]:region[3] - win[2]]
