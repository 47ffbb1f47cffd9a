"""Large arrays on disk, read and written lazily: zarr (v2/v3), OME-Zarr, HDF5, N5 and big TIFFs.

Why: a whole-slide image or an EM volume does not fit in memory, so blockwise segmentation
(``segmentation.blockwise``) reads one block at a time and writes labels chunk by chunk. Each
format goes through its own well-kept library -- zarr for zarr and OME-Zarr (with ome-zarr-py's
metadata writer), h5py for HDF5, tensorstore for N5 (zarr 3 dropped its N5 store), tifffile for
TIFFs (a memory map when the file is uncompressed and contiguous, else tifffile's chunked zarr view) --
behind one small interface: :class:`ArraySource` (picklable: a dask worker reopens the file
itself, file handles never cross processes) with ``shape``, ``dtype`` and ``read(slices)``.

Locations are ``PATH`` or ``PATH:KEY`` (the dataset inside a container): ``cells.zarr:raw``,
``stack.h5:/volumes/raw``, ``em.n5:setup0/s0``. An OME-Zarr image needs no key (its first,
full-resolution level is used). A container without a key, or a key that does not exist, is an
error that lists the datasets it does hold.

Completeness: every label store samzoo writes carries the attribute ``samzoo_complete`` only
after its last block was written (``mark_complete``), plus a ``samzoo_fingerprint`` of what
was asked (input, model, parameters). A store without the marker is a partial result, never
taken as finished; a store whose fingerprint differs holds different data and is refused unless
the caller overwrites it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

ZARR_SUFFIXES = (".zarr",)
N5_SUFFIXES = (".n5",)
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
TIFF_SUFFIXES = (".tif", ".tiff")
NPY_SUFFIXES = (".npy",)
STORE_SUFFIXES = ZARR_SUFFIXES + N5_SUFFIXES + HDF5_SUFFIXES
COMPLETE_ATTR = "samzoo_complete"
FINGERPRINT_ATTR = "samzoo_fingerprint"


def _kind_of(path: Path) -> str | None:
    name = path.name.lower()
    for kind, suffixes in (("zarr", ZARR_SUFFIXES), ("n5", N5_SUFFIXES), ("hdf5", HDF5_SUFFIXES),
                           ("tiff", TIFF_SUFFIXES), ("npy", NPY_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    return None


@dataclass(frozen=True)
class Location:
    """``path`` of a file or container, ``key`` of a dataset inside it (None: the file itself)."""

    path: Path
    key: str | None
    kind: str  # zarr | n5 | hdf5 | tiff | npy

    def __str__(self) -> str:
        return f"{self.path}:{self.key}" if self.key else str(self.path)

    @property
    def is_ome_zarr(self) -> bool:
        return self.kind == "zarr" and self.path.name.lower().endswith(".ome.zarr")


def parse_location(text: str | os.PathLike[str]) -> Location:
    """Split ``PATH[:KEY]``; the part before the colon must end with a known container suffix.

    The split is taken at the first colon that follows a container suffix, so Windows drive
    letters and keys with slashes (``a.h5:/x/y``) both work.
    """
    raw = os.fspath(text)
    lower = raw.lower()
    for suffix in STORE_SUFFIXES:
        at = lower.find(suffix + ":")
        if at >= 0:
            path, key = raw[: at + len(suffix)], raw[at + len(suffix) + 1 :].strip("/")
            return Location(Path(path), key or None, _kind_of(Path(path)) or "zarr")
    path = Path(raw.rstrip("/"))
    kind = _kind_of(path)
    if kind is None:
        raise InputError(f"{raw}: not an array store; expected a path ending with "
                         f"{', '.join(STORE_SUFFIXES + TIFF_SUFFIXES + NPY_SUFFIXES)} (plus :KEY for a dataset)")
    return Location(path, None, kind)


def is_store_location(text: str | os.PathLike[str]) -> bool:
    """True for zarr / N5 / HDF5 locations (with or without ``:KEY``), which are read lazily."""
    try:
        return parse_location(text).kind in ("zarr", "n5", "hdf5")
    except InputError:
        return False


# ------------------------------------------------------------------------------------ reading


def _list_zarr(group, prefix: str = "") -> list[str]:
    names = []
    for name, item in group.members():
        import zarr

        if isinstance(item, zarr.Array):
            names.append(prefix + name)
        else:
            names.extend(_list_zarr(item, prefix + name + "/"))
    return names


def _ome_multiscales(attrs: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The NGFF ``multiscales`` list (0.4: top-level attribute; 0.5: under ``ome``)."""
    ome = attrs.get("ome")
    if isinstance(ome, dict) and isinstance(ome.get("multiscales"), list):
        return ome["multiscales"]
    value = attrs.get("multiscales")
    return value if isinstance(value, list) else None


