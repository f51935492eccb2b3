"""The one outbound HTTP client: address guard, limits, politeness, retries and a disk cache.

Every hop (redirects are followed by hand) must be http(s), carry no credentials, and resolve
only to globally routable addresses; the address actually connected to is checked again before
the body is read. IPv4-mapped, 6to4 and NAT64 IPv6 forms are unwrapped first, because Python's
``is_global`` calls some of them global. ``allow_private=True`` (or VITRINA_ALLOW_PRIVATE_URLS=1)
lifts the guard for a trusted local deployment and for tests on loopback.

``Fetcher`` adds what a crawler needs: a per-host minimum interval between requests and a bound on
concurrent requests per host, retries with full-jitter backoff that honour ``Retry-After``, a
policy of stopping at the first 429 for hosts that ban (loc.gov), and an on-disk cache so a
re-run downloads nothing it already has.

Offline is not forbidden: a name that does not resolve is a transient ``fetch_failed`` (retried by
the next run), never ``url_rejected``. DNS answers (and failures) are cached for the fetcher's
life, one run, so an unreachable resolver costs its timeout once per host, not once per item; and
when the machine is offline (the resolver does not answer, no route to the internet, or the first
hosts all fail to resolve) the fetcher raises ``Offline`` once: the run stops with one message and
its items stay pending.

Every request has a wall-clock deadline over connect, headers and body (httpx's timeouts are per
read, so a server sending a byte a second could hold a thread for hours): the network backend
caps each connect, read and write at the time left, so neither a drip nor a stall outlasts it.
One pooled transport (connections, one TLS context) serves the whole process; it is built on the
first request, after the URL passed the checks, so a refused URL costs no client or TLS context.
"""

from __future__ import annotations

import email.utils
import hashlib
import ipaddress
import json
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from ._version import __version__
from .diskcache import cache_put
from .errors import Blocked, ImageError, VitrinaError  # Blocked: re-exported for the sources

USER_AGENT = f"vitrina/{__version__} (+https://github.com/vitrina-search/vitrina; heritage image search)"
MAX_BYTES = 50 * 1024 * 1024
MAX_REDIRECTS = 5
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_6TO4 = ipaddress.ip_network("2002::/16")
# Hosts that ban a client for up to an hour when it exceeds their limits: stop at the first 429.
STOP_ON_429 = ("loc.gov", "www.loc.gov", "tile.loc.gov")
# Hosts with published rate limits, requests per second: the loc.gov API allows about 20 a minute
# for collections (1/s here) and its image server bans faster clients for an hour.
HOST_RATES = {"www.loc.gov": 1.0, "loc.gov": 1.0, "tile.loc.gov": 0.5}


_local = threading.local()  # .deadline: time.monotonic() by which this thread's request must end


@contextmanager
def _until(deadline: float) -> Iterator[float]:
    outer = getattr(_local, "deadline", None)
    _local.deadline = deadline
    try:
        yield deadline
    finally:
        _local.deadline = outer


def _capped(timeout: float | None, late: type[Exception]) -> float | None:
    """``timeout`` shortened to the time left before this thread's deadline."""
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise late("deadline passed")  # a timeout of 0 would make the socket non-blocking instead
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream):
        self.inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, _capped(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, _capped(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self.inner.start_tls(ssl_context, server_hostname, _capped(timeout, httpcore.ConnectTimeout))
        )

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)  # server_addr: the post-connect address check


class _DeadlineBackend(httpcore.SyncBackend):
    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            super().connect_tcp(host, port, _capped(timeout, httpcore.ConnectTimeout), local_address, socket_options)
        )


_transport: httpx.HTTPTransport | None = None
_transport_lock = threading.Lock()


