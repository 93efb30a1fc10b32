"""Which addresses a server-side source may reach: the scheme, the operator's allow-list (settings.sources_allow),
and the one resolution of each host a connection uses.

Nothing is assumed: an empty list allows nothing. A URL's host is resolved once per connection (`AllowList.pin`)
and every address it resolves to must lie in an allowed network; the connection is then made to that checked
address, never to a second lookup of the name (which a hostile DNS server could answer differently: rebinding).
Addresses inside the machine or its networks (loopback, private, link-local with the cloud metadata service,
carrier-grade NAT, multicast, reserved; `INSIDE`) are refused unless an entry naming them *by address* allows them:
an address or a network within one of those blocks (`127.0.0.1`, `10.1.0.0/16`); a wide entry (`0.0.0.0/0`) or a
host name never does. A host name in the list stands for the public addresses it resolves to when the check runs.
Which resolver answers: the system's, or the DNS server `settings.sources_dns_server` names.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from s2d.service.errors import InvalidParametersError, SourceNotAllowedError, UnsupportedSchemeError

SCHEMES = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}  # scheme: default port
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# The blocks no source may reach unless an entry names them by address (IANA special-purpose registries).
INSIDE = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
        "224.0.0.0/4", "240.0.0.0/4",
        "::/127", "100::/64", "2001:db8::/32", "64:ff9b:1::/48", "fc00::/7", "fe80::/10", "ff00::/8",
    )
)  # fmt: skip
# IPv6 prefixes that carry an IPv4 address (NAT64, 6to4): judged by the address they carry.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


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
    return _carried(address)


def _carried(address: Address) -> Address:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), else the address itself."""
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def inside(address: Address) -> bool:
    """An address in the machine or its networks (loopback, private, link-local, metadata, ...)."""
    return not address.is_global or any(address in n for n in INSIDE if n.version == address.version)


def _names_inside(network: Network) -> bool:
    """An entry that names inside addresses by address: one address, or a network within an inside block."""
    single = network.num_addresses == 1
    return single or any(network.version == n.version and network.subnet_of(n) for n in INSIDE)


def host_for_url(address: Address) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


@dataclass(frozen=True)
class Pinned:
    """A URL's host resolved once and checked: connections go to `address`, never to a new lookup."""

    host: str
    port: int
    address: Address

    def url(self, parts: SplitResult) -> str:
        """The URL with its host replaced by the checked address (its user and password kept)."""
        userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return parts._replace(netloc=f"{userinfo}{host_for_url(self.address)}:{self.port}").geturl()


@dataclass(frozen=True)
class Resolver:
    """Host names to addresses: the system's resolver (getaddrinfo), or the DNS server at `server` (host:port)."""

    server: str | None = None
    timeout_s: float = 5.0

    def resolve(self, host: str, port: int) -> list[Address]:
        """The addresses of `host` in the resolver's order (OSError when there are none)."""
        if self.server is None:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            return list(dict.fromkeys(_address(info[4][0]) for info in infos))
        return self._ask_server(host)

    def _ask_server(self, host: str) -> list[Address]:
        import dns.exception
        import dns.resolver

        address, _, port = self.server.rpartition(":")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port, resolver.lifetime = [address.strip("[]")], int(port), self.timeout_s
        found: list[Address] = []
        for kind in ("A", "AAAA"):
            try:
                found += [_address(r.address) for r in resolver.resolve(host, kind, search=False)]
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                pass
            except dns.exception.DNSException as err:
                raise OSError(f"DNS server {self.server}: {err}") from None
        if not found:
            raise OSError(f"{host}: no address")
        return list(dict.fromkeys(found))


@dataclass(frozen=True)
class AllowList:
    networks: tuple[Network, ...] = ()
    hosts: tuple[str, ...] = ()
    resolver: Resolver = field(default_factory=Resolver)

    @classmethod
    def parse(cls, entries: list[str], resolver: Resolver | None = None) -> AllowList:
        """From the setting: CIDR networks, single addresses, host names. ValueError names a bad entry."""
        networks, hosts = [], []
        for entry in (e.strip() for e in entries):
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if not _HOST_NAME.match(entry):
                    raise ValueError(f"sources_allow: {entry!r} is not a network, an address or a host name") from None
                hosts.append(entry.lower().rstrip("."))
        return cls(tuple(networks), tuple(hosts), resolver or Resolver())

    async def check(self, url: str) -> Pinned:
        """`pin` off the event loop (a lookup blocks)."""
        return await asyncio.to_thread(self.pin, url)

    def pin(self, url: str) -> Pinned:
        """Resolve the URL's host once; SourceNotAllowedError (403) unless every address is allowed; the address to
        connect to."""
        parts = parse_url(url)
        return self.pin_host(parts.hostname, parts.port or SCHEMES[parts.scheme.lower()])

    def pin_host(self, host: str, port: int) -> Pinned:
        if not self.networks and not self.hosts:
            raise SourceNotAllowedError(
                "no host is allowed: an operator lists the networks or hosts sources may open in S2D_SOURCES_ALLOW",
                details={"reason": "empty_allow_list"},
            )
        addresses = self._lookup(host, port)
        refused = [a for a in addresses if not self._allows(a, port)]
        if refused:
            listed = ", ".join(map(str, refused))
            why = " (inside addresses need an entry naming them by address)" if any(map(inside, refused)) else ""
            raise SourceNotAllowedError(
                f"{host} ({listed}) is not in the allowed networks or hosts (S2D_SOURCES_ALLOW){why}",
                details={"reason": "not_allowed", "host": host, "addresses": [str(a) for a in refused]},
            )
        return Pinned(host, port, addresses[0])

    def _allows(self, address: Address, port: int) -> bool:
        networks = [n for n in self.networks if n.version == address.version and address in n]
        if inside(address):
            return any(_names_inside(n) for n in networks)
        if networks:
            return True
        return any(address in self._host_addresses(host, port) for host in self.hosts)

    def _host_addresses(self, host: str, port: int) -> list[Address]:
        try:
            return self.resolver.resolve(host, port)
        except OSError:
            return []

    def _lookup(self, host: str, port: int) -> list[Address]:
        try:
            return [_address(host)]
        except ValueError:
            pass
        try:
            return self.resolver.resolve(host, port)
        except (OSError, UnicodeError) as err:
            raise SourceNotAllowedError(
                f"the source host {host!r} cannot be resolved: {getattr(err, 'strerror', None) or err}",
                details={"reason": "unresolvable", "host": host},
            ) from None