def _open_zarr(location: Location):
    import zarr

    if not location.path.exists():
        raise InputError(f"zarr store not found: {location.path}")
    try:
        node = zarr.open(str(location.path), mode="r")
    except Exception as err:  # zarr raises several unrelated types for non-stores
        raise InputError(f"cannot open zarr store {location.path}: {' '.join(str(err).split())[:200]}") from None
    if isinstance(node, zarr.Array):
        if location.key:
            raise InputError(f"{location.path} is a single zarr array; it has no dataset {location.key!r}")
        return node
    key = location.key
    if key is None:
        multiscales = _ome_multiscales(dict(node.attrs))
        if multiscales:
            key = multiscales[0]["datasets"][0]["path"]
        else:
            names = _list_zarr(node)
            raise InputError(f"{location.path} is a zarr group; name the dataset as PATH:KEY "
                             f"(it holds: {', '.join(names[:10]) or 'no arrays'})")
    try:
        item = node[key]
    except KeyError:
        names = _list_zarr(node)
        raise InputError(f"{location.path} has no dataset {key!r} (it holds: {', '.join(names[:10]) or 'no arrays'})"
                         ) from None
    if not isinstance(item, zarr.Array):
        multiscales = _ome_multiscales(dict(item.attrs))
        if not multiscales:
            raise InputError(f"{location.path}:{key} is a group, not an array; name one of its arrays")
        item = item[multiscales[0]["datasets"][0]["path"]]  # an OME-Zarr image inside: its first level
    return item


def _open_hdf5(location: Location):
    import h5py

    if not location.path.is_file():
        raise InputError(f"HDF5 file not found: {location.path}")
    try:
        handle = h5py.File(location.path, "r")
    except OSError as err:
        raise InputError(f"cannot open HDF5 file {location.path}: {' '.join(str(err).split())[:200]}") from None
    names: list[str] = []
    handle.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    if not location.key:
        raise InputError(f"{location.path} is an HDF5 file; name the dataset as PATH:KEY "
                         f"(it holds: {', '.join(names[:10]) or 'no datasets'})")
    item = handle.get(location.key)
    if not isinstance(item, h5py.Dataset):
        raise InputError(f"{location.path} has no dataset {location.key!r} (it holds: {', '.join(names[:10]) or 'no datasets'})")
    return item


def _n5_spec(location: Location) -> dict[str, Any]:
    path = location.path / location.key if location.key else location.path
    return {"driver": "n5", "kvstore": {"driver": "file", "path": str(path)}}


def _n5_datasets(root: Path) -> list[str]:
    return sorted(str(p.parent.relative_to(root)) for p in root.rglob("attributes.json")
                  if "dimensions" in json.loads(p.read_text() or "{}"))


class _N5Array:
    """A tensorstore N5 dataset seen as an array: ``shape``, ``dtype``, numpy slicing."""

    def __init__(self, store) -> None:
        self._store = store
        self.shape = tuple(int(v) for v in store.shape)
        self.dtype = np.dtype(store.dtype.numpy_dtype)

    def __getitem__(self, index) -> np.ndarray:
        return np.asarray(self._store[index].read().result())


def _open_n5(location: Location):
    import tensorstore as ts

    if not location.path.is_dir():
        raise InputError(f"N5 container not found: {location.path}")
    target = location.path / location.key if location.key else location.path
    attributes = target / "attributes.json"
    if not (attributes.is_file() and "dimensions" in json.loads(attributes.read_text() or "{}")):
        names = _n5_datasets(location.path)
        what = "no dataset " + repr(location.key) if location.key else "a container; name the dataset as PATH:KEY"
        raise InputError(f"{location.path} is {what} (it holds: {', '.join(names[:10]) or 'no datasets'})")
    return _N5Array(ts.open(_n5_spec(location), read=True).result())


