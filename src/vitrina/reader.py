"""The reader stage of indexing: items' image references -> model-ready pixels.

Fetching (network, politeness, cache) always runs in threads of this process, which own the one
``Fetcher``. Decoding and resizing run either in those threads (``decode="threads"``: cheap to
start, fine for small jobs and for a CPU the model needs anyway) or in a pool of processes
(``decode="processes"``), so that Pillow never holds the GIL the model thread needs: with a GPU
the model is fast and decoding is the bottleneck. Processes hand back uint8 pixels at the model's
input size (a quarter of the float32 bytes); the embedder normalises them on its device.

The decoded-bytes budget (``images.MAX_DECODE_BYTES``) is shared by all decoding processes, and a
process that dies (killed for memory on a hostile file) costs the images in flight a retry, not
the run: the pool is restarted, and an image in flight at three deaths fails as
``decoder_crashed``, retried by the next run.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from .embedding import Embedder, PreparedEmbedder, device_of
from .errors import ImageError
from .faults import fault_once
from .http import Blocked
from .images import (
    decode_fetched,
    fetch_image,
    hold_decoded,
    read_image,
    shared_decode_budget,
    use_shared_decode_budget,
)

DECODE_MODES = ("auto", "threads", "processes")
CRASH_RETRIES = 3


def default_batch_size(embedder: Embedder) -> int:
    """Images per model call: big enough to fill a GPU, small enough to commit often on a CPU."""
    return 256 if device_of(embedder).startswith("cuda") else 32


def default_workers(embedder: Embedder) -> int:
    """Decoders: every core but one feeds a GPU; on a CPU the model needs the cores itself."""
    if device_of(embedder) == "cpu":
        return 2
    return max(2, min(32, (os.cpu_count() or 2) - 1))


def choose_decode(mode: str, embedder: Embedder, pending: int, workers: int, batch_size: int) -> str:
    """'auto': processes when the model runs on an accelerator and the job is big enough to repay
    starting them (the model then waits on decoding); threads otherwise (on a CPU the model uses
    every core, and processes only add copies: docs/benchmarks.md)."""
    if mode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, not {mode!r}")
    if mode != "auto":
        return mode
    big = pending >= 4 * batch_size and workers > 1
    return "processes" if big and device_of(embedder) != "cpu" else "threads"


class Reader:
    """``read(row)`` -> (pixels or None, (reason, detail) or None, decode seconds), thread-safe.
    ``row`` has "image" (the stored reference). Use as a context manager; ``pool`` runs reads.
    Without ``fetcher``, remote images go through one of its own, closed with it."""

    def __init__(self, embedder: Embedder, *, mode: str = "threads", workers: int = 2, fetcher: Any = None,
                 max_pixels: int | None = None, max_decode_bytes: int | None = None):  # fmt: skip
        self.min_side = embedder.min_side
        self.prep = embedder.prep if isinstance(embedder, PreparedEmbedder) else None
        self.preprocess = self.prep.prepare if self.prep is not None else embedder.preprocess
        self.fetcher, self._lock = fetcher, threading.Lock()
        self._own_fetcher: Any = None
        self.limits = {"max_pixels": max_pixels, "max_decode_bytes": max_decode_bytes}
        # Processes need a picklable recipe (``prep``); other embedders decode in threads.
        self.decoders = _Decoders(workers) if mode == "processes" and self.prep is not None else None
        self.mode = "processes" if self.decoders else "threads"
        # With processes, extra threads keep them busy while some threads wait on the network.
        threads = 2 * workers if self.decoders else workers
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="vitrina-read")

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(wait=exc_type is None)

    def close(self, *, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=True)
        if self.decoders:
            self.decoders.close(wait=wait)
        if self._own_fetcher is not None:
            self._own_fetcher.close()

    def _fetcher_for(self, ref: str) -> Any:
        if not ref.startswith(("http://", "https://")):
            return None
        with self._lock:
            if self.fetcher is None:
                from .http import Fetcher

                self.fetcher = self._own_fetcher = Fetcher()
        return self.fetcher

    @property
    def crashes(self) -> int:
        return self.decoders.crashes if self.decoders else 0

    def read(self, row: Any) -> tuple[np.ndarray | None, tuple[str, str] | None, float]:
        t0 = time.perf_counter()
        ref = row["image"]
        try:
            fetcher = self._fetcher_for(ref)
            if self.decoders is not None:
                if fetcher is not None:
                    data, url, crop = fetch_image(ref, fetcher, self.min_side)
                    return self._in_process(_decode_fetched, data, url, crop)
                return self._in_process(_decode_file, ref)
            # The image's memory stays reserved until it is resized, so concurrent decodes stay
            # within images.MAX_DECODE_BYTES together.
            with hold_decoded():
                image = read_image(ref, fetcher=fetcher, min_side=self.min_side, **self.limits)
                pixels = self.preprocess(image)
                del image
            return pixels, None, time.perf_counter() - t0
        except Blocked as e:
            return None, ("blocked", str(e)), time.perf_counter() - t0
        except ImageError as e:
            return None, (e.reason, str(e)), time.perf_counter() - t0
        except Exception as e:  # a decoder bug must cost one item, not the run
            return None, ("unreadable_image", f"{ref}: {type(e).__name__}: {e}"), time.perf_counter() - t0

    def _in_process(self, fn: Any, *args: Any) -> tuple[np.ndarray, None, float]:
        assert self.decoders is not None
        pixels, seconds = self.decoders.run(fn, *args, self.prep, self.min_side, self.limits)
        return pixels, None, seconds


class _Decoders:
    """A process pool that survives its processes dying."""

    def __init__(self, processes: int):
        self.processes = max(1, processes)
        self.crashes = 0
        self._lock = threading.Lock()
        self._closed = False
        self.pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # spawn, not fork: forking a process whose other threads run torch can deadlock the child.
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(
            self.processes, mp_context=context, initializer=_decoder_started, initargs=shared_decode_budget(context)
        )

    def run(self, fn: Any, *args: Any) -> Any:
        for _ in range(CRASH_RETRIES):
            pool = self.pool
            try:
                return pool.submit(fn, *args).result()
            except BrokenProcessPool:
                with self._lock:
                    if self.pool is pool and not self._closed:  # the first thread to notice restarts it
                        self.crashes += 1
                        pool.shutdown(wait=False, cancel_futures=True)
                        self.pool = self._start()
            except RuntimeError:  # submitted while another thread was restarting the pool
                if self._closed:
                    raise
                time.sleep(0.01)
        raise ImageError(
            "decoder_crashed",
            f"a decoding process died {CRASH_RETRIES} times while this image was in flight (out of memory?); the next run retries it",
        )

    def close(self, *, wait: bool = True) -> None:
        with self._lock:
            self._closed = True
            self.pool.shutdown(wait=wait, cancel_futures=True)


def _decoder_started(in_use: Any, cond: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    use_shared_decode_budget(in_use, cond)


def _decode_file(ref: str, prep: Any, min_side: int | None, limits: dict[str, Any]) -> tuple[np.ndarray, float]:
    fault_once("decode")
    return _decoded(ref, lambda: read_image(ref, min_side=min_side, **limits), prep)


def _decode_fetched(
    data: bytes, url: str, crop: Any, prep: Any, min_side: int | None, limits: dict[str, Any]
) -> tuple[np.ndarray, float]:
    return _decoded(url, lambda: decode_fetched(data, url, crop, min_side=min_side, **limits), prep)


def _decoded(name: str, decode: Any, prep: Any) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    try:
        with hold_decoded():
            pixels = prep.prepare(decode())
    except ImageError:
        raise
    except Exception as e:  # only ImageError goes back: an exception that cannot be unpickled would break the pool
        raise ImageError("unreadable_image", f"{name}: {type(e).__name__}: {e}") from None
    return pixels, time.perf_counter() - t0
