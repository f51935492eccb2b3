"""What an indexing run is asked to do, worked out before it starts.

``vitrina index SOURCE [--collection C]`` accepts three kinds of SOURCE: a folder of images (or
a remote source such as ``locgov:``) to add to a collection, a collection's own folder, or a
collection's name; the last two bring that collection up to date without a new source.
``IndexTarget.resolve`` tells them apart by looking at the disk, the same way for the command
line and for Python callers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .store import CollectionPaths, resolve_collection

__all__ = ["BadArgument", "IndexTarget"]


class BadArgument(ConfigError):
    """An argument that cannot mean what was asked; ``argument`` names it as the user gave it
    (``SOURCE``, ``--collection``), so that a front end can point at it."""

    def __init__(self, message: str, argument: str):
        super().__init__(message)
        self.argument = argument

    def __reduce__(self) -> tuple:
        return (type(self), (str(self), self.argument))


@dataclass(frozen=True)
class IndexTarget:
    """The collection an indexing run writes (a name or an absolute path, for ``open_collection``)
    and the source it adds first (None: only embed what is still pending)."""

    collection: str
    source: str | None

    @classmethod
    def resolve(cls, source: str, collection: str | None = None) -> IndexTarget:
        """What ``vitrina index SOURCE [--collection COLLECTION]`` means.

        ``./scans`` (a folder of images): the collection named after the folder, or COLLECTION.
        ``./maps`` (a collection's folder) or ``maps`` (a collection's name): that collection, no
        new source. ``folder:./maps`` reads a collection's folder as images anyway. A remote
        source (``locgov:``, ``iiif:``...) needs COLLECTION. Raises ``BadArgument`` otherwise."""
        from .sources import SOURCES

        scheme = source.partition(":")[0]
        if collection is None and scheme in SOURCES and scheme != "folder":
            raise BadArgument("give --collection NAME for this source", "--collection")
        folder = Path(source).expanduser()
        if not source.startswith("folder:") and CollectionPaths(folder).is_collection():
            # `vitrina index ./maps`: SOURCE is a collection folder, not a folder of images.
            if collection is not None and resolve_collection(collection) != folder.resolve():
                raise BadArgument(f"{source!r} is a collection, not a folder of images: to bring it up to date, run "
                                  f"`vitrina index {source}`; to read its files as images anyway, give folder:{source}.", "SOURCE")  # fmt: skip
            return cls(str(folder.resolve()), None)
        if collection is not None:
            return cls(collection, source)
        if folder.is_dir() or source.startswith("folder:"):
            return cls(Path(source.removeprefix("folder:")).expanduser().resolve().name, source)
        # `vitrina index maps`: no new source
        if not CollectionPaths(resolve_collection(source)).is_collection():
            raise BadArgument(f"{source!r} is neither a folder nor an existing collection.", "SOURCE")
        return cls(source, None)
