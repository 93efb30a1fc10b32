"""Who may do what: named API keys, each with scopes and its own limits.

Keys come from the `api_keys_file` setting (TOML, written by `s2d keys add`) and from the single `api_key` setting
(one key named "api_key" with every scope and no limit: a deployment that set it keeps working). The file holds the
sha256 of each key, never the key:

    [[keys]]
    name = "door-camera"             # in logs and as the metrics label `key`; the key itself never is
    sha256 = "9f86d08..."            # of the key the client sends (`Authorization: Bearer KEY` or `X-API-Key`)
    scopes = ["stream", "models:read"]
    rate = 5.0                       # requests (and WebSocket connections) per second; 0 or absent: no limit
    burst = 10                       # the most taken at once (default: the rate, at least 1)
    max_streams = 2                  # WebSockets open at once; 0 or absent: no limit

A given key is hashed and compared with every stored hash in constant time. The file is read again after SIGHUP and
when it changes (both seen at the next request; the file is looked at once a second at most); a file that no longer
parses keeps the keys in use and logs why. Without `api_key` and without a file nothing is checked (as before).

The middleware (service.middleware) authenticates and rate-limits every request and WebSocket; a route declares the
scope it needs with `dependencies=[Depends(require_scope("classify"))]`, which answers 403 to a key without it over
HTTP and which the middleware reads for a WebSocket (it refuses before the handshake and holds the key's stream slot
for the connection). The OpenAPI description (service.openapi) declares each operation's scope from the same place.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import math
import re
import signal
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import HTTPConnection
from starlette.routing import Match

from s2d.service import metrics
from s2d.service.errors import ForbiddenError, RateLimitedError, UnauthorizedError

log = logging.getLogger(__name__)

SCOPES = ("classify", "stream", "sources", "models:read", "metrics")
SINGLE_KEY_NAME = "api_key"  # the name the `api_key` setting's key goes by
KEY_PREFIX = "s2d_"  # of the keys `s2d keys add` makes (so a leaked one is recognisable in a scan)
WATCH_EVERY_S = 1.0
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def given_key(headers: dict[str, str]) -> str:
    """The key a request carries: `Authorization: Bearer KEY`, `X-API-Key`, or (browsers cannot set headers on a
    WebSocket) the subprotocol `bearer.KEY`."""
    auth = headers.get("authorization", "")
    key = auth[7:] if auth.lower().startswith("bearer ") else headers.get("x-api-key", "")
    if not key:
        offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
        key = next((p[7:] for p in offered if p.startswith("bearer.")), "")
    return key


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    scopes: frozenset[str] = frozenset(SCOPES)
    rate: float = 0.0
    burst: int = 0
    max_streams: int = 0

    @classmethod
    def from_entry(cls, entry: dict) -> ApiKey:
        """One `[[keys]]` table; ValueError names what is wrong."""
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"a key's name must match {_NAME.pattern}, got {name!r}")
        unknown = set(entry) - {"name", "sha256", "scopes", "rate", "burst", "max_streams"}
        if unknown:
            raise ValueError(f"key {name!r}: unknown field(s) {sorted(unknown)}")
        digest = str(entry.get("sha256", "")).lower()
        if not _SHA256.match(digest):
            raise ValueError(f"key {name!r}: sha256 must be 64 hex digits (the hash of the key, never the key)")
        scopes = entry.get("scopes", [])
        if not isinstance(scopes, list) or not set(scopes) <= set(SCOPES):
            raise ValueError(f"key {name!r}: scopes must be a list of {', '.join(SCOPES)}; got {scopes!r}")
        rate, burst, streams = entry.get("rate", 0.0), entry.get("burst", 0), entry.get("max_streams", 0)
        if not (isinstance(rate, int | float) and rate >= 0 and isinstance(burst, int) and burst >= 0
                and isinstance(streams, int) and streams >= 0):  # fmt: skip
            raise ValueError(f"key {name!r}: rate, burst and max_streams must be numbers >= 0")
        return cls(name, digest, frozenset(scopes), float(rate), burst, streams)

    @property
    def capacity(self) -> float:
        return float(self.burst or max(1, math.ceil(self.rate)))


def read_keys_file(path: Path) -> list[ApiKey]:
    """The keys of a keys file (an empty list for a file without any); ValueError for a file that is not one."""
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not TOML: {err}") from None
    entries = data.get("keys", [])
    if set(data) - {"keys"} or not isinstance(entries, list):
        raise ValueError(f"{path}: a keys file holds [[keys]] tables only")
    keys = [ApiKey.from_entry(e) for e in entries]
    names = [k.name for k in keys]
    if len(set(names)) != len(names) or SINGLE_KEY_NAME in names:
        raise ValueError(f"{path}: key names must be unique and not {SINGLE_KEY_NAME!r} (the api_key setting's)")
    return keys


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class KeyRing:
    """The keys in force, their rate buckets and open streams. One per application (built from the settings)."""

    single: ApiKey | None = None
    path: Path | None = None
    keys: tuple[ApiKey, ...] = ()
    _stamp: tuple | None = None
    _looked_at: float = 0.0
    _hangup: bool = False  # SIGHUP received: reload at the next request
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _streams: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings) -> KeyRing:
        """ValueError (the start-up stops with it) for a keys file that does not parse."""
        single = None
        if settings.api_key is not None:
            single = ApiKey(SINGLE_KEY_NAME, key_digest(settings.api_key.get_secret_value()))
        ring = cls(single=single, path=settings.api_keys_file)
        ring.keys = ring._read()
        return ring

    @property
    def enabled(self) -> bool:
        """Keys are checked: an `api_key` or a keys file is set (a file without keys then admits nobody)."""
        return self.single is not None or self.path is not None

    # ---- keys in force ---------------------------------------------------------------------------------------------
    def _read(self) -> tuple[ApiKey, ...]:
        from_file: list[ApiKey] = []
        if self.path is not None:
            self._stamp = _stamp(self.path)
            from_file = read_keys_file(self.path)
        return tuple(k for k in (self.single, *from_file) if k is not None)

    def reload(self, why: str) -> None:
        """Read the file again; keep the keys in use when it does not parse (and say so)."""
        try:
            keys = self._read()
        except (OSError, ValueError) as err:
            log.error("API keys not reloaded (%s), the previous ones stay in force: %s", why, err)
            return
        with self._lock:
            self.keys = keys
            names = {k.name for k in keys}
            self._buckets = {n: b for n, b in self._buckets.items() if n in names}
        log.info("API keys reloaded (%s): %s", why, ", ".join(sorted(names)) or "none", extra={"keys": len(keys)})

    def watch(self) -> None:
        """After a SIGHUP, and at most once a second: reload when the file changed (written, replaced, removed)."""
        if self._hangup:
            self._hangup = False
            self.reload("SIGHUP")
            return
        now = time.monotonic()
        if self.path is None or now - self._looked_at < WATCH_EVERY_S:
            return
        self._looked_at = now
        if _stamp(self.path) != self._stamp:
            self.reload("the file changed")

    def reload_on_sighup(self) -> None:
        """SIGHUP reloads the file at the next request (installed from the main thread only, where Python runs
        signal handlers). The handler only raises a flag: it may run while this thread holds the ring's lock."""
        if self.path is None or threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "_hangup", True))

    # ---- admission -------------------------------------------------------------------------------------------------
    def authenticate(self, key: str) -> ApiKey:
        """The key's entry, after its rate limit: 401 for a missing or unknown key, 429 over its rate."""
        self.watch()
        found = self._find(key) if key else None
        if found is None:
            raise UnauthorizedError()
        self._take(found)
        return found

    def _find(self, key: str) -> ApiKey | None:
        """Compared with every stored hash, each in constant time, whatever matches first."""
        digest = key_digest(key).encode()
        found = None
        for entry in self.keys:
            if hmac.compare_digest(digest, entry.sha256.encode()):
                found = entry
        return found

    def _take(self, key: ApiKey) -> None:
        if key.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.setdefault(key.name, _Bucket(key.capacity, now))
            bucket.tokens = min(key.capacity, bucket.tokens + (now - bucket.at) * key.rate)
            bucket.at = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return
            wait = (1 - bucket.tokens) / key.rate
        raise RateLimitedError(f"API key {key.name!r} is over its limit of {key.rate:g} requests/s", retry_after=wait)

    @contextlib.contextmanager
    def stream_slot(self, key: ApiKey) -> Iterator[None]:
        """Held while one of the key's WebSockets is open; 429 when the key has `max_streams` open."""
        with self._lock:
            open_now = self._streams.get(key.name, 0)
            if key.max_streams and open_now >= key.max_streams:
                raise RateLimitedError(
                    f"API key {key.name!r} has {open_now} streams open, its limit; close one first", retry_after=1
                )
            self._streams[key.name] = open_now + 1
        metrics.KEY_STREAMS.labels(key.name).inc()
        try:
            yield
        finally:
            with self._lock:
                self._streams[key.name] -= 1
            metrics.KEY_STREAMS.labels(key.name).dec()


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


