"""``khazad keys``: the bus's CURVE key pairs and the operator's allow-list (``<keys_dir>/allow.toml``).

* ``init``: a key pair for every actor, an operator and the given strategies, with their allow-list entries (what
  ``khazad run`` does on first start), and the approval key;
* ``create NAME --role R``: a new key pair and its allow-list entry (``--strategies`` for a strategy key acting for
  several ids; ``--out DIR`` writes the pair with the servers' public keys, and nothing else, into DIR: what a
  strategy running as another user, or on another host, needs);
* ``add NAME --role R --public-key FILE|Z85``: allow a key made elsewhere (only its public half travels);
* ``remove NAME``: revoke a key (running services refuse it from then on; the key files stay);
* ``list``: the allow-list.

Changes apply to running processes without a restart (bus/allowlist.py).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from bus import registry
from bus.allowlist import Z85_KEY_PATTERN, allow_path, load
from bus.approval import write_approval_key
from bus.config import ConfigError, KhazadConfig, load_config
from bus.registry import ROLES, STRATEGY_ROLE
from bus.security import (
    OPERATOR_KEY,
    SERVER_KEYS,
    allow,
    create_key,
    ensure_keys,
    issue,
    keys_dir,
    public_key_of,
    revoke,
)

EXIT_USAGE = 2
EXIT_CONFIG = 78


def _cfg(args: argparse.Namespace) -> KhazadConfig:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _strategies(args: argparse.Namespace) -> list[str] | None:
    raw = getattr(args, "strategies", None)
    if not raw:
        return None
    if args.role != STRATEGY_ROLE:
        raise ValueError("--strategies applies to a strategy key only")
    return [s.strip() for s in raw.split(",") if s.strip()]


def _init(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    try:
        made = ensure_keys(cfg, strategies=tuple(args.strategy), operator=args.operator)
    except (ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    approval = cfg.path(cfg.risk.approval_key_file)
    existed = approval.exists()
    write_approval_key(approval)
    print(f"keys in {keys_dir(cfg)}: created {', '.join(made) if made else 'nothing (all present)'}")
    print(f"allow-list {allow_path(keys_dir(cfg))}")
    print(f"approval key {approval}: {'present' if existed else 'created'}")
    return 0


def _create(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    directory = keys_dir(cfg)
    try:
        sids = _strategies(args)
        if args.name in registry.ACTOR_NAMES and args.role != registry.ACTOR_ROLE:
            raise ValueError(f"{args.name!r} is an actor's name")
        if args.out:
            out = Path(args.out).expanduser().resolve()
            public, secret = issue(directory, out, args.name)
        else:
            public, secret = create_key(directory, args.name)
        principal = allow(directory, args.name, args.role, public_key_of(secret), sids)
    except (ValueError, FileExistsError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    acts = f" acting for {', '.join(sorted(principal.strategies))}" if principal.strategies else ""
    print(f"created {principal.id}{acts}; allowed in {allow_path(directory)}")
    print(f"  public: {public}")
    print(f"  secret: {secret} (mode 0600; keep it on the host that uses it)")
    if args.out:
        missing = [f"{s}.key" for s in SERVER_KEYS if not (Path(args.out).expanduser() / f"{s}.key").exists()]
        print(f"  {Path(args.out)} holds this key pair and the servers' public keys, nothing else")
        if missing:
            print(f"  warning: no {', '.join(missing)} in {directory} to copy (run `khazad keys init` first)")
    elif args.role != registry.ACTOR_ROLE:
        print(
            "  note: any process of this Unix user can read every secret in the keys directory; run strategies as "
            "another user with a key made by `khazad keys create ... --out DIR` (docs/operations.md)"
        )
    return 0


def _public_key(arg: str) -> str:
    if re.match(Z85_KEY_PATTERN, arg):
        return arg
    path = Path(arg).expanduser()
    if not path.exists():
        raise ValueError(f"{arg!r} is neither a z85 public key (40 characters) nor a key file")
    return public_key_of(path)


def _add(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    try:
        if args.name in registry.ACTOR_NAMES and args.role != registry.ACTOR_ROLE:
            raise ValueError(f"{args.name!r} is an actor's name")
        principal = allow(keys_dir(cfg), args.name, args.role, _public_key(args.public_key), _strategies(args))
    except (ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"allowed {principal.id} ({principal.public_key}) in {allow_path(keys_dir(cfg))}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    if args.name in registry.ACTOR_NAMES and not args.force:
        print(
            f"error: {args.name!r} is an actor: removing it stops the system (--force to do it anyway)", file=sys.stderr
        )
        return EXIT_USAGE
    try:
        removed = revoke(keys_dir(cfg), args.name)
    except (ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if removed is None:
        print(f"error: no allow-list entry {args.name!r}", file=sys.stderr)
        return EXIT_USAGE
    print(f"removed {removed.id}: running services refuse it from now on (its key files are left in place)")
    return 0


def _list(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    directory = keys_dir(cfg)
    path = allow_path(directory)
    if not path.exists():
        print(f"no allow-list at {path} (`khazad keys init` or `khazad run` creates it)")
        return 0
    try:
        entries = load(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for p in sorted(entries.values(), key=lambda p: (ROLES.index(p.role), p.name)):
        secret = "(secret here)" if (directory / f"{p.name}.key_secret").exists() else ""
        acts = ",".join(sorted(p.strategies))
        print(f"{p.role:9} {p.name:20} {p.public_key}  {acts:20} {secret}".rstrip())
    return 0


def _approval(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    path = cfg.path(cfg.risk.approval_key_file)
    existed = path.exists()
    write_approval_key(path)
    print(f"approval key {path}: {'already present' if existed else 'created'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="CURVE keys of the bus and the operator's allow-list; the approval key")
    ks = p.add_subparsers(dest="keys_command", metavar="<keys command>", required=True)
    i = ks.add_parser("init", help="keys and allow-list entries for every actor, an operator, optional strategies")
    i.add_argument("--operator", default=OPERATOR_KEY, help=f"operator key name (default: {OPERATOR_KEY})")
    i.add_argument("--strategy", action="append", default=[], help="also create a key for this strategy id")
    i.set_defaults(handler=_init)
    c = ks.add_parser("create", help="create a key pair and allow it")
    c.add_argument("name", help="key name (for a strategy: its strategy id)")
    c.add_argument("--role", choices=ROLES, required=True)
    c.add_argument(
        "--strategies", help="strategy key: the strategy ids it may act for (comma-separated; default: name)"
    )
    c.add_argument("--out", help="write the key pair and the servers' public keys (only) into this directory")
    c.set_defaults(handler=_create)
    a = ks.add_parser("add", help="allow a public key made elsewhere")
    a.add_argument("name", help="key name (for a strategy: its strategy id)")
    a.add_argument("--role", choices=ROLES, required=True)
    a.add_argument("--public-key", required=True, help="the public key file (NAME.key) or its z85 text")
    a.add_argument("--strategies", help="strategy key: the strategy ids it may act for (comma-separated)")
    a.set_defaults(handler=_add)
    r = ks.add_parser("remove", help="revoke a key (refused from now on, no restart needed)")
    r.add_argument("name")
    r.add_argument("--force", action="store_true", help="also for an actor's key")
    r.set_defaults(handler=_remove)
    ls = ks.add_parser("list", help="list the allow-list")
    ls.set_defaults(handler=_list)
    ap = ks.add_parser("approval", help="create the risk approval key if missing")
    ap.set_defaults(handler=_approval)
