"""Risk approvals bound to exactly one order.

The risk governor signs ``(approval_id, order digest, issued, expires)`` with an HMAC-SHA256 key it shares only
with the gateway. The digest covers every field of the :class:`~bus.messages.OrderSpec` (and whether it is a
modification), so an approval for 10 AAPL cannot be reused for 100 AAPL, another symbol, another strategy or a
second order. The gateway verifies the signature, the digest, the expiry and that the approval id was never used
before; without a valid approval it refuses to place the order. Process identity (CURVE keys, issue #7) is a
second, independent layer: only the order manager and the risk governor may call the gateway's order commands.

The key comes from ``KHAZAD_APPROVAL_KEY`` (hex) or ``risk.approval_key_file``; it is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections import OrderedDict
from pathlib import Path

import msgspec

from bus.config import ConfigError, KhazadConfig
from bus.messages import Approval, OrderSpec

APPROVAL_KEY_ENV = "KHAZAD_APPROVAL_KEY"
APPROVAL_KEY_BYTES = 32
#: How many used approval ids the gateway remembers (far more than can be live within one TTL).
USED_APPROVALS_CAPACITY = 200_000

_digest_encoder = msgspec.msgpack.Encoder(order="deterministic")
_order_decoder = msgspec.msgpack.Decoder(OrderSpec)


def order_digest(order: OrderSpec, *, is_modify: bool = False) -> str:
    """Canonical digest of an order: every field, deterministic encoding. The order is normalised through one
    decode first, so ``quantity=10`` built in-process and ``10.0`` decoded from the wire digest the same."""
    order = _order_decoder.decode(_digest_encoder.encode(order))
    payload = _digest_encoder.encode((order, is_modify))
    return hashlib.sha256(payload).hexdigest()


def _mac(key: bytes, approval_id: str, digest: str, issued: int, expires: int) -> str:
    msg = f"{approval_id}|{digest}|{issued}|{expires}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def sign(key: bytes, order: OrderSpec, *, ttl_s: float, is_modify: bool = False, now_ns: int | None = None) -> Approval:
    issued = time.time_ns() if now_ns is None else now_ns
    expires = issued + int(ttl_s * 1e9)
    approval_id = secrets.token_hex(12)
    digest = order_digest(order, is_modify=is_modify)
    return Approval(
        approval_id=approval_id,
        order_digest=digest,
        issued_wall_ns=issued,
        expires_wall_ns=expires,
        signature=_mac(key, approval_id, digest, issued, expires),
    )


class ApprovalError(Exception):
    """Why an approval is not valid for this order (the gateway sends the reason back)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ApprovalVerifier:
    """The gateway's side: verify signature, binding, expiry, and single use."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._used: OrderedDict[str, None] = OrderedDict()

    def verify_genuine(self, approval: Approval, order: OrderSpec, *, is_modify: bool = False) -> None:
        """The governor signed ``approval`` for exactly ``order`` (whether it is still usable is :meth:`verify`'s
        question): what the gateway requires before it answers anything about the order, even ``Duplicate``."""
        expected = _mac(
            self._key, approval.approval_id, approval.order_digest, approval.issued_wall_ns, approval.expires_wall_ns
        )
        if not hmac.compare_digest(expected, approval.signature):
            raise ApprovalError("approval.bad_signature", "approval signature is not the risk governor's")
        if not hmac.compare_digest(approval.order_digest, order_digest(order, is_modify=is_modify)):
            raise ApprovalError("approval.wrong_order", "approval was issued for a different order")

    def verify(
        self, approval: Approval, order: OrderSpec, *, is_modify: bool = False, now_ns: int | None = None
    ) -> None:
        """Genuine (:meth:`verify_genuine`), not expired, never used before; marks it used."""
        self.verify_genuine(approval, order, is_modify=is_modify)
        now = time.time_ns() if now_ns is None else now_ns
        if now > approval.expires_wall_ns:
            raise ApprovalError(
                "approval.expired", f"approval expired {(now - approval.expires_wall_ns) / 1e9:.3f}s ago"
            )
        if approval.approval_id in self._used:
            raise ApprovalError("approval.reused", "approval was already used for an order")
        self._used[approval.approval_id] = None
        while len(self._used) > USED_APPROVALS_CAPACITY:
            self._used.popitem(last=False)


def load_approval_key(cfg: KhazadConfig, env: dict[str, str] | None = None) -> bytes:
    """The shared signing key, or :class:`ConfigError` naming what to set."""
    env = dict(os.environ) if env is None else env
    raw = env.get(APPROVAL_KEY_ENV, "").strip()
    if raw:
        try:
            key = bytes.fromhex(raw)
        except ValueError:
            raise ConfigError(f"{APPROVAL_KEY_ENV} must be hex ({APPROVAL_KEY_BYTES * 2} hex digits)") from None
    else:
        path = cfg.path(cfg.risk.approval_key_file)
        try:
            key = bytes.fromhex(path.read_text().strip())
        except FileNotFoundError:
            raise ConfigError(
                f"risk.approval_key_file: {path} does not exist; run `khazad keys approval` or set {APPROVAL_KEY_ENV}"
            ) from None
        except ValueError:
            raise ConfigError(f"risk.approval_key_file: {path} does not hold a hex key") from None
    if len(key) < 16:
        raise ConfigError(f"approval key too short ({len(key)} bytes); need at least 16")
    return key


def write_approval_key(path: Path) -> None:
    """Create a new random key file readable only by its owner (no-op if it exists)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(APPROVAL_KEY_BYTES) + "\n")
