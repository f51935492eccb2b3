"""Sources yield ``Item``s: a stable id, where the image is, metadata and context text.

Specs: ``folder:DIR`` (or just a directory path). More sources (URL lists, IIIF, loc.gov,
ALTO) plug in here with the same shape: ``open_source(spec) -> Source``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Protocol

from ..errors import ConfigError
from ..records import Item

SOURCES = {"folder": "a directory of image files, walked recursively"}


class Source(Protocol):
    spec: str  # canonical, stored with every item it yields

    def items(self) -> Iterator[Item]: ...

    @property
    def complete(self) -> bool:
        """True when ``items`` lists the whole source, so items it no longer yields were removed."""
        ...


def open_source(spec: str) -> Source:
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in SOURCES:
        kind, target = prefix, rest
    elif os.path.isdir(os.path.expanduser(spec)):
        kind, target = "folder", spec
    else:
        known = ", ".join(f"{k}: ({v})" for k, v in SOURCES.items())
        raise ConfigError(f"{spec!r} is not a directory or a known source. Known sources: {known}.")
    if kind == "folder":
        from .folder import FolderSource

        return FolderSource(target)
    raise ConfigError(f"Unknown source {spec!r}")  # pragma: no cover
