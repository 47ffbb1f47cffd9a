"""``samzoo demo``: segment the shipped sample image with the default model, in well under a minute.

Steps (each its own function, so more can be added without touching the others):

1. ``load_demo_inputs`` -- the sample image (``samzoo/data/sample_nuclei.tif``) and the model;
2. ``segment_step`` -- automatic instance segmentation, labels TIFF + overlay PNG;
3. ``packaged_model_step`` -- packages the model as a BioImage.IO 0.5 AIS resource and runs that
   zip with bioimageio.core, the way any spec-compliant consumer would, then compares its labels
   with step 2's.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import InputError, SamzooError

SAMPLE_IMAGE = "sample_nuclei.tif"


def sample_image_path() -> Path:
    """The shipped sample image; an ``InputError`` if the installation lacks it."""
    path = Path(str(resources.files("samzoo") / "data" / SAMPLE_IMAGE))
    if not path.is_file():
        raise InputError(f"the sample image {SAMPLE_IMAGE} is missing from the installation ({path}); "
                         "reinstall samzoo or pass --image")
    return path


@dataclass
class DemoResult:
    output_dir: Path
    labels_path: Path
    overlay_path: Path
    image_source: str
    model_name: str
    n_objects: int
    image_shape: tuple[int, ...]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"segmented {self.image_source} ({'x'.join(map(str, self.image_shape))}) with {self.model_name}: "
            f"{self.n_objects} objects in {self.seconds:.1f} s",
            f"labels:  {self.labels_path}",
            f"overlay: {self.overlay_path}",
        ]
        return "\n".join(lines + self.notes)


def load_demo_inputs(model: "torch.nn.Module | str | os.PathLike | None" = None,
                     image: "np.ndarray | str | os.PathLike | None" = None) -> tuple[np.ndarray, str, "torch.nn.Module"]:
    """(image array, where it came from, model); defaults: the sample image and default model."""
    from .io import read_image
    from .segmentation.api import resolve_model

    if image is None:
        path = sample_image_path()
        array, source = read_image(path), path.name
    elif isinstance(image, (str, os.PathLike)):
        array, source = read_image(image), Path(image).name
    else:
        array, source = np.asarray(image), "the given image"
    return array, source, resolve_model(model)


def segment_step(image: np.ndarray, model: "torch.nn.Module", output_dir: Path, *, progress: bool = True
                 ) -> tuple[np.ndarray, Path, Path]:
    """AIS on the image (no embedding cache: a demo measures the real run); writes both files."""
    from .io import write_labels
    from .segmentation.api import segment
    from .visualize import save_overlay

    mode = "ais" if model.has_ais_decoder else "amg"
    labels = segment(image, model, mode=mode, progress=progress)
    labels_path = write_labels(output_dir / "labels.tif", labels)
    overlay_path = save_overlay(output_dir / "overlay.png", image, labels)
    return labels, labels_path, overlay_path


def packaged_model_step(model: "torch.nn.Module", image: np.ndarray, labels: np.ndarray, output_dir: Path) -> list[str]:
    """Show that the package is the model: bioimageio.core's ``predict`` on the zip must give the
    labels samzoo gave. Returns lines for the summary."""
    from bioimageio.core import predict

    from .families import family_of
    from .segmentation.preprocess import as_image_stack

    family = family_of(model)
    if family.package is None:
        return [f"package: not made ({family.title} models have no BioImage.IO package yet)"]
    try:  # the demo's package is the instance-label one of the default (μSAM) model
        packages = family.package(model, output_dir / "packages", formats=("pytorch_state_dict",), kinds=("ais",),
                                  sample_image=image)
    except SamzooError as err:  # e.g. a model that finds nothing: no testable package to show
        return [f"package: not made ({err})"]
    stack, _ = as_image_stack(image)
    channels_first = np.moveaxis(stack[0], -1, 0) if image.ndim == 3 else stack[0, ..., 0][None]
    result = predict(model=packages["ais"], inputs={"image": channels_first[None].astype(np.float32)})
    package_labels = np.asarray(result.members["instance_labels"].data)[0, 0]
    same = package_labels.shape == labels.shape and bool(np.array_equal(package_labels, labels))
    return [
        f"package: {packages['ais']}",
        f"bioimageio.core.predict on the package: {int(package_labels.max())} objects, "
        f"{'identical to' if same else 'DIFFERENT from'} samzoo's labels",
    ]


def run_demo(output_dir: "str | os.PathLike" = "samzoo-demo", *,
             model: "torch.nn.Module | str | os.PathLike | None" = None,
             image: "np.ndarray | str | os.PathLike | None" = None, progress: bool = True,
             device: "str | None" = None) -> DemoResult:
    """Run all demo steps; results go to ``output_dir`` (created; checked writable before any work,
    and never the given image's own files)."""
    from .outputs import check_writable_folder

    start = time.perf_counter()
    out = check_writable_folder(output_dir, "demo output folder")
    if isinstance(image, (str, os.PathLike)):
        for name in ("labels.tif", "overlay.png"):
            if (out / name).exists() and Path(image).exists() and os.path.samefile(out / name, image):
                raise InputError(f"--image {image} is the demo's own output {out / name}; copy it elsewhere first")
    array, source, loaded = load_demo_inputs(model, image)
    if device is not None:
        from .devices import inference_device

        loaded = loaded.to(inference_device(device))
    out.mkdir(parents=True, exist_ok=True)
    labels, labels_path, overlay_path = segment_step(array, loaded, out, progress=progress)
    notes = packaged_model_step(loaded.to("cpu"), array, labels, out)  # packages are built and run on the CPU
    n_objects = int(np.unique(labels[labels > 0]).size)
    return DemoResult(
        output_dir=out, labels_path=labels_path, overlay_path=overlay_path, image_source=source,
        model_name=str(loaded.metadata.get("name") or loaded.config.name), n_objects=n_objects,
        image_shape=tuple(array.shape), seconds=time.perf_counter() - start, notes=notes,
    )