def _send(url: httpx.URL, accept: str, timeout: httpx.Timeout, method: str = "GET") -> closing[httpx.Response]:
    """GET through the process's one pooled transport, built on first use. Not through an
    ``httpx.Client``: even with follow_redirects=False it parses a redirect's Location itself and
    raises on data:, mailto: or a malformed one before the caller can refuse it (redirects are
    followed by hand, each hop checked). No environment proxies either: through a proxy the
    post-connect address check would only ever see the proxy."""
    global _transport
    with _transport_lock:
        if _transport is None:
            _transport = httpx.HTTPTransport()
            # Allowed private reach: httpx builds its httpcore pool itself and takes no network backend.
            _transport._pool._network_backend = _DeadlineBackend()  # noqa: SLF001
    headers = {"User-Agent": USER_AGENT, "Accept": accept, "Accept-Encoding": "identity"}
    return closing(
        _transport.handle_request(
            httpx.Request(method, url, headers=headers, extensions={"timeout": timeout.as_dict()})
        )
    )


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip in _6TO4:
            ip = ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)
        elif int(ip) >> 32 == 0:  # deprecated IPv4-compatible ::a.b.c.d
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return False  # carrier-grade NAT
    return ip.is_global and not ip.is_multicast


ALLOW_PRIVATE_HINT = (
    "An administrator can allow private and loopback addresses on a trusted network with "
    "VITRINA_ALLOW_PRIVATE_URLS=1 (or `vitrina serve --allow-private-urls`)."
)


def _rejected(url: str, private: bool = False) -> ImageError:
    if private:
        return ImageError("url_rejected", f"URL {url!r} was rejected: its host is not a public address (private, loopback, "
                                          f"link-local, or it does not resolve): only http(s) URLs of public hosts can be fetched. {ALLOW_PRIVATE_HINT}")  # fmt: skip
    return ImageError(
        "url_rejected",
        f"URL {url!r} was rejected: only http(s) URLs of public hosts, without user names, can be fetched.",
    )


class Offline(Blocked):
    """No network (the resolver does not answer, or there is no route): the run stops, its items stay pending."""

    def __init__(self, host: str, why: str):
        VitrinaError.__init__(
            self,
            f"Offline: {host} cannot be reached ({why}). Nothing was marked as failed; run the same command again when online, it resumes.",
        )
        self.host, self.retry_after = host, 0.0


def _no_route() -> bool:
    """Whether this machine has no route to the internet (a UDP connect sends no packet)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 53))  # TEST-NET-1: routed like any public address, never contacted
        return False
    except OSError:
        return True


_OFFLINE_DNS = {getattr(socket, name) for name in ("EAI_AGAIN", "EAI_FAIL") if hasattr(socket, name)}


class _Unresolved(ImageError):
    """A host name that did not resolve (transient for a harvest; a refusal for a query URL)."""


class _Resolver:
    """getaddrinfo with answers and failures cached for one run, and offline detection."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, int], list[str] | tuple[str, str]] = {}
        self.lock = threading.Lock()
        self.offline: tuple[str, str] | None = None
        self.resolved_any = False
        self.failed_hosts: set[str] = set()
        self.lookups = 0  # getaddrinfo calls made, for tests

    def __call__(self, host: str, port: int) -> list[str]:
        with self.lock:
            hit = self.cache.get((host, port))
            if self.offline is not None:
                raise Offline(*self.offline)
        if isinstance(hit, list):
            return hit
        if hit is not None:
            raise _Unresolved(
                "fetch_failed",
                f"{hit[0]} could not be resolved ({hit[1]}); run again later (network failures are retried).",
            )
        try:
            self.lookups += 1
            addresses = [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
        except socket.gaierror as e:
            why = e.strerror or str(e)
            with self.lock:
                self.failed_hosts.add(host)
                self.cache[(host, port)] = (host, why)
                if e.errno in _OFFLINE_DNS or (not self.resolved_any and len(self.failed_hosts) >= 3) or _no_route():
                    self.offline = (host, why)
                    raise Offline(host, why) from None
            raise _Unresolved(
                "fetch_failed", f"{host} could not be resolved ({why}); run again later (network failures are retried)."
            ) from None
        with self.lock:
            self.resolved_any = True
            self.cache[(host, port)] = addresses
        return addresses


def _check_url(url: str, allow_private: bool, resolve: _Resolver | None = None) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except Exception:
        raise _rejected(url) from None
    if parsed.scheme not in ("http", "https") or not parsed.host or parsed.userinfo:
        raise _rejected(url)
    if allow_private and resolve is None:
        return parsed
    try:
        addresses = (resolve or _Resolver())(parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80))
    except UnicodeError:
        raise _rejected(url) from None
    if not allow_private and (not addresses or not all(is_public_address(a) for a in addresses)):
        raise _rejected(url, private=True)
    return parsed


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _HostGate:
    """Per-host politeness: at most ``concurrency`` requests at once, ``interval`` s apart."""

    def __init__(self, interval: float, concurrency: int):
        self.interval = interval
        self.slots = threading.Semaphore(concurrency)
        self.lock = threading.Lock()
        self.next_at = 0.0

    def __enter__(self) -> None:
        self.slots.acquire()
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_at)
            self.next_at = start + self.interval
        if start > now:
            time.sleep(start - now)

    def __exit__(self, *exc: object) -> None:
        self.slots.release()

    def slow_down(self, seconds: float) -> None:
        with self.lock:
            self.next_at = max(self.next_at, time.monotonic() + seconds)


