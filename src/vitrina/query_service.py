"""The query service: a small local process that keeps a collection and its model loaded, so that a
repeated ``vitrina search COLL "text"`` answers in a fraction of a second instead of loading the
model again (seconds) every time.

The command line starts it on first use and reuses it; it listens on a Unix socket in a runtime
folder only the user can enter (``$VITRINA_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/vitrina``, else
``/tmp/vitrina-UID``; mode 0700, checked before every use), one per collection, index choice,
environment and vitrina build; it refuses connections from other users (``SO_PEERCRED``), answers
one query at a time, and stops after ``$VITRINA_DAEMON_IDLE`` seconds (600) without a query.
Any trouble (no Unix sockets, a folder someone else owns, a service that does not start or dies)
and the command answers in-process, as it would without it; ``--no-daemon`` or
``VITRINA_NO_DAEMON=1`` always answers in-process.

Both paths make the same payload with ``answer`` and the command prints it with one renderer, so
the output is the same whichever answered. Wire format: a 4-byte big-endian length, then UTF-8
JSON, one request and one reply per connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._version import __version__
from .errors import DiskFull, VitrinaError

PROTOCOL = 1
IDLE_SECONDS = 600.0  # default; $VITRINA_DAEMON_IDLE
START_SECONDS = 20.0  # for a started service to listen (it imports little before it does)
ANSWER_SECONDS = 900.0  # for one answer: the first loads the collection and the model
MAX_REQUEST = 1 << 20
MAX_REPLY = 256 << 20
ENV_PREFIXES = ("VITRINA_", "HF_", "TRANSFORMERS_", "TORCH", "CUDA_", "OMP_", "MKL_", "XDG_DATA_HOME", "PYTORCH_")
ENV_IGNORED = ("VITRINA_NO_DAEMON", "VITRINA_DAEMON_IDLE", "VITRINA_RUNTIME_DIR")


# --- the payload, made the same way in-process and in the service -------------------------------


def answer(coll: Any, req: dict[str, Any]) -> dict[str, Any]:
    """Run one search request on an open collection: hits as dicts (with exact scores), how many
    were considered, and the provenance when the output needs it (--json, --csv)."""
    common = req["common"]
    if req.get("model"):
        one_thread()
    hits = coll.search(list(req["terms"]), list(req["images"]), where=tuple(req["where"]), space=req["space"], **common)
    about = None
    if req.get("about"):
        from .citable import provenance

        about = provenance(
            coll,
            req["space"],
            {"terms": list(req["terms"]), "images": list(req["images"]), "where": list(req["where"]), **common},
        )
    return {
        "hits": hits.to_list(),
        "scores": [h.score for h in hits],
        "considered": hits.total_considered,
        "about": about,
        "keyword_capped": hits.keyword_capped,
    }


def one_thread() -> None:
    """Embed a query on one thread: one short text or image gains little from more, and on a busy
    machine torch's threads wait for each other (measured: 0.03 s on one thread against 1.5 s on
    two at load 14 on 2 cores, the mini text tower)."""
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(1)


def error_payload(e: VitrinaError) -> dict[str, Any]:
    return {"error": str(e), "exit": 75 if isinstance(e, DiskFull) else 1}


# --- where services live ---------------------------------------------------------------------------


def disabled() -> bool:
    return os.environ.get("VITRINA_NO_DAEMON", "").strip().lower() not in ("", "0", "false", "no")


def runtime_dir() -> Path | None:
    """The user's private folder for sockets, made 0700 if missing; None when it is not safe
    (owned by someone else, open to others, a symlink) or this system has no Unix sockets."""
    if not hasattr(socket, "AF_UNIX") or not hasattr(os, "getuid"):
        return None
    base = os.environ.get("VITRINA_RUNTIME_DIR")
    if base:
        path = Path(base)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "vitrina"
    else:
        path = Path(tempfile.gettempdir()) / f"vitrina-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return path


def _code_stamp() -> str:
    """Changes when vitrina's code does, so that a service never answers with older code."""
    here = Path(__file__).parent
    newest = 0
    for root, _dirs, files in os.walk(here):
        for f in files:
            if f.endswith(".py"):
                with contextlib.suppress(OSError):
                    newest = max(newest, os.stat(os.path.join(root, f)).st_mtime_ns)
    return f"{__version__}:{here}:{newest}:{sys.executable}"


def collection_key(name_or_path: str) -> str:
    """What ``store.resolve_collection`` makes of a collection argument, without importing the
    store (numpy and all: a third of the command's time): a path made absolute, or a bare name
    (whose folder depends on $VITRINA_HOME / $XDG_DATA_HOME, which are part of the key)."""
    if os.sep in name_or_path or "/" in name_or_path or name_or_path.startswith("."):
        return os.path.realpath(os.path.expanduser(name_or_path))
    return name_or_path


