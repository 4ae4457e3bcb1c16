"""``khazad keys``: create and list CURVE key pairs (actors, strategies, operators) and the approval key."""

from __future__ import annotations

import argparse
import sys

from bus import registry
from bus.approval import write_approval_key
from bus.config import ConfigError, KhazadConfig, load_config
from bus.registry import ACTOR_ROLE, OPERATOR_ROLE, ROLES, STRATEGY_ROLE
from bus.security import create_key, keys_dir, load_allowed


def _cfg(args: argparse.Namespace) -> KhazadConfig:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(78) from None


def _init(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    directory = keys_dir(cfg)
    made = []
    wanted = [(n, ACTOR_ROLE) for n in registry.ACTOR_NAMES] + [(args.operator, OPERATOR_ROLE)]
    wanted += [(s, STRATEGY_ROLE) for s in args.strategy]
    for name, role in wanted:
        if (directory / f"{name}.key_secret").exists():
            continue
        create_key(directory, name, role)
        made.append(f"{role}:{name}")
    approval = cfg.path(cfg.risk.approval_key_file)
    existed = approval.exists()
    write_approval_key(approval)
    print(f"keys in {directory}: created {', '.join(made) if made else 'nothing (all present)'}")
    print(f"approval key {approval}: {'present' if existed else 'created'}")
    return 0


def _create(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    try:
        public, secret = create_key(keys_dir(cfg), args.name, args.role)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"created {args.role}:{args.name}\n  public (share, copy to the servers' keys dir): {public}\n"
        f"  secret (keep on this host only, mode 0600): {secret}"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    directory = keys_dir(cfg)
    allowed = load_allowed(directory) if directory.exists() else {}
    if not allowed:
        print(f"no keys in {directory}")
        return 0
    for info in sorted(allowed.values(), key=lambda k: (k.role, k.name)):
        secret = (directory / f"{info.name}.key_secret").exists()
        print(f"{info.role:9} {info.name:20} {info.public.decode()}  {'(secret here)' if secret else ''}")
    return 0


def _approval(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    path = cfg.path(cfg.risk.approval_key_file)
    existed = path.exists()
    write_approval_key(path)
    print(f"approval key {path}: {'already present' if existed else 'created'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="create and list CURVE keys for the bus, and the approval key")
    ks = p.add_subparsers(dest="keys_command", metavar="<keys command>", required=True)
    i = ks.add_parser("init", help="create keys for every actor, an operator, optional strategies, the approval key")
    i.add_argument("--operator", default="operator", help="operator key name (default: operator)")
    i.add_argument("--strategy", action="append", default=[], help="also create a key for this strategy id")
    i.set_defaults(handler=_init)
    c = ks.add_parser("create", help="create one key pair")
    c.add_argument("name", help="key name (for a strategy: its strategy id)")
    c.add_argument("--role", choices=ROLES, required=True)
    c.set_defaults(handler=_create)
    ls = ks.add_parser("list", help="list the allowed public keys")
    ls.set_defaults(handler=_list)
    a = ks.add_parser("approval", help="create the risk approval key if missing")
    a.set_defaults(handler=_approval)
