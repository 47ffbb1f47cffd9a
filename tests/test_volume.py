import numpy as np
import pytest

from samzoo.errors import InputError
from samzoo.segmentation.volume import merge_slices


def _disk(shape, center, radius):
    yy, xx = np.indices(shape)
    return np.hypot(yy - center[0], xx - center[1]) <= radius


def test_object_drifting_across_slices_gets_one_id_and_separate_objects_stay_apart():
    shape, n_slices = (64, 64), 6
    stack = np.zeros((n_slices,) + shape, np.int32)
    for z in range(n_slices):
        # ids are independent per slice on purpose: the drifting disk changes its 2D id
        stack[z][_disk(shape, (20, 15 + 2 * z), 9)] = 10 + z
        stack[z][_disk(shape, (48, 48), 8 + z % 2)] = 3
    merged = merge_slices(stack)
    assert merged.dtype == np.uint32 and merged.shape == stack.shape
    assert set(np.unique(merged)) == {0, 1, 2}
    drifting = np.unique(merged[stack >= 10])
    steady = np.unique(merged[stack == 3])
    assert drifting.size == 1 and steady.size == 1 and drifting[0] != steady[0]
    assert steady[0] == 1  # numbered by first appearance: slice 0, then 2D id order (3 < 10)


def test_low_overlap_and_gaps_start_new_objects():
    shape = (40, 40)
    stack = np.zeros((4,) + shape, np.uint16)
    stack[0][_disk(shape, (20, 10), 6)] = 1
    stack[1][_disk(shape, (20, 19), 6)] = 1  # moved too far: IoU < 0.5
    stack[3][_disk(shape, (20, 19), 6)] = 1  # slice 2 empty: chain broken
    merged = merge_slices(stack)
    assert [np.unique(merged[z][merged[z] > 0]).tolist() for z in range(4)] == [[1], [2], [], [3]]
    assert merge_slices(stack, min_overlap=0.05)[1].max() == 1


def test_optimal_matching_beats_greedy():
    # Columns: slice 0 has A2=[0,8) and A1=[8,28); slice 1 has B1=[0,20) and B2=[20,28).
    # IoU(A1,B1)=0.43 is the single best pair, but taking it leaves A2 and B2 unmatched;
    # the optimum links A1-B2 (0.40) and A2-B1 (0.40).
    stack = np.zeros((2, 10, 32), np.int64)
    stack[0, :, 0:8], stack[0, :, 8:28] = 5, 9
    stack[1, :, 0:20], stack[1, :, 20:28] = 3, 7
    merged = merge_slices(stack, min_overlap=0.35)
    assert merged.max() == 2
    assert np.unique(merged[0, :, 0:8]) == np.unique(merged[1, :, 0:20])
    assert np.unique(merged[0, :, 8:28]) == np.unique(merged[1, :, 20:28])


def test_split_object_links_to_one_part_only():
    stack = np.zeros((2, 10, 40), np.int32)
    stack[0, :, 0:30] = 1
    stack[1, :, 0:20], stack[1, :, 20:30] = 1, 2
    merged = merge_slices(stack, min_overlap=0.3)
    assert merged.max() == 2 and (merged[1, :, :20] == merged[0, 0, 0]).all()
    assert (merged[1, :, 20:30] != merged[0, 0, 0]).all()


def test_single_slice_bool_and_empty_inputs():
    mask = np.zeros((1, 16, 16), bool)
    mask[0, 4:8, 4:8] = True
    assert merge_slices(mask).max() == 1
    assert not merge_slices(np.zeros((3, 16, 16), np.uint8)).any()
    sparse_ids = np.zeros((1, 16, 16), np.uint64)
    sparse_ids[0, :4], sparse_ids[0, 8:] = 2**40, 17
    assert set(np.unique(merge_slices(sparse_ids))) == {0, 1, 2}


@pytest.mark.parametrize(
    "labels, min_overlap, match",
    [
        (np.zeros((16, 16), int), 0.5, "3D"),
        (np.zeros((2, 16, 16), float), 0.5, "integer dtype"),
        (np.full((2, 16, 16), -1), 0.5, "negative"),
        (np.zeros((0, 16, 16), int), 0.5, "empty"),
        (np.zeros((2, 16, 16), int), 0.0, r"\(0, 1\]"),
        (np.zeros((2, 16, 16), int), 1.5, r"\(0, 1\]"),
        (np.zeros((2, 16, 16), int), float("nan"), r"\(0, 1\]"),
        (np.zeros((2, 16, 16), int), True, "number"),
    ],
)
def test_validation(labels, min_overlap, match):
    with pytest.raises(InputError, match=match):
        merge_slices(labels, min_overlap)
