"""Where a collection lives, and the one place that knows its folder layout.

    <collection>/
      collection.sqlite       items, spaces, which vector row belongs to which item (+ -wal, -shm)
      writer.lock             held (flock) by the one process allowed to write
      spaces/<space>.<n>.f32  vectors (see vectors.py); a re-embed or a compaction writes a new
                              file and switches the space to it in one transaction
      spaces/<space>.ann      derived: the approximate index (index/ann.py)
      spaces/<space>.map      derived: the 2-D map (layout.py)
      shards/                 vectors written by workers, waiting to be merged (shards.py)
      cache/http/             downloaded images (http.py)
      thumbs/                 thumbnails the service made
      tiles/                  deep-zoom tiles the service cut for the item page's viewer
      classifiers/<name>.json trained probes (classify.py)

Every module asks ``CollectionPaths`` for these names rather than joining them itself, so a
change of layout is made here once.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import CollectionNotFound

__all__ = ["NAME_RE", "CollectionPaths", "default_home", "resolve_collection"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
DB_NAME = "collection.sqlite"


@dataclass(frozen=True)
class CollectionPaths:
    """The files and folders of the collection at ``root`` (nothing is created or checked)."""

    root: Path

    @property
    def db(self) -> Path:
        return self.root / DB_NAME

    @property
    def db_files(self) -> list[Path]:
        """The database with its WAL and shared-memory files, those that exist."""
        return sorted(self.root.glob(f"{DB_NAME}*"))

    @property
    def writer_lock(self) -> Path:
        return self.root / "writer.lock"

    @property
    def spaces_dir(self) -> Path:
        return self.root / "spaces"

    @property
    def shards_dir(self) -> Path:
        return self.root / "shards"

    @property
    def http_cache(self) -> Path:
        return self.root / "cache" / "http"

    @property
    def thumbs_dir(self) -> Path:
        return self.root / "thumbs"

    @property
    def tiles_dir(self) -> Path:
        return self.root / "tiles"

    @property
    def classifiers_dir(self) -> Path:
        return self.root / "classifiers"

    def vector_file(self, file: str) -> Path:
        """A vector file by the name the space records (e.g. ``clip.18c2f0e1.f32``)."""
        return self.spaces_dir / file

    def ann(self, space: str) -> Path:
        return self.spaces_dir / f"{space}.ann"

    def map(self, space: str) -> Path:
        return self.spaces_dir / f"{space}.map"

    def classifier(self, name: str) -> Path:
        return self.classifiers_dir / f"{name}.json"

    def is_collection(self) -> bool:
        """A collection folder is one with the database in it."""
        return self.db.is_file()


def default_home() -> Path:
    """Where named collections live: $VITRINA_HOME, else $XDG_DATA_HOME/vitrina, else ~/.local/share/vitrina."""
    if os.environ.get("VITRINA_HOME"):
        return Path(os.environ["VITRINA_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "vitrina"


def resolve_collection(name_or_path: str | os.PathLike[str], home: Path | None = None) -> Path:
    """A bare name ('maps') lives under the home folder; anything with a slash is a path."""
    text = os.fspath(name_or_path)
    if os.sep in text or "/" in text or text.startswith("."):
        return Path(text).expanduser().resolve()
    if not NAME_RE.match(text):
        raise CollectionNotFound(
            f"{text!r} is not a valid collection name: use letters, digits, '.', '_' and '-', or give a path."
        )
    return (home or default_home()) / text