def _open_tiff(location: Location):
    import tifffile
    import zarr

    if not location.path.is_file():
        raise InputError(f"image file not found: {location.path}")
    try:
        return tifffile.memmap(location.path, mode="r")  # uncompressed, contiguous: zero-copy
    except Exception:  # compressed or tiled: read chunk by chunk through tifffile's zarr store
        pass
    try:
        return zarr.open(tifffile.imread(location.path, aszarr=True), mode="r")
    except Exception as err:
        raise InputError(f"cannot read TIFF {location.path}: {' '.join(str(err).split())[:200]}") from None


@functools.lru_cache(maxsize=16)
def _open_cached(location: Location):
    """One open handle per location and process (dask workers reuse it across blocks)."""
    if location.kind == "zarr":
        return _open_zarr(location)
    if location.kind == "hdf5":
        return _open_hdf5(location)
    if location.kind == "n5":
        return _open_n5(location)
    if location.kind == "tiff":
        return _open_tiff(location)
    if not location.path.is_file():
        raise InputError(f"image file not found: {location.path}")
    return np.load(location.path, mmap_mode="r", allow_pickle=False)


@dataclass(frozen=True)
class ArraySource:
    """A dataset read block by block; pickles as its location, so dask workers reopen it."""

    location: Location

    @classmethod
    def open(cls, text: "str | os.PathLike[str] | Location") -> "ArraySource":
        location = text if isinstance(text, Location) else parse_location(text)
        source = cls(location)
        source.array  # noqa: B018 (fail now, with the one-line error, not inside a worker)
        return source

    @property
    def array(self):
        return _open_cached(self.location)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    def read(self, index: Sequence[slice] | tuple = ()) -> np.ndarray:
        """The block ``index`` (slices) as a numpy array (only that block is read)."""
        return np.asarray(self.array[tuple(index)])

    def ome_multiscales(self) -> list[dict[str, Any]] | None:
        """The NGFF multiscales metadata of the container, when the input is an OME-Zarr image."""
        if self.location.kind != "zarr":
            return None
        import zarr

        try:
            root = zarr.open_group(str(self.location.path), mode="r")
        except Exception:
            return None
        return _ome_multiscales(dict(root.attrs))


# ------------------------------------------------------------------------------------ writing


def _existing_attrs(location: Location) -> dict[str, Any] | None:
    """Attributes of an existing label dataset at ``location`` (None when there is none)."""
    try:
        if location.kind == "zarr":
            import zarr

            if not location.path.exists():
                return None
            node = zarr.open(str(location.path), mode="r")
            if location.key:
                node = node[location.key] if location.key in node else None
            if node is None:
                return None
            return dict(node.attrs)
        if location.kind == "hdf5":
            import h5py

            if not location.path.exists():
                return None
            with h5py.File(location.path, "r") as handle:
                item = handle.get(location.key or "labels")
                return None if item is None else {k: _from_h5(v) for k, v in item.attrs.items()}
        if location.kind == "n5":
            target = location.path / location.key if location.key else location.path
            attributes = target / "attributes.json"
            return json.loads(attributes.read_text()) if attributes.is_file() else None
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"output {location} exists but cannot be read: {' '.join(str(err).split())[:200]}") from None
    return None


