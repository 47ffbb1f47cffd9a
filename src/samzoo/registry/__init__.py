"""Registry of the models samzoo knows by name (see :mod:`samzoo.registry.registry`)."""

from .registry import (
    ARCHITECTURES,
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