def service_key(collection: str, index: str) -> str:
    env = sorted(
        (k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIXES) and k not in ENV_IGNORED
    )  # the model, the cache folders, the threads: what can change an answer
    blob = json.dumps([PROTOCOL, collection_key(collection), index, env, _code_stamp()])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def idle_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get("VITRINA_DAEMON_IDLE", IDLE_SECONDS)))
    except ValueError:
        return IDLE_SECONDS


# --- the wire --------------------------------------------------------------------------------------


def _send(sock: socket.socket, data: dict[str, Any]) -> None:
    blob = json.dumps(data, ensure_ascii=False).encode()
    sock.sendall(struct.pack(">I", len(blob)) + blob)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionError("the query service closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket, limit: int) -> dict[str, Any]:
    (n,) = struct.unpack(">I", _recv_exact(sock, 4))
    if n > limit:
        raise ConnectionError(f"message of {n} bytes is over the limit of {limit}")
    data = json.loads(_recv_exact(sock, n))
    if not isinstance(data, dict):
        raise ConnectionError("malformed message")
    return data


# --- the client ------------------------------------------------------------------------------------


def _owned_socket(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISSOCK(st.st_mode) and st.st_uid == os.getuid()


def _connect(path: Path, timeout: float) -> socket.socket | None:
    if not _owned_socket(path):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock


def _spawn(sock_path: Path, detach: bool) -> subprocess.Popen[bytes]:
    """Start the service (``detach``: through a launcher that returns once it listens, so the
    service is nobody's child and leaves no zombie or open handle behind in the caller)."""
    package_root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    log = open(sock_path.with_suffix(".log"), "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "vitrina.query_service", *(["--detach"] if detach else []), str(sock_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            cwd="/",
            start_new_session=True,  # not killed with the terminal's process group (Ctrl-C on the command)
            close_fds=True,
        )
    finally:
        log.close()


def _launch(sock_path: Path) -> bool:
    """The launcher's part: start the service, wait until it listens (True) or dies (False)."""
    child = _spawn(sock_path, detach=False)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if _owned_socket(sock_path):
            return True
        if child.poll() is not None:
            return _owned_socket(sock_path)  # another service won the race, or this one failed (see its log)
        time.sleep(0.01)
    return False


def ask(req: dict[str, Any]) -> dict[str, Any] | None:
    """The service's payload for ``req``, starting the service when none runs; None when it cannot
    answer (then answer in-process)."""
    folder = runtime_dir()
    if folder is None:
        return None
    sock_path = folder / f"q-{service_key(req['collection'], req['index'])}.sock"
    sock = _connect(sock_path, ANSWER_SECONDS)
    if sock is None:
        try:
            launcher = _spawn(sock_path, detach=True)
            started = launcher.wait(START_SECONDS + 5) == 0
        except (OSError, subprocess.TimeoutExpired):
            return None
        sock = _connect(sock_path, ANSWER_SECONDS) if started else None
        if sock is None:
            return None
    try:
        with sock:
            _send(sock, {**req, "protocol": PROTOCOL, "cwd": os.getcwd()})  # the collection as given, read from cwd
            reply = _recv(sock, MAX_REPLY)
    except (OSError, ValueError, ConnectionError):
        return None
    if reply.get("protocol") != PROTOCOL or "fault" in reply:
        return None  # an unexpected failure in the service: in-process says what it is
    return reply


def running(folder: Path | None = None) -> list[Path]:
    """Sockets of the services in the runtime folder."""
    folder = folder or runtime_dir()
    return sorted(p for p in folder.glob("q-*.sock") if _owned_socket(p)) if folder else []


def describe(folder: Path | None = None) -> list[dict[str, Any]]:
    """What each running service holds: its process, the collections it keeps open (as the caller
    named them, with the index choice), when it started and was last asked, and when it will stop."""
    out = []
    for path in running(folder):
        reply: dict[str, Any] = {}
        sock = _connect(path, 5.0)
        if sock is not None:
            with sock, contextlib.suppress(OSError, ValueError, ConnectionError):
                _send(sock, {"op": "status", "protocol": PROTOCOL})
                reply = _recv(sock, MAX_REQUEST)
        if reply.get("protocol") != PROTOCOL:
            reply = {"answering": False}  # busy with a long first load, or from another vitrina build
        reply.pop("protocol", None)
        out.append({"socket": str(path), **reply})
    return out


def stop_all(folder: Path | None = None, timeout: float = 10.0) -> int:
    """Ask every service in the runtime folder to stop and wait for their sockets to go; the number asked."""
    socks = running(folder)
    for path in socks:
        sock = _connect(path, 5.0)
        if sock is not None:
            with sock, contextlib.suppress(OSError, ValueError, ConnectionError):
                _send(sock, {"op": "stop", "protocol": PROTOCOL})
                _recv(sock, MAX_REQUEST)
    deadline = time.monotonic() + timeout
    # A service removes its socket, then its lock file: wait for both, so that a caller who
    # checks the folder (or starts a new service) right after finds it clean.
    while any(_owned_socket(p) or p.with_suffix(".lock").exists() for p in socks) and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(socks)


# --- the service -----------------------------------------------------------------------------------


def _peer_uid(conn: socket.socket) -> int | None:
    if not hasattr(socket, "SO_PEERCRED"):
        return os.getuid()  # no peer credentials here: the 0700 folder is the guard
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class Service:
    """One collection (opened on the first query, kept open) answering one request at a time."""

    def __init__(self, sock_path: Path, idle: float):
        self.sock_path = sock_path
        self.idle = idle
        self.collections: dict[tuple[str, str], Any] = {}
        self.started = self.last = time.time()
        self.answered = 0

    def status(self) -> dict[str, Any]:
        return {
            "answering": True,
            "pid": os.getpid(),
            "version": __version__,
            "collections": [{"collection": c, "index": i} for c, i in self.collections],
            "started": round(self.started, 3),
            "last_query": round(self.last, 3),
            "queries": self.answered,
            "stops_after_idle_s": self.idle,
        }

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        if req.get("protocol") != PROTOCOL:
            return {"protocol": PROTOCOL, "fault": "protocol"}
        if req.get("op") == "stop":
            return {"protocol": PROTOCOL, "stopping": True}
        if req.get("op") == "status":
            return {"protocol": PROTOCOL, **self.status()}
        self.last = time.time()
        self.answered += 1
        try:
            os.chdir(req["cwd"])  # relative --image paths mean what they mean to the caller
            key = (req["collection"], req["index"])
            if key not in self.collections:
                from .collection import open_collection

                self.collections[key] = open_collection(req["collection"], index=req["index"])
            return {"protocol": PROTOCOL, **answer(self.collections[key], req)}
        except VitrinaError as e:
            # A collection that does not open (a typo, say) leaves no service behind.
            return {"protocol": PROTOCOL, **error_payload(e), **({} if self.collections else {"stopping": True})}
        except Exception as e:  # noqa: BLE001 - the caller answers in-process and shows it
            print(f"query failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            return {"protocol": PROTOCOL, "fault": f"{type(e).__name__}: {e}"}
        finally:
            os.chdir("/")

    @contextlib.contextmanager
    def listening(self) -> Iterator[socket.socket | None]:
        """The bound socket, or None when another service holds this one's lock."""
        import fcntl

        lock = open(self.sock_path.with_suffix(".lock"), "a+")  # noqa: SIM115 - held for the service's life
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield None  # another one is starting or running: the client reaches that one
                return
            lock.seek(0)
            lock.truncate()
            lock.write(str(os.getpid()))
            lock.flush()
            with contextlib.suppress(FileNotFoundError):
                self.sock_path.unlink()  # a dead service's socket
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)
            try:
                server.bind(str(self.sock_path))
            finally:
                os.umask(old)
            server.listen(16)
            inode = os.stat(self.sock_path).st_ino
            try:
                yield server
            finally:
                server.close()
                with contextlib.suppress(OSError):
                    if os.stat(self.sock_path).st_ino == inode:
                        self.sock_path.unlink()
                log = self.sock_path.with_suffix(".log")
                with contextlib.suppress(OSError):
                    if log.stat().st_size == 0:
                        log.unlink()  # kept when it says something went wrong
                with contextlib.suppress(OSError):
                    self.sock_path.with_suffix(".lock").unlink()
        finally:
            lock.close()

    def run(self) -> None:
        os.chdir("/")
        with self.listening() as server:
            if server is None:
                return
            server.settimeout(min(5.0, self.idle))
            last = time.monotonic()
            while time.monotonic() - last < self.idle:
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    if not _owned_socket(self.sock_path):
                        return  # our socket was removed: nobody can reach us
                    continue
                asked = self.answered
                with conn:
                    if self.serve_one(conn):
                        return
                if self.answered != asked:
                    last = time.monotonic()  # a query keeps the service alive; a status look does not

    def serve_one(self, conn: socket.socket) -> bool:
        """Answer one connection; True when asked to stop."""
        conn.settimeout(30.0)
        try:
            if _peer_uid(conn) != os.getuid():
                return False
            req = _recv(conn, MAX_REQUEST)
            reply = self.handle(req)
            conn.settimeout(60.0)
            _send(conn, reply)
        except (OSError, ValueError, ConnectionError) as e:
            print(f"connection dropped: {e}", file=sys.stderr, flush=True)
            return False
        return bool(reply.get("stopping"))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--detach":
        sys.exit(0 if _launch(Path(args[1])) else 1)
    if len(args) != 1:
        sys.exit("usage: python -m vitrina.query_service [--detach] SOCKET_PATH  (started by `vitrina search`)")
    Service(Path(args[0]), idle_seconds()).run()


if __name__ == "__main__":
    main()