def _from_h5(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and value.startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def output_state(location: Location, fingerprint: dict[str, Any]) -> str:
    """``"absent"``, ``"complete"`` (same fingerprint, finished), ``"partial"`` (same
    fingerprint, unfinished: resume) or ``"different"`` (other data: refuse or overwrite)."""
    attrs = _existing_attrs(location)
    if attrs is None:
        if location.kind == "zarr" and location.path.exists() and location.key is None:
            return "different"
        return "absent"
    if attrs.get(FINGERPRINT_ATTR) != fingerprint:
        return "different"
    return "complete" if attrs.get(COMPLETE_ATTR) is True else "partial"


def remove_output(location: Location) -> None:
    """Delete a label dataset samzoo is about to rewrite (``--overwrite``)."""
    if location.kind in ("zarr", "n5"):
        target = location.path / location.key if location.key else location.path
        if target.exists():
            shutil.rmtree(target)
    elif location.kind == "hdf5" and location.path.exists():
        import h5py

        with h5py.File(location.path, "a") as handle:
            key = location.key or "labels"
            if key in handle:
                del handle[key]


class LabelWriter:
    """A uint32 label dataset created for blockwise writing; ``write(index, block)`` per block.

    Pickles as its location (workers reopen it). HDF5 cannot take concurrent writers, so it is
    refused for distributed runs by the caller (``supports_parallel_writes``).
    """

    def __init__(self, location: Location) -> None:
        self.location = location

    @property
    def supports_parallel_writes(self) -> bool:
        return self.location.kind in ("zarr", "n5")

    @property
    def _handle(self):
        return _open_for_write(self.location)

    def write(self, index: Sequence[slice], block: np.ndarray) -> None:
        if self.location.kind == "n5":
            self._handle[tuple(index)].write(block).result()
        elif self.location.kind == "hdf5":
            import h5py

            with h5py.File(self.location.path, "a") as handle:
                handle[self.location.key or "labels"][tuple(index)] = block
        else:
            self._handle[tuple(index)] = block

    def read(self, index: Sequence[slice]) -> np.ndarray:
        if self.location.kind == "n5":
            return np.asarray(self._handle[tuple(index)].read().result())
        if self.location.kind == "hdf5":
            import h5py

            with h5py.File(self.location.path, "r") as handle:
                return handle[self.location.key or "labels"][tuple(index)]
        return np.asarray(self._handle[tuple(index)])

    def __reduce__(self):
        return (LabelWriter, (self.location,))


@functools.lru_cache(maxsize=16)
def _open_for_write(location: Location):
    if location.kind == "n5":
        import tensorstore as ts

        return ts.open(_n5_spec(location), write=True).result()
    import zarr

    if location.is_ome_zarr:
        return zarr.open_array(str(location.path), path=f"{location.key}/0" if location.key else "0", mode="r+")
    return zarr.open_array(str(location.path), path=location.key or "", mode="r+")


def create_labels(location: Location, shape: tuple[int, ...], chunks: tuple[int, ...], *,
                  fingerprint: dict[str, Any], axes: str, zarr_format: int = 3,
                  multiscales: list[dict[str, Any]] | None = None) -> LabelWriter:
    """Create (or reopen, to resume) an empty uint32 label dataset with its fingerprint.

    OME-Zarr outputs (``*.ome.zarr``) get NGFF label metadata and a multiscales entry with one
    level, whose axes and level-0 scale come from the input's metadata when it had some.
    """
    _open_for_write.cache_clear()
    if location.kind == "zarr":
        import zarr

        if location.is_ome_zarr:
            _create_ome_labels(location, shape, chunks, fingerprint, axes, multiscales)
        else:
            if location.key:
                root = zarr.open_group(str(location.path), mode="a", zarr_format=_format_of(location.path, zarr_format))
                array = root.require_array(location.key, shape=shape, chunks=chunks, dtype="uint32", fill_value=0)
            else:
                array = zarr.open_array(str(location.path), mode="a", shape=shape, chunks=chunks, dtype="uint32",
                                        fill_value=0, zarr_format=_format_of(location.path, zarr_format))
            array.attrs.update({FINGERPRINT_ATTR: fingerprint, COMPLETE_ATTR: False})
    elif location.kind == "n5":
        import tensorstore as ts

        spec = _n5_spec(location)
        spec.update({"create": True, "open": True,
                     "metadata": {"dimensions": list(shape), "blockSize": list(chunks), "dataType": "uint32",
                                  "compression": {"type": "gzip"}}})
        ts.open(spec).result()
        target = location.path / location.key if location.key else location.path
        attributes = json.loads((target / "attributes.json").read_text())
        attributes.update({FINGERPRINT_ATTR: fingerprint, COMPLETE_ATTR: False})
        _write_json(target / "attributes.json", attributes)
    elif location.kind == "hdf5":
        import h5py

        location.path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(location.path, "a") as handle:
            key = location.key or "labels"
            if key not in handle:
                handle.create_dataset(key, shape=shape, chunks=chunks, dtype="uint32", fillvalue=0,
                                      compression="gzip")
            handle[key].attrs[FINGERPRINT_ATTR] = json.dumps(fingerprint)
            handle[key].attrs[COMPLETE_ATTR] = False
    else:
        raise InputError(f"labels of a blockwise run are written to zarr, OME-Zarr, N5 or HDF5; not {location.path}")
    return LabelWriter(location)


def _format_of(path: Path, default: int) -> int:
    if (path / "zarr.json").exists():
        return 3
    if (path / ".zgroup").exists() or (path / ".zarray").exists():
        return 2
    return default


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from .io import atomic_path

    with atomic_path(path) as temp:
        temp.write_text(json.dumps(data, indent=1))


def _create_ome_labels(location, shape, chunks, fingerprint, axes, multiscales) -> None:
    """An NGFF 0.5 label image: a group with ``multiscales`` + ``image-label`` and level ``0``."""
    import zarr
    from ome_zarr.format import CurrentFormat
    from ome_zarr.writer import add_metadata, write_label_metadata, write_multiscales_metadata

    root = zarr.open_group(str(location.path), mode="a", zarr_format=3)
    group = root.require_group(location.key) if location.key else root
    group.require_array("0", shape=shape, chunks=chunks, dtype="uint32", fill_value=0)
    axes_meta: list[dict[str, str]] = [{"name": a, "type": "space"} for a in axes]
    scale = [1.0] * len(shape)
    if multiscales:
        source_axes = multiscales[0].get("axes") or []
        by_name = {a.get("name"): a for a in source_axes if isinstance(a, dict)}
        transforms = multiscales[0]["datasets"][0].get("coordinateTransformations") or []
        source_scale = next((t.get("scale") for t in transforms if t.get("type") == "scale"), None)
        names = [a.get("name") for a in source_axes if isinstance(a, dict)]
        for i, name in enumerate(axes):
            if name in by_name:
                axes_meta[i] = {k: v for k, v in by_name[name].items() if k in ("name", "type", "unit")}
                if source_scale and name in names:
                    scale[i] = float(source_scale[names.index(name)])
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]
    write_multiscales_metadata(group, datasets, axes=axes_meta, name="labels")
    if location.key and "/" in location.key:  # NGFF layout image.ome.zarr:labels/NAME
        parent, name = location.key.rsplit("/", 1)
        write_label_metadata(root[parent], name)
    else:
        add_metadata(group, {"image-label": {"version": CurrentFormat().version}})
    _ome_group(location).attrs.update({FINGERPRINT_ATTR: fingerprint, COMPLETE_ATTR: False})  # fresh handle:
    # ``group`` holds the attributes from before the label metadata and would write them back


