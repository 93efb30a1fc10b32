"""`s2d keys add|list|remove`: the service's named API keys (service.auth) in its keys file (S2D_API_KEYS_FILE).

`add` makes a random key, prints it once (nothing keeps it: the file holds its sha256) and appends its entry; the
file is replaced in one step (a new file, renamed over the old), so a running service that reloads it on the change
or on SIGHUP never reads half of it. Every change is checked by the service's own parser before it is written.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

FILE_ENV = "S2D_API_KEYS_FILE"
HEADER = "# S2D API keys (service/auth.py): sha256 of each key, never the key. `s2d keys add` writes this file.\n"


def _file(args: argparse.Namespace) -> Path:
    path = args.file or os.environ.get(FILE_ENV)
    if not path:
        raise ValueError(f"name the keys file: --file PATH or {FILE_ENV}")
    return Path(path)


def _entry(name: str, digest: str, scopes: list[str], rate: float, burst: int, max_streams: int) -> str:
    """One [[keys]] table (JSON strings and lists are TOML's too)."""
    lines = ["[[keys]]", f"name = {json.dumps(name)}", f"sha256 = {json.dumps(digest)}"]
    lines += [f"scopes = {json.dumps(scopes)}"]
    lines += [f"rate = {rate!r}"] if rate else []
    lines += [f"burst = {burst}"] if burst else []
    lines += [f"max_streams = {max_streams}"] if max_streams else []
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    """Checked by the service's parser, then written next to the file and renamed over it (mode 600)."""
    from s2d.service.auth import read_keys_file

    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    try:
        read_keys_file(staged)
    except ValueError:
        staged.unlink()
        raise
    os.replace(staged, path)


def cmd_add(args: argparse.Namespace) -> int:
    from s2d.service.auth import KEY_PREFIX, SCOPES, key_digest, read_keys_file

    path = _file(args)
    scopes = list(SCOPES) if args.scopes == "all" else [s.strip() for s in args.scopes.split(",") if s.strip()]
    existing = path.read_text() if path.exists() else HEADER
    if path.exists() and any(k.name == args.name for k in read_keys_file(path)):
        raise ValueError(f"{path} already has a key named {args.name!r} (s2d keys remove {args.name} first)")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    entry = _entry(args.name, key_digest(key), scopes, args.rate, args.burst, args.max_streams)
    _write(path, existing.rstrip("\n") + "\n\n" + entry)
    print(key)
    shown = f"key {args.name!r} added to {path} (scopes: {', '.join(scopes)}); the key is shown only now"
    print(shown, file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from s2d.service.auth import read_keys_file

    for key in read_keys_file(_file(args)):
        limits = [f"rate {key.rate:g}/s burst {int(key.capacity)}" if key.rate else "no rate limit"]
        limits += [f"at most {key.max_streams} stream(s) at once" if key.max_streams else "no stream limit"]
        print(f"{key.name}\t{','.join(sorted(key.scopes)) or '(no scope)'}\t{'; '.join(limits)}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from s2d.service.auth import read_keys_file

    path = _file(args)
    keys = [k for k in read_keys_file(path) if k.name != args.name]
    if len(keys) == len(read_keys_file(path)):
        raise KeyError(f"{path} has no key named {args.name!r}")
    entries = [_entry(k.name, k.sha256, sorted(k.scopes), k.rate, k.burst, k.max_streams) for k in keys]
    _write(path, HEADER + "".join("\n" + e for e in entries))
    print(f"key {args.name!r} removed from {path}", file=sys.stderr)
    return 0


def add_commands(commands) -> None:
    keys = commands.add_parser("keys", help="the service's named API keys (S2D_API_KEYS_FILE): add, list, remove")
    actions = keys.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="make a key, print it once, write its sha256, scopes and limits")
    add.add_argument("name", help="the key's name (in logs and metrics): letters, digits, . _ -")
    add.add_argument("--scopes", required=True,
                     help="comma-separated: classify, stream, sources, models:read, metrics; or all")  # fmt: skip
    add.add_argument("--rate", type=float, default=0.0, help="requests per second (0: no limit)")
    add.add_argument("--burst", type=int, default=0, help="requests at once above the rate (default: the rate)")
    add.add_argument("--max-streams", type=int, default=0, help="WebSockets open at once (0: no limit)")
    add.set_defaults(func=cmd_add)
    listing = actions.add_parser("list", help="names, scopes and limits")
    listing.set_defaults(func=cmd_list)
    remove = actions.add_parser("remove", help="remove a key (a running service drops it at once)")
    remove.add_argument("name")
    remove.set_defaults(func=cmd_remove)
    for action in (add, listing, remove):
        action.add_argument("--file", help=f"the keys file (default: {FILE_ENV})")
