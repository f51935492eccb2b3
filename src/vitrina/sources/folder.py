"""A local folder, walked recursively (symlinks followed, loops detected, dot-folders skipped).

Item ids are paths relative to the folder, so moving the whole folder keeps them; the
fingerprint is size + modification time, so an unchanged file is never decoded twice (rclip's
approach). File names that are not valid UTF-8 are kept byte-exact (see ``path_ref``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote_from_bytes, unquote_to_bytes

from ..records import Item

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".jp2", ".j2k", ".jpx", ".jpf"}
BYTES_PREFIX = "fsbytes:"


class FolderSource:
    complete = True

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            from ..errors import ConfigError

            raise ConfigError(f"{root} is not a directory.")
        self.spec = f"folder:{path_ref(str(self.root))}"
        self.skipped_loops: list[str] = []

    def pages(self, cursor: str | None = None) -> Iterator[tuple[list[Item], str | None]]:
        yield list(self.items()), None

    def items(self) -> Iterator[Item]:
        for path in self._walk():
            try:
                st = os.stat(path)
            except OSError:
                continue  # vanished or dangling symlink: not an item
            rel = os.path.relpath(path, self.root).replace(os.sep, "/")
            rel_ref = path_ref(rel)
            stem = os.path.splitext(os.path.basename(rel_ref))[0]
            yield Item(
                id=rel_ref,
                image=path_ref(path),
                metadata={"title": stem.replace("_", " "), "filename": os.path.basename(rel_ref), "folder": os.path.dirname(rel_ref)},
                fingerprint=f"{st.st_size}:{st.st_mtime_ns}",
                source=self.spec,
            )

    def _walk(self) -> Iterator[str]:
        seen: set[tuple[int, int]] = set()
        stack = [str(self.root)]
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                self.skipped_loops.append(folder)
                continue
            seen.add((st.st_dev, st.st_ino))
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            subfolders = []
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=True):
                        subfolders.append(entry.path)
                    elif entry.is_file(follow_symlinks=True) and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                        yield entry.path
                except OSError:
                    continue
            stack.extend(reversed(subfolders))


def path_ref(path: str) -> str:
    """A file path as storable text: itself, or for names that are not valid UTF-8, their bytes quoted."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return BYTES_PREFIX + quote_from_bytes(os.fsencode(path), safe="/")


def ref_path(ref: str) -> str:
    """The inverse of ``path_ref``: a path ``open`` accepts (surrogate-escaped if need be)."""
    if ref.startswith(BYTES_PREFIX):
        return os.fsdecode(unquote_to_bytes(ref[len(BYTES_PREFIX) :]))
    return ref
