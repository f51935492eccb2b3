"""Outbound HTTP for user-supplied URLs: only public addresses, bounded size and time.

Every hop (redirects are followed by hand) must be http(s), carry no credentials, and resolve
only to globally routable addresses; the address actually connected to is checked again before
the body is read. IPv4-mapped, 6to4 and NAT64 IPv6 forms are unwrapped first, because Python's
``is_global`` calls some of them global. Set ``allow_private=True`` (or
VITRINA_ALLOW_PRIVATE_URLS=1) only for a trusted, local deployment.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from importlib.metadata import version as _version
from urllib.parse import urljoin

import httpx

from .errors import ImageError

USER_AGENT = f"vitrina/{_version('vitrina')} (+https://github.com/vitrina-search/vitrina)"
MAX_BYTES = 50 * 1024 * 1024
MAX_REDIRECTS = 5
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_6TO4 = ipaddress.ip_network("2002::/16")


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


def _check_url(url: str, allow_private: bool) -> httpx.URL:
    rejected = ImageError("url_rejected", f"Image URL {url!r} was rejected: only http(s) URLs of public hosts can be fetched.")
    try:
        parsed = httpx.URL(url)
    except Exception:
        raise rejected from None
    if parsed.scheme not in ("http", "https") or not parsed.host or parsed.userinfo:
        raise rejected
    if allow_private:
        return parsed
    try:
        infos = socket.getaddrinfo(parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise rejected from None
    if not infos or not all(is_public_address(str(info[4][0])) for info in infos):
        raise rejected
    return parsed


def fetch_bytes(url: str, *, max_bytes: int = MAX_BYTES, timeout: float = 20.0, allow_private: bool | None = None) -> bytes:
    """GET ``url`` and return its body, refusing private targets, > ``max_bytes`` or > ``timeout``."""
    if allow_private is None:
        allow_private = os.environ.get("VITRINA_ALLOW_PRIVATE_URLS") == "1"
    headers = {"User-Agent": USER_AGENT, "Accept": "image/*", "Accept-Encoding": "identity"}
    with httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), follow_redirects=False, headers=headers) as client:
        for _ in range(MAX_REDIRECTS + 1):
            parsed = _check_url(url, allow_private)
            try:
                with client.stream("GET", parsed) as response:
                    peer = _peer_address(response)
                    if not allow_private and peer is not None and not is_public_address(peer):
                        raise ImageError("url_rejected", f"Image URL {url!r} was rejected: only http(s) URLs of public hosts can be fetched.")
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(str(parsed), response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise ImageError("fetch_failed", f"Image URL {url!r} answered HTTP {response.status_code}.")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise ImageError("too_large", f"Image URL {url!r} is {int(declared)} bytes, over the {max_bytes} byte limit.")
                    body = bytearray()
                    for chunk in response.iter_raw():
                        body += chunk
                        if len(body) > max_bytes:
                            raise ImageError("too_large", f"Image URL {url!r} is over the {max_bytes} byte limit.")
                    return bytes(body)
            except httpx.HTTPError as e:
                raise ImageError("fetch_failed", f"Image URL {url!r} could not be fetched: {type(e).__name__}.") from e
    raise ImageError("fetch_failed", f"Image URL {url!r} redirected more than {MAX_REDIRECTS} times.")


def _peer_address(response: httpx.Response) -> str | None:
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    addr = stream.get_extra_info("server_addr")
    return str(addr[0]) if addr else None
