"""Turn a stack of independently segmented 2D slices into one 3D instance segmentation.

Why: SAM is a 2D model, so volumes are segmented slice by slice and the same cell gets unrelated
ids in neighbouring slices. Linking them needs a rule that neither merges neighbouring cells nor
splits one cell when it drifts or changes size between slices.

Rule: objects ``a`` in slice z and ``b`` in slice z+1 are candidates when their intersection over
union (IoU) is at least ``min_overlap``. Among the candidates of each slice pair, the one-to-one
matching with the largest total IoU is chosen (Hungarian algorithm), so an object links to at
most one object above and one below; greedy best-first matching can steal an object's only
partner, the optimal matching does not. Linked objects are joined transitively through all
slices (union-find, computed as connected components of the link graph) and the 3D objects are
numbered 1..N in order of their first appearance (slice, then 2D id). With ``min_overlap`` >= 0.5
every object has at most one candidate, since two disjoint objects cannot both cover more than
half of the union with the same partner.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components
from skimage.segmentation import relabel_sequential

from ..errors import InputError


def _validate(labels: np.ndarray, min_overlap: float) -> np.ndarray:
    if isinstance(min_overlap, bool) or not isinstance(min_overlap, (int, float, np.integer, np.floating)):
        raise InputError(f"min_overlap must be a number, got {min_overlap!r}")
    if not (math.isfinite(min_overlap) and 0.0 < min_overlap <= 1.0):
        raise InputError(f"min_overlap must be in (0, 1], got {min_overlap}")
    array = np.asarray(labels)
    if array.dtype.kind not in "biu":
        raise InputError(f"slice labels must have an integer dtype, got {array.dtype}")
    if array.ndim != 3:
        raise InputError(f"slice labels must be 3D (Z, H, W), got shape {array.shape}")
    if array.size == 0:
        raise InputError(f"slice labels are empty (shape {array.shape})")
    if array.dtype.kind == "i" and array.min() < 0:
        raise InputError("slice labels contain negative ids; use 0 for background and positive ids for objects")
    return array.astype(np.uint8) if array.dtype == bool else array


def _match_pair(lower: np.ndarray, upper: np.ndarray, n_lower: int, n_upper: int, min_overlap: float) -> np.ndarray:
    """Matched ``(lower_id, upper_id)`` pairs (local 1-based ids) between two adjacent slices."""
    both = (lower > 0) & (upper > 0)
    if not both.any():
        return np.empty((0, 2), dtype=np.int64)
    rows, cols = lower[both], upper[both]
    contingency = sparse.coo_matrix(
        (np.ones(rows.size, dtype=np.int64), (rows, cols)), shape=(n_lower + 1, n_upper + 1)
    ).tocsr().tocoo()  # csr conversion sums the duplicate (row, col) entries: overlap counts
    rows, cols, overlap = contingency.row, contingency.col, contingency.data
    size_lower = np.bincount(lower, minlength=n_lower + 1)
    size_upper = np.bincount(upper, minlength=n_upper + 1)
    return match_from_counts(rows, cols, overlap, size_lower, size_upper, min_overlap)


def match_from_counts(rows: np.ndarray, cols: np.ndarray, overlap: np.ndarray, size_lower: np.ndarray,
                      size_upper: np.ndarray, min_overlap: float) -> np.ndarray:
    """Matched ``(lower_id, upper_id)`` pairs from overlap counts of id pairs and object sizes
    (indexed by id): the linking rule of ``merge_slices``, also used by blockwise runs that
    collect the counts block by block. Ids may be global (unique across all slices)."""
    rows, cols, overlap = (np.asarray(a, dtype=np.int64) for a in (rows, cols, overlap))
    iou = overlap / (size_lower[rows] + size_upper[cols] - overlap)
    keep = iou >= min_overlap
    rows, cols, iou = rows[keep], cols[keep], iou[keep]
    if rows.size == 0:
        return np.empty((0, 2), dtype=np.int64)

    # Split the candidate graph into independent components: most are a single pair, which is its
    # own optimal matching; only the rest go through the Hungarian algorithm, on small matrices.
    n_lower, n_upper = int(rows.max()), int(cols.max())
    n_nodes = n_lower + 1 + n_upper + 1
    graph = sparse.coo_matrix((np.ones(rows.size), (rows, n_lower + 1 + cols)), shape=(n_nodes, n_nodes))
    _, component = connected_components(graph, directed=False)
    edge_component = component[rows]
    counts = np.bincount(edge_component)
    single = counts[edge_component] == 1
    matched = [np.stack([rows[single], cols[single]], axis=1)]
    for comp in np.unique(edge_component[~single]):
        edges = edge_component == comp
        sub_rows, row_index = np.unique(rows[edges], return_inverse=True)
        sub_cols, col_index = np.unique(cols[edges], return_inverse=True)
        weights = np.zeros((sub_rows.size, sub_cols.size))
        weights[row_index, col_index] = iou[edges]
        chosen_r, chosen_c = linear_sum_assignment(weights, maximize=True)
        real = weights[chosen_r, chosen_c] > 0  # zero entries are non-candidates
        matched.append(np.stack([sub_rows[chosen_r[real]], sub_cols[chosen_c[real]]], axis=1))
    return np.concatenate(matched, axis=0)


def merge_slices(labels_per_slice: np.ndarray, min_overlap: float = 0.5) -> np.ndarray:
    """Give objects segmented slice by slice consistent 3D ids (uint32, 0 = background, 1..N).

    ``labels_per_slice`` is ``(Z, H, W)`` with ids that are independent per slice. See the module
    docstring for the linking rule (IoU >= ``min_overlap``, optimal one-to-one matching between
    adjacent slices, transitive joining).
    """
    labels = _validate(labels_per_slice, min_overlap)
    n_slices = labels.shape[0]

    # Local, consecutive ids per slice; node number of (slice z, local id i) = offsets[z] + i.
    local = np.empty(labels.shape, dtype=np.uint32)
    counts = np.zeros(n_slices, dtype=np.int64)
    for z in range(n_slices):
        relabeled, _, _ = relabel_sequential(labels[z])
        local[z] = relabeled
        counts[z] = int(relabeled.max())
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n_nodes = int(counts.sum()) + 1  # node 0 is the background

    links = []
    for z in range(n_slices - 1):
        pairs = _match_pair(local[z].ravel(), local[z + 1].ravel(), int(counts[z]), int(counts[z + 1]), min_overlap)
        links.append(np.stack([pairs[:, 0] + offsets[z], pairs[:, 1] + offsets[z + 1]], axis=1))
    edges = np.concatenate(links, axis=0) if links else np.empty((0, 2), dtype=np.int64)
    graph = sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_nodes, n_nodes))
    _, component = connected_components(graph, directed=False)

    # Number the 3D objects by first appearance (slice, then 2D id): rank components by their
    # lowest node. Then map each slice through a small lookup table instead of the whole volume.
    object_nodes = np.arange(1, n_nodes)
    first_node = np.full(int(component.max()) + 1, n_nodes, dtype=np.int64)
    np.minimum.at(first_node, component[object_nodes], object_nodes)
    present = np.flatnonzero(first_node < n_nodes)
    rank = np.zeros(first_node.size, dtype=np.uint32)
    rank[present[np.argsort(first_node[present])]] = np.arange(1, present.size + 1, dtype=np.uint32)
    node_to_id = rank[component]
    node_to_id[0] = 0

    result = np.empty(labels.shape, dtype=np.uint32)
    for z in range(n_slices):
        lookup = node_to_id[offsets[z] : offsets[z] + counts[z] + 1].copy()
        lookup[0] = 0
        result[z] = lookup[local[z]]
    return result