class Gates(Protocol):
    """Where a ``Fetcher`` asks before each request to a host: this process's own per-host gates
    (``HostGates``, the default) or a budget shared by many processes (``vitrina.ray_runner``)."""

    def enter(self, host: str, interval: float, concurrency: int) -> object:
        """Block until a request to ``host`` may start; returns a ticket for ``exit``. Raises
        ``Blocked`` while the host is blocked."""
        ...

    def exit(self, host: str, ticket: object) -> None: ...

    def slow_down(self, host: str, seconds: float) -> None:
        """Start no request to ``host`` for ``seconds`` (Retry-After, backoff)."""
        ...

    def block(self, host: str, seconds: float) -> None:
        """``host`` banned us (429 from a stop_on_429 host): ask it nothing for ``seconds``."""
        ...


class HostGates:
    """One process's per-host gates, created on first use with the interval then asked for."""

    def __init__(self) -> None:
        self._gates: dict[str, _HostGate] = {}
        self._lock = threading.Lock()
        self._blocked: dict[str, float] = {}

    def enter(self, host: str, interval: float, concurrency: int) -> object:
        if self._blocked.get(host, 0) > time.monotonic():
            raise Blocked(host, self._blocked[host] - time.monotonic())
        with self._lock:
            if host not in self._gates:
                self._gates[host] = _HostGate(interval, concurrency)
            gate = self._gates[host]
        gate.__enter__()
        return gate

    def exit(self, host: str, ticket: object) -> None:
        cast(_HostGate, ticket).__exit__()

    def slow_down(self, host: str, seconds: float) -> None:
        gate = self._gates.get(host)
        if gate is not None:  # a host is slowed down only after a request to it, so its gate exists
            gate.slow_down(seconds)

    def block(self, host: str, seconds: float) -> None:
        self._blocked[host] = time.monotonic() + seconds


