"""Crash-test hooks: named points where a test can kill the process as SIGKILL would.

The protocol is the ``VITRINA_FAULT`` environment variable, read at each point (tests set it for
a subprocess):

- ``NAME`` or ``NAME:N``: ``fault_point(NAME)`` exits with status 137 the N-th time (default the
  first) this process reaches it.
- ``NAME:/path/arm``: ``fault_once(NAME)`` exits the process that reaches it while the file
  ``arm`` exists, deleting it first, so exactly one of many processes (Ray workers) dies.

Unset, a point costs one environment lookup.
"""

from __future__ import annotations

import os

__all__ = ["fault_once", "fault_point"]

_REACHED: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Crash-test hook: VITRINA_FAULT=after_vector_write:3 kills the process (as SIGKILL would)
    the third time this point is reached."""
    spec = os.environ.get("VITRINA_FAULT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point == name:
        _REACHED[name] = _REACHED.get(name, 0) + 1
        if _REACHED[name] >= int(nth or 1):
            os._exit(137)


def fault_once(name: str) -> None:
    """Crash-test hook for many processes: VITRINA_FAULT=NAME:/path/arm kills the process that
    reaches point NAME while the file ``arm`` exists, deleting it first, so exactly one dies."""
    point, _, arm = os.environ.get("VITRINA_FAULT", "").partition(":")
    if point == name and arm:
        try:
            os.unlink(arm)
        except FileNotFoundError:
            return
        os._exit(137)
