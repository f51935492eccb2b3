"""A local folder, walked recursively (symlinks followed, dot-folders skipped). Symlink loops and
folders reached a second time through a link are skipped and listed in ``problems``, which the
ingest and index summaries show.

Item ids are paths relative to the folder, so moving the whole folder keeps them; the
fingerprint is size + modification time, so an unchanged file is never decoded twice (rclip's
approach). File names that are not valid UTF-8 are kept byte-exact (see ``path_ref``).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote_from_bytes, unquote_to_bytes

from ..records import Item

IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".bmp",
    ".jp2",
    ".j2k",
    ".jpx",
    ".jpf",
}
BYTES_PREFIX = "fsbytes:"


class FolderSource:
    complete = True

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            from ..errors import ConfigError

            raise ConfigError(f"{root} is not a directory.")
        self.spec = f"folder:{path_ref(str(self.root))}"
        self.problems: list[str] = []  # symlink loops and folders reached twice, skipped

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
                metadata={
                    "title": stem.replace("_", " "),
                    "filename": os.path.basename(rel_ref),
                    "folder": os.path.dirname(rel_ref),
                },
                fingerprint=f"{st.st_size}:{st.st_mtime_ns}",
                source=self.spec,
            )

    def _walk(self) -> Iterator[str]:
        seen: dict[tuple[int, int], str] = {}  # (device, inode) of each folder walked -> its path
        stack = [str(self.root)]
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    self._skipped(folder, loop=True)
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                self._skipped(folder, first=seen[key])
                continue
            seen[key] = folder
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
                    elif (
                        entry.is_file(follow_symlinks=True)
                        and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES
                    ):
                        yield entry.path
                except OSError as e:  # a link to itself, or links pointing at each other
                    if e.errno == errno.ELOOP:
                        self._skipped(entry.path, loop=True)
                    continue
            stack.extend(reversed(subfolders))

    def _skipped(self, path: str, *, first: str | None = None, loop: bool = False) -> None:
        """Record a folder not walked: a symlink loop (it leads back to a folder above it, or the
        links never resolve) or a folder already walked under another path (``first``)."""
        shown = self._rel(path)
        try:
            shown += f" -> {path_ref(os.readlink(path))}"
        except OSError:
            pass  # not a link itself: reached through a linked folder above it
        if first is not None and not loop:
            real, parent = os.path.realpath(path), os.path.realpath(os.path.dirname(path))
            loop = parent == real or parent.startswith(real.rstrip(os.sep) + os.sep)
        if loop:
            self.problems.append(f"symlink loop: {shown}")
        else:
            self.problems.append(f"folder reached twice, skipped: {shown} (walked as {self._rel(str(first))})")

    def _rel(self, path: str) -> str:
        return path_ref(os.path.relpath(path, self.root).replace(os.sep, "/"))


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