class Fetcher:
    """GET with limits, politeness, retries and an optional disk cache. Thread-safe."""

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        requests_per_second: float = 2.0,
        host_rates: dict[str, float] | None = None,
        concurrency_per_host: int = 2,
        max_bytes: int = MAX_BYTES,
        timeout: float = 30.0,
        deadline: float = 120.0,
        retries: int = 4,
        max_wait: float = 60.0,
        allow_private: bool | None = None,
        stop_on_429: tuple[str, ...] = STOP_ON_429,
        backoff: float = 0.5,
        gates: Gates | None = None,
    ):
        if allow_private is None:
            allow_private = os.environ.get("VITRINA_ALLOW_PRIVATE_URLS") == "1"
        self.cache_dir, self.max_bytes, self.timeout, self.retries, self.max_wait = (
            cache_dir,
            max_bytes,
            timeout,
            retries,
            max_wait,
        )
        self.deadline = deadline  # seconds for one request, redirects included (waiting for the host gate excluded)
        self.allow_private, self.stop_on_429, self.backoff = allow_private, stop_on_429, backoff
        self.rate, self.concurrency = requests_per_second, concurrency_per_host
        self.host_rates = {**HOST_RATES, **(host_rates or {})}  # loc.gov's pace for every run, resumed ones too
        self.gates: Gates = gates or HostGates()
        self.resolver = _Resolver()  # DNS answers for this fetcher's life (one run)
        self.requests = 0  # network requests made (cache hits excluded), for reports and tests
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))

    def close(self) -> None:
        pass  # the transport is shared by the process; kept so Fetcher stays a context manager

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def like_loc_gov(self, host: str) -> None:
        """Treat ``host`` (a mirror of the loc.gov API) as loc.gov: its pace unless one is set,
        and no retry after a 429 (the API bans)."""
        self.host_rates.setdefault(host, HOST_RATES["www.loc.gov"])
        if host not in self.stop_on_429:
            self.stop_on_429 = (*self.stop_on_429, host)

    def settings(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this fetcher elsewhere (a Ray worker), host
        rates and stop_on_429 hosts added by the sources included; not its gates."""
        return {"cache_dir": self.cache_dir, "requests_per_second": self.rate, "host_rates": dict(self.host_rates),
                "concurrency_per_host": self.concurrency, "max_bytes": self.max_bytes, "timeout": self.timeout, "deadline": self.deadline,
                "retries": self.retries, "max_wait": self.max_wait, "allow_private": self.allow_private, "stop_on_429": tuple(self.stop_on_429),
                "backoff": self.backoff}  # fmt: skip

    def interval(self, host: str) -> float:
        """Seconds between two request starts to ``host``: the rate of the most specific matching
        host in ``host_rates`` (tile.loc.gov's own, not loc.gov's), else the default."""
        matches = [suffix for suffix in self.host_rates if host == suffix or host.endswith("." + suffix)]
        rate = self.host_rates[max(matches, key=len)] if matches else self.rate
        return 1.0 / rate if rate > 0 else 0.0

    @contextmanager
    def _gate(self, host: str) -> Iterator[None]:
        ticket = self.gates.enter(host, self.interval(host), self.concurrency)
        try:
            yield
        finally:
            self.gates.exit(host, ticket)

    def _cache_path(self, url: str) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(url.encode()).hexdigest()
        return self.cache_dir / key[:2] / key

    def get_json(self, url: str) -> Any:
        data = self.get_bytes(url, accept="application/json, application/ld+json;q=0.9, */*;q=0.1")
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as e:
            raise ImageError(
                "bad_json", f"{url} did not return valid JSON ({type(e).__name__}); it may be an error page."
            ) from e

    def get_bytes(self, url: str, *, accept: str = "image/*", use_cache: bool = True) -> bytes:
        cache = self._cache_path(url) if use_cache else None
        if cache is not None and cache.exists():
            try:
                return cache.read_bytes()
            except FileNotFoundError:
                pass  # evicted meanwhile by another process sharing the cache
        data = self._get(url, accept)
        if cache is not None and self.cache_dir is not None:
            cache_put(self.cache_dir, cache, data)  # capped; a failure is logged once, the run goes on
        return data

    def _get(self, url: str, accept: str) -> bytes:
        attempt = 0
        while True:
            try:
                return self._get_once(url, accept)
            except _Retry as r:
                attempt += 1
                if attempt > self.retries:
                    raise ImageError(
                        "fetch_failed",
                        f"{url}: {r.why}, still after {self.retries} retries; run again later (the next run retries it).",
                    ) from None
                wait = r.wait if r.wait is not None else random.uniform(0, self.backoff * 2**attempt)  # full jitter
                if wait > self.max_wait:
                    raise ImageError(
                        "fetch_failed", f"{url}: {r.why}; the server asked to wait {wait:.0f} s. Run again later."
                    ) from None
                self.gates.slow_down(r.host, wait)
                time.sleep(wait)

    def content_type(self, url: str) -> str:
        """The Content-Type a HEAD request answers (after redirects); no retries, no cache."""
        try:
            return self._get_once(url, "*/*", method="HEAD").decode("latin-1")
        except _Retry as r:
            raise ImageError("fetch_failed", f"{url}: {r.why}") from None

    def _get_once(self, url: str, accept: str, method: str = "GET") -> bytes:
        deadline: float | None = None
        for _ in range(MAX_REDIRECTS + 1):
            parsed = _check_url(url, self.allow_private, self.resolver)
            host = parsed.host
            try:
                # The deadline starts once the first hop has passed the host gate (politeness waits do not count).
                with (
                    self._gate(host),
                    _until(deadline or time.monotonic() + self.deadline) as deadline,
                    _send(parsed, accept, self._timeout, method) as response,
                ):
                    self.requests += 1
                    peer = _peer_address(response)
                    if not self.allow_private and peer is not None and not is_public_address(peer):
                        raise _rejected(url, private=True)
                    if response.is_redirect and "location" in response.headers:
                        try:
                            url = urljoin(str(parsed), response.headers["location"])
                        except ValueError:  # "http://[::1"
                            raise _rejected(url) from None
                        continue
                    status = response.status_code
                    if status == 429:
                        wait = _retry_after(response.headers.get("retry-after"))
                        if any(host == h or host.endswith("." + h) for h in self.stop_on_429):
                            ban = wait if wait is not None else 3600.0
                            self.gates.block(host, ban)
                            raise Blocked(host, ban)
                        raise _Retry(host, "HTTP 429 Too Many Requests", wait)
                    if status in (500, 502, 503, 504):
                        raise _Retry(host, f"HTTP {status}", _retry_after(response.headers.get("retry-after")))
                    if status in (404, 410):
                        raise ImageError("not_found", f"{url}: HTTP {status}, not found.")
                    if status in (401, 403, 451):
                        raise ImageError("forbidden", f"{url}: HTTP {status}, access restricted.")
                    if status != 200:
                        raise ImageError("fetch_failed", f"{url}: HTTP {status}.")
                    if method == "HEAD":
                        return response.headers.get("content-type", "").encode("latin-1")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > self.max_bytes:
                        raise ImageError(
                            "too_large", f"{url} is {int(declared)} bytes, over the {self.max_bytes} byte limit."
                        )
                    body = bytearray()
                    for chunk in response.iter_raw():
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise ImageError("too_large", f"{url} is over the {self.max_bytes} byte limit.")
                        if time.monotonic() > deadline:
                            raise self._late(url)
                    if declared and declared.isdigit() and int(declared) != len(body):
                        raise _Retry(host, f"truncated body ({len(body)} of {declared} bytes)", None)
                    return bytes(body)
            except httpx.TimeoutException:
                if deadline is not None and deadline - time.monotonic() < 0.1:
                    raise self._late(url) from None  # not retried: a server this slow would only stall the run again
                raise _Retry(host, "timed out", None) from None
            except (httpx.TransportError, httpx.RemoteProtocolError) as e:
                if isinstance(e, httpx.ConnectError) and "unreachable" in str(e).lower():
                    self.resolver.offline = (host, str(e))
                    raise Offline(host, str(e)) from None
                raise _Retry(host, f"connection failed ({type(e).__name__})", None) from None
        raise ImageError("fetch_failed", f"{url} redirected more than {MAX_REDIRECTS} times.")

    def _late(self, url: str) -> ImageError:
        return ImageError("fetch_failed", f"{url}: no complete response within the {self.deadline:g} s deadline.")


class _Retry(Exception):
    def __init__(self, host: str, why: str, wait: float | None):
        self.host, self.why, self.wait = host, why, wait


def fetch_bytes(
    url: str, *, max_bytes: int = MAX_BYTES, timeout: float = 20.0, allow_private: bool | None = None
) -> bytes:
    """One GET of a user-supplied URL (a query image): guarded, capped, no retries, no cache, and
    done within ``timeout`` seconds in all, redirects included."""
    with Fetcher(
        max_bytes=max_bytes,
        timeout=timeout,
        deadline=timeout,
        retries=0,
        allow_private=allow_private,
        requests_per_second=0,
    ) as fetcher:
        try:
            return fetcher.get_bytes(url)
        except (Offline, _Unresolved):  # the same refusal as a private address: no oracle of which names resolve
            raise _rejected(url, private=True) from None
        except ImageError as e:
            if e.reason in ("url_rejected", "too_large"):
                raise
            raise ImageError("fetch_failed", f"Image URL {url!r} could not be fetched: {e}") from None


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


def _peer_address(response: httpx.Response) -> str | None:
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    addr = stream.get_extra_info("server_addr")
    return str(addr[0]) if addr else None