# ---- scopes ------------------------------------------------------------------------------------------------------
def require_scope(scope: str) -> Callable[[HTTPConnection], None]:
    """A route's dependency: 403 unless the request's key has `scope` (nothing to check without keys)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def check(connection: HTTPConnection) -> None:
        key: ApiKey | None = connection.scope.get("state", {}).get("api_key")
        if key is not None:
            check_scope(key, scope)

    check.required_scope = scope
    return check


def route_scope(route) -> str | None:
    """The scope a route declares with `require_scope`, if any."""
    for dependency in getattr(route, "dependencies", []):
        scope = getattr(dependency.dependency, "required_scope", None)
        if scope is not None:
            return scope
    return None


def declared_scopes(app) -> list[tuple[Any, str]]:
    """(route, scope) for every route of `app` that declares a scope; each route has `path`, `methods` and
    `matches` as the app routes with it (FastAPI 0.16x keeps an included router as a branch, walked here; older
    versions list the routes themselves)."""
    return [(route, scope) for route in _walk(app.router.routes)
            if (scope := route_scope(getattr(route, "original_route", route))) is not None]  # fmt: skip


def _walk(routes) -> Iterator:
    for route in routes:
        if hasattr(route, "effective_candidates"):
            yield from _walk(route.effective_candidates())
        else:
            yield route


def scope_of_connection(scope: dict) -> str | None:
    """The scope the route a WebSocket reaches declares (the middleware runs before routing)."""
    for route, required in declared_scopes(scope["app"]):
        if route.matches(scope)[0] == Match.FULL:
            return required
    return None


def check_scope(key: ApiKey, scope: str | None) -> None:
    if scope is not None and scope not in key.scopes:
        raise ForbiddenError(f"API key {key.name!r} does not have the {scope!r} scope this route needs",
                             details={"scope": scope, "key": key.name})  # fmt: skip