def _ome_group(location: Location):
    import zarr

    root = zarr.open_group(str(location.path), mode="r+")
    return root[location.key] if location.key else root


def mark_complete(writer: LabelWriter, extra: dict[str, Any] | None = None) -> None:
    """Set ``samzoo_complete`` (last step of a run: only a finished store carries it)."""
    location = writer.location
    attrs = {COMPLETE_ATTR: True, **(extra or {})}
    if location.kind == "zarr":
        if location.is_ome_zarr:
            _ome_group(location).attrs.update(attrs)
        else:
            import zarr

            zarr.open_array(str(location.path), path=location.key or "", mode="r+").attrs.update(attrs)
    elif location.kind == "n5":
        target = location.path / location.key if location.key else location.path
        data = json.loads((target / "attributes.json").read_text())
        data.update(attrs)
        _write_json(target / "attributes.json", data)
    elif location.kind == "hdf5":
        import h5py

        with h5py.File(location.path, "a") as handle:
            for k, v in attrs.items():
                handle[location.key or "labels"].attrs[k] = v if not isinstance(v, dict) else json.dumps(v)


def output_location(text: str | os.PathLike[str]) -> Location:
    """Where blockwise labels go: a zarr / OME-Zarr / N5 / HDF5 location (HDF5 key default ``labels``)."""
    location = parse_location(text)
    if location.kind not in ("zarr", "n5", "hdf5"):
        raise InputError(f"-o {text}: blockwise labels are written to .zarr, .ome.zarr, .n5 or .h5 (with optional :KEY)")
    if location.kind == "n5" and location.key is None:
        location = Location(location.path, "labels", "n5")
    if location.kind == "hdf5" and location.key is None:
        location = Location(location.path, "labels", "hdf5")
    return location
