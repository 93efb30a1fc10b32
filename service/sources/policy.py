"""Which URLs a server-side source may open: the scheme, and the operator's allow-list (settings.sources_allow).

Nothing is assumed: an empty list allows nothing, loopback and private networks included. A URL's host is resolved
and every address it resolves to must lie in an allowed network (so a name cannot smuggle in an address the list does
not hold); a host name in the list stands for the addresses it resolves to when the check runs. The check runs when
a source is created and again before every reconnection, since names can move.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from s2d.service.errors import InvalidParametersError, SourceNotAllowedError, UnsupportedSchemeError

SCHEMES = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}  # scheme: default port
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_url(url: str) -> SplitResult:
    """The URL split, refused when its scheme is not one a source reads (422 unsupported_scheme) or it has no host."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UnsupportedSchemeError(
            f"a source URL starts with {', '.join(f'{s}://' for s in SCHEMES)}; not {scheme or '(no scheme)'}://",
            details={"scheme": scheme, "allowed": sorted(SCHEMES)},
        )
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as err:
        raise InvalidParametersError(f"the source URL's port is invalid: {err}") from None
    if not parts.hostname:
        raise InvalidParametersError("the source URL has no host")
    return parts


def redact(url: str) -> str:
    """The URL without the password it may carry (cameras take rtsp://user:password@host/...)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def _address(text: str) -> Address:
    address = ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 scope id names the interface, not the address
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


@dataclass(frozen=True)
class AllowList:
    networks: tuple[Network, ...] = ()
    hosts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: list[str]) -> AllowList:
        """From the setting: CIDR networks, single addresses, host names. ValueError names a bad entry."""
        networks, hosts = [], []
        for entry in (e.strip() for e in entries):
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if not _HOST_NAME.match(entry):
                    raise ValueError(f"sources_allow: {entry!r} is not a network, an address or a host name") from None
                hosts.append(entry.lower().rstrip("."))
        return cls(tuple(networks), tuple(hosts))

    async def check(self, url: str) -> None:
        """Raise SourceNotAllowedError (403) unless every address the URL's host resolves to is allowed."""
        parts = parse_url(url)
        if not self.networks and not self.hosts:
            raise SourceNotAllowedError(
                "no host is allowed: an operator lists the networks or hosts sources may open in S2D_SOURCES_ALLOW",
                details={"reason": "empty_allow_list"},
            )
        port = parts.port or SCHEMES[parts.scheme.lower()]
        addresses = await _resolve(parts.hostname, port)
        allowed = list(self.networks)
        for host in self.hosts:
            allowed += [ipaddress.ip_network(a) for a in await _resolve(host, port, missing_ok=True)]
        refused = sorted({str(a) for a in addresses if not any(a in n for n in allowed if a.version == n.version)})
        if refused:
            raise SourceNotAllowedError(
                f"{parts.hostname} ({', '.join(refused)}) is not in the allowed networks or hosts (S2D_SOURCES_ALLOW)",
                details={"reason": "not_allowed", "host": parts.hostname, "addresses": refused},
            )


async def _resolve(host: str, port: int, missing_ok: bool = False) -> list[Address]:
    try:
        return [_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        if missing_ok:
            return []
        raise SourceNotAllowedError(
            f"the source host {host!r} cannot be resolved: {err.strerror or err}", details={"reason": "unresolvable"}
        ) from None
    return sorted({_address(info[4][0]) for info in infos}, key=str)
