"""What a consumer does with the interactive package's two ONNX files (no samzoo needed): prepare
the encoder input with the package's own architecture file, embed once with onnxruntime, then
decode prompts in segment-anything's ONNX conventions. Used by tests/test_packaging.py and, inside
the clean consumer environment, by tests/clean_consumer_run.py."""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np


def _rdf(zf: zipfile.ZipFile) -> dict:
    from ruyaml import YAML  # what bioimageio.spec itself reads YAML with

    return YAML(typ="safe").load(zf.read("rdf.yaml").decode())


def load_architecture(package: Path):
    """The package's architecture file as a module (normalisation and resize helpers)."""
    with zipfile.ZipFile(package) as zf:
        rdf = _rdf(zf)
        source = zf.read(rdf["weights"]["pytorch_state_dict"]["architecture"]["source"])
    path = Path(tempfile.mkdtemp(prefix="samzoo-arch-")) / "packaged_architecture.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("packaged_architecture", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("packaged_architecture", module)
    spec.loader.exec_module(module)
    return module


class InteractiveOnnx:
    """The encoder and prompt decoder sessions of one interactive package."""

    def __init__(self, package: Path):
        import onnxruntime

        with zipfile.ZipFile(package) as zf:
            rdf = _rdf(zf)
            files = rdf["config"]["samzoo"]["onnx"]
            attached = {a["source"] for a in rdf.get("attachments") or []}
            assert {f["source"] for f in files.values()} <= attached, "the ONNX files must be attachments"
            sessions = {name: onnxruntime.InferenceSession(zf.read(f["source"]), providers=["CPUExecutionProvider"])
                        for name, f in files.items()}
        self.encoder, self.decoder = sessions["image_encoder"], sessions["prompt_decoder"]
        self.config = rdf["config"]["samzoo"]["model_config"]
        self.arch = load_architecture(package)

    def embed(self, image: np.ndarray) -> np.ndarray:
        """(H, W) or (C, H, W) raw image -> (1, E, g, g) embeddings."""
        import torch
        import torch.nn.functional as F

        chw = image[None] if image.ndim == 2 else image
        x = self.arch.normalize_to_255(self.arch.three_channels(chw), self.config["normalization"], chw.dtype)
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
        h, w = self.arch.resized_shape(*chw.shape[1:], int(self.config["img_size"]))
        if (h, w) != tuple(chw.shape[1:]):
            t = F.interpolate(t, (h, w), mode="bilinear", align_corners=False, antialias=True)
        return self.encoder.run(None, {"image": t.numpy()})[0]

    def decode(self, embeddings: np.ndarray, shape: tuple[int, int], boxes=None, points=None, labels=None,
               mask_input=None) -> dict[str, np.ndarray]:
        """Prompts in the package's layout (boxes (1, N, 4), points (1, N, P, 2), labels (1, N, P),
        mask_input (1, N, 1, 4g, 4g)) -> masks (1, N, 1, H, W) uint8, scores (1, N, 1), low_res."""
        coords, codes = [], []
        if points is not None:
            coords.append(np.asarray(points[0], np.float32))
            codes.append(np.asarray(labels[0], np.float32))
        if boxes is not None:
            b = np.asarray(boxes[0], np.float32)
            coords.append(b.reshape(-1, 2, 2))
            codes.append(np.tile(np.array([2, 3], np.float32), (b.shape[0], 1)))
        else:  # segment-anything's convention: a padding point when there is no box
            n = coords[0].shape[0]
            coords.append(np.zeros((n, 1, 2), np.float32))
            codes.append(-np.ones((n, 1), np.float32))
        coords, codes = np.concatenate(coords, 1), np.concatenate(codes, 1)
        g = embeddings.shape[-1]
        has = mask_input is not None
        feeds = {"image_embeddings": embeddings, "point_coords": coords, "point_labels": codes,
                 "mask_input": (np.asarray(mask_input[0], np.float32) if has
                                else np.zeros((coords.shape[0], 1, 4 * g, 4 * g), np.float32)),
                 "has_mask_input": np.array([1.0 if has else 0.0], np.float32),
                 "orig_im_size": np.array(shape, np.float32)}
        masks, iou, low_res = self.decoder.run(None, feeds)
        return {"masks": (masks > 0).astype(np.uint8)[None], "scores": iou[None], "low_res": low_res[None],
                "logits": masks[None]}
