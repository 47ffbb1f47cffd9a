import numpy as np
import pytest

from samzoo.errors import InputError
from samzoo.segmentation.preprocess import (
    MIN_SIDE,
    as_image_stack,
    normalize_to_uint8_range,
    prepare_images,
)

RNG = np.random.default_rng(0)


def _gray(shape=(16, 20), dtype=np.uint8):
    return RNG.integers(0, 200, size=shape).astype(dtype)


def test_grayscale_is_replicated_to_three_channels():
    image = _gray()
    stack, volume = as_image_stack(image)
    assert stack.shape == (1, 16, 20, 3) and stack.dtype == np.float32 and volume is False
    for c in range(3):
        np.testing.assert_array_equal(stack[0, ..., c], image)


def test_rgb_kept_and_rgba_alpha_dropped():
    rgb = _gray((16, 20, 3))
    np.testing.assert_array_equal(as_image_stack(rgb)[0][0], rgb)
    rgba = np.concatenate([rgb, np.full((16, 20, 1), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(as_image_stack(rgba)[0][0], rgb)


def test_two_channels_are_averaged():
    two = _gray((16, 20, 2))
    stack, volume = as_image_stack(two)
    expected = two.astype(np.float32).mean(axis=-1)
    assert not volume
    for c in range(3):
        np.testing.assert_allclose(stack[0, ..., c], expected)


def test_singleton_channel_axes_are_gray():
    image = _gray()
    np.testing.assert_array_equal(as_image_stack(image[..., None])[0], as_image_stack(image)[0])
    stack, volume = as_image_stack(image[None])
    assert not volume
    np.testing.assert_array_equal(stack, as_image_stack(image)[0])


@pytest.mark.parametrize("channels", [2, 3])
def test_channel_first_is_moved_last(channels):
    last = _gray((16, 20, channels))
    first = np.moveaxis(last, -1, 0)
    stack, volume = as_image_stack(first)
    assert not volume
    np.testing.assert_array_equal(stack, as_image_stack(last)[0])


def test_is_volume_true_overrides_channel_reading():
    data = _gray((3, 16, 20))
    stack, volume = as_image_stack(data, is_volume=True)
    assert volume and stack.shape == (3, 16, 20, 3)
    np.testing.assert_array_equal(stack[1, ..., 0], data[1])
    # a last axis of size 3 is a channel axis unless is_volume=True, which makes it the width
    stack, volume = as_image_stack(_gray((16, 20, 8)), is_volume=True)
    assert volume and stack.shape == (16, 20, 8, 3)
    with pytest.raises(InputError, match="20x3 pixels"):
        as_image_stack(_gray((16, 20, 3)), is_volume=True)


def test_volumes():
    stack, volume = as_image_stack(_gray((5, 16, 20)))
    assert volume and stack.shape == (5, 16, 20, 3)
    stack, volume = as_image_stack(_gray((5, 16, 20, 3)))
    assert volume and stack.shape == (5, 16, 20, 3)
    stack, volume = as_image_stack(_gray((1, 16, 20, 3)), is_volume=False)
    assert not volume and stack.shape == (1, 16, 20, 3)


def test_is_volume_false_with_explicit_channel_first_rgba():
    data = _gray((4, 16, 20))
    assert as_image_stack(data)[1] is True  # default: 4 slices
    stack, volume = as_image_stack(data, is_volume=False)
    assert not volume
    np.testing.assert_array_equal(stack[0], np.moveaxis(data[:3], 0, -1))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.float16, np.float64, bool])
def test_supported_dtypes(dtype):
    stack, _ = as_image_stack(_gray(dtype=dtype))
    assert stack.dtype == np.float32 and np.isfinite(stack).all()


def test_constant_image_is_accepted():
    stack, _ = as_image_stack(np.full((16, 16), 7.0))
    assert (stack == 7).all()
    for method in ("minmax", "percentile"):
        assert (normalize_to_uint8_range(stack[0], method) == 0).all()


@pytest.mark.parametrize(
    "data, is_volume, match",
    [
        (np.zeros((0, 16)), None, "empty"),
        (np.zeros((16, MIN_SIDE - 1)), None, "at least"),
        (np.zeros((5, 16, MIN_SIDE - 1)), None, "at least"),
        (np.array([[np.nan] * 16] * 16), None, "NaN"),
        (np.array([[np.inf] * 16] * 16), None, "NaN or infinite"),
        (np.full((16, 16), 1e300), None, "float32 range"),
        (np.zeros((16, 16), np.complex64), None, "complex"),
        (np.zeros((16, 16), object), None, "dtype"),
        (np.full((16, 16), "a"), None, "dtype"),
        (np.zeros((2, 3, 16, 16, 1)), None, "2D, 3D or 4D"),
        (np.zeros(16), None, "2D, 3D or 4D"),
        (np.zeros((3, 2, 16, 16)), None, r"\(Z, H, W, C\)"),
        (np.zeros((16, 16)), True, "is_volume=True"),
        (np.zeros((5, 16, 16)), False, "no channel axis"),
        (np.zeros((5, 16, 16, 3)), False, "is_volume=False"),
        (np.zeros((16, 16)), "yes", "is_volume must be"),
    ],
)
def test_bad_inputs_raise_one_line_input_error(data, is_volume, match):
    with pytest.raises(InputError, match=match) as info:
        as_image_stack(data, is_volume=is_volume)
    assert "\n" not in str(info.value)


def test_minmax_keeps_uint8_and_stretches_other_dtypes():
    image = np.stack([np.linspace(10, 200, 256).reshape(16, 16)] * 3, axis=-1)
    kept = normalize_to_uint8_range(image.astype(np.uint8), "minmax")
    np.testing.assert_array_equal(kept, image.astype(np.uint8))
    # a float stack made from uint8 data is still kept when the source dtype is given
    kept = normalize_to_uint8_range(image.astype(np.uint8).astype(np.float32), "minmax", source_dtype=np.uint8)
    np.testing.assert_array_equal(kept, image.astype(np.uint8))
    stretched = normalize_to_uint8_range((image * 100).astype(np.uint16), "minmax")
    assert stretched.dtype == np.float32
    assert stretched.min() == 0 and stretched.max() == pytest.approx(255)


def test_percentile_clips_hot_pixels_for_every_dtype():
    image = np.stack([RNG.normal(100, 10, (64, 64))] * 3, axis=-1)
    image[0, 0] = 1e6  # a hot pixel would squash everything to ~0 with min-max
    out = normalize_to_uint8_range(image, "percentile")
    assert out.min() == 0 and out.max() == 255
    assert 100 < np.median(out) < 160
    minmax = normalize_to_uint8_range(image, "minmax")
    assert np.median(minmax) < 1
    as_uint8 = normalize_to_uint8_range(np.clip(image, 0, 255).astype(np.uint8), "percentile")
    assert as_uint8.max() == 255 and as_uint8.min() == 0


def test_percentile_falls_back_to_minmax_when_percentiles_coincide():
    image = np.zeros((32, 32, 3))
    image[0, 0] = 50.0  # 99.8th percentile is still 0
    out = normalize_to_uint8_range(image, "percentile")
    assert out[0, 0, 0] == 255 and out[5, 5, 0] == 0


def test_normalize_rejects_bad_arguments():
    with pytest.raises(InputError, match="normalization"):
        normalize_to_uint8_range(np.zeros((8, 8, 3)), "zscore")
    with pytest.raises(InputError, match="NaN"):
        normalize_to_uint8_range(np.full((8, 8, 3), np.nan), "minmax")
    with pytest.raises(InputError, match="empty"):
        normalize_to_uint8_range(np.zeros((0, 8, 3)), "minmax")
    with pytest.raises(InputError, match="source_dtype"):
        normalize_to_uint8_range(np.zeros((8, 8, 3)), "minmax", source_dtype="notadtype")


def test_prepare_images_normalizes_each_slice():
    volume = np.stack([np.linspace(0, 1, 256).reshape(16, 16) * scale for scale in (1.0, 1000.0)])
    stack, is_volume = prepare_images(volume, method="minmax", is_volume=True)
    assert is_volume and stack.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(stack[0], stack[1], atol=1e-3)
    assert stack.max() == pytest.approx(255)
    uint8_stack, _ = prepare_images(_gray(), method="minmax")
    assert uint8_stack.max() < 200  # uint8 data kept, not stretched
    with pytest.raises(InputError, match="normalization"):
        prepare_images(_gray(), method="other")
