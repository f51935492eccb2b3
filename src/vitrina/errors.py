"""One exception tree for everything vitrina raises on purpose.

    VitrinaError
    ├── ConfigError          bad argument, unknown backend prefix, missing extra
    ├── ModelError           a model cannot be loaded or cannot do what was asked
    │   ├── ModelUnavailable     weights not found / no network to fetch them
    │   └── ModalityError        e.g. a text query to an image-only (ViT) model
    ├── StoreError           the collection on disk
    │   ├── CollectionNotFound
    │   ├── NoEmbeddings         the collection exists but nothing is embedded yet
    │   ├── NoSuchSpace          no embedding space of that name
    │   ├── StoreLocked          another process is writing
    │   ├── StoreCorrupt         a file is damaged; the message names it and the repair
    │   ├── DiskFull             the collection's disk is full: free space, run again (it resumes)
    │   └── SpaceMismatch        vectors from one model compared with another's
    ├── QueryError           a query that cannot be run as given
    ├── SourceError          a manifest, XML or JSON document that cannot be read
    ├── Blocked              a server told us to stop (429/403 ban): the run stops, resumable
    └── ImageError           an image that cannot be used; ``reason`` is a stable code

Every message says what failed, for what, and what to do next.
"""

from __future__ import annotations


class VitrinaError(Exception):
    """Base class of every error vitrina raises deliberately."""


class ConfigError(VitrinaError):
    pass


class ModelError(VitrinaError):
    pass


class ModelUnavailable(ModelError):
    pass


class ModalityError(ModelError):
    pass


class StoreError(VitrinaError):
    pass


class CollectionNotFound(StoreError):
    pass


class StoreLocked(StoreError):
    pass


class StoreCorrupt(StoreError):
    pass


class DiskFull(StoreError):
    """No space left on the collection's disk; nothing committed is lost, a re-run resumes."""


class NoEmbeddings(StoreError):
    pass


class NoSuchSpace(StoreError):
    pass


class SpaceMismatch(StoreError):
    pass


class QueryError(VitrinaError):
    pass


class WorkTimeout(QueryError):
    """A query's database work ran past its deadline and was stopped (store/text.py, ``budget``)."""


class WorkCancelled(QueryError):
    """A query's database work was stopped because its caller went away (a client disconnected)."""


class SourceError(VitrinaError):
    """A manifest, ALTO/XML or JSON document that cannot be used; ``reason`` is a stable code
    (bad_manifest, bad_xml, bad_json)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple:
        return (type(self), (self.reason, str(self)))


class Blocked(VitrinaError):
    """A host answered 429 and must not be asked again for ``retry_after`` seconds."""

    def __init__(self, host: str, retry_after: float):
        super().__init__(
            f"{host} answered 429 Too Many Requests: stopped to avoid a ban. Run the same command again after {retry_after / 60:.0f} minutes; it resumes where it stopped."
        )
        self.host, self.retry_after = host, retry_after


class ImageError(VitrinaError):
    """An image that cannot be embedded. ``reason`` is one of ``images.REASONS``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple:  # crosses back from decoding processes intact
        return (type(self), (self.reason, str(self)))
