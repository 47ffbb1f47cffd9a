"""Registry of the models samzoo knows by name (see :mod:`samzoo.registry.registry`)."""

from .registry import (
    FAMILY_ARCHITECTURES,
    MODALITIES,
    ROLES,
    Registry,
    RegistryEntry,
    RegistryFile,
    builtin_registry_path,
    load_registry,
    parse_hash,
    read_registry_file,
    registry_sources,
    split_registry_list,
    validate_registry,
)



def __getattr__(name: str):
    if name == "ARCHITECTURES":  # μSAM's registry architectures, from the family registry
        return FAMILY_ARCHITECTURES["microsam"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ARCHITECTURES",
    "FAMILY_ARCHITECTURES",
    "MODALITIES",
    "ROLES",
    "Registry",
    "RegistryEntry",
    "RegistryFile",
    "builtin_registry_path",
    "load_registry",
    "parse_hash",
    "read_registry_file",
    "registry_sources",
    "split_registry_list",
    "validate_registry",
]
