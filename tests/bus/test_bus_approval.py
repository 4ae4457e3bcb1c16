"""Risk approvals (bus/approval.py): bound to exactly one order, signed, expiring, single use; the key's loading."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import msgspec
import pytest

from bus.approval import (
    APPROVAL_KEY_BYTES, APPROVAL_KEY_ENV, USED_APPROVALS_CAPACITY, ApprovalError, ApprovalVerifier,
    load_approval_key, order_digest, sign, write_approval_key,
)
from bus.config import ConfigError
from bus.messages import Instrument, OrderSpec
from tests.support.config import cfg_of, write_config

KEY = bytes(range(32))
NOW = 1_700_000_000_000_000_000


def spec(**kw: object) -> OrderSpec:
    base: dict[str, object] = dict(strategy_id="s1", client_order_id="c1", instrument=Instrument(symbol="AAPL"),
                                   side="BUY", quantity=10, order_type="LMT", limit_price=100.0)
    base.update(kw)
    return OrderSpec(**base)  # type: ignore[arg-type]


def refused(verifier: ApprovalVerifier, approval, order: OrderSpec, **kw: object) -> str:
    with pytest.raises(ApprovalError) as info:
        verifier.verify(approval, order, **kw)  # type: ignore[arg-type]
    assert info.value.reason and str(info.value) == info.value.reason
    return info.value.code


def test_digest_covers_every_field_and_the_modify_flag() -> None:
    base = order_digest(spec())
    assert len(base) == 64 and int(base, 16) >= 0  # a sha256 hex digest
    assert order_digest(spec()) == base  # deterministic
    assert order_digest(spec(quantity=10.0)) == base  # 10 built here and 10.0 from the wire digest the same
    for changed in (spec(quantity=11), spec(side="SELL"), spec(limit_price=100.01), spec(strategy_id="s2"),
                    spec(client_order_id="c2"), spec(instrument=Instrument(symbol="MSFT")), spec(tif="GTC")):
        assert order_digest(changed) != base
    assert order_digest(spec(), is_modify=True) != base
    assert order_digest(spec(), is_modify=False) == base


def test_signature_is_an_hmac_of_id_digest_and_times() -> None:
    a = sign(KEY, spec(), ttl_s=5.0, now_ns=NOW)
    assert a.issued_wall_ns == NOW and a.expires_wall_ns == NOW + 5_000_000_000
    assert a.order_digest == order_digest(spec()) and len(a.approval_id) == 24
    msg = f"{a.approval_id}|{a.order_digest}|{a.issued_wall_ns}|{a.expires_wall_ns}".encode()
    assert a.signature == hmac.new(KEY, msg, hashlib.sha256).hexdigest()
    b = sign(KEY, spec(), ttl_s=5.0, now_ns=NOW)
    assert b.approval_id != a.approval_id  # a fresh id per approval
    modify = sign(KEY, spec(), ttl_s=5.0, is_modify=True, now_ns=NOW)
    assert modify.order_digest == order_digest(spec(), is_modify=True)
    default_clock = sign(KEY, spec(), ttl_s=1.0)
    assert default_clock.expires_wall_ns - default_clock.issued_wall_ns == 1_000_000_000


def test_a_valid_approval_is_accepted_once() -> None:
    v = ApprovalVerifier(KEY)
    a = sign(KEY, spec(), ttl_s=5.0, now_ns=NOW)
    v.verify(a, spec(), now_ns=NOW + 1)
    assert refused(v, a, spec(), now_ns=NOW + 2) == "approval.reused"


def test_an_approval_is_refused_for_another_key_order_kind_or_after_expiry() -> None:
    v = ApprovalVerifier(KEY)
    other = sign(bytes(32), spec(), ttl_s=5.0, now_ns=NOW)
    assert refused(v, other, spec(), now_ns=NOW) == "approval.bad_signature"
    a = sign(KEY, spec(), ttl_s=5.0, now_ns=NOW)
    assert refused(v, a, spec(quantity=100), now_ns=NOW) == "approval.wrong_order"
    assert refused(v, a, spec(), is_modify=True, now_ns=NOW) == "approval.wrong_order"
    tampered = msgspec.structs.replace(a, expires_wall_ns=a.expires_wall_ns + 10**12)
    assert refused(v, tampered, spec(), now_ns=NOW) == "approval.bad_signature"
    swapped = msgspec.structs.replace(a, order_digest=order_digest(spec(quantity=100)))
    assert refused(v, swapped, spec(quantity=100), now_ns=NOW) == "approval.bad_signature"
    with pytest.raises(ApprovalError) as info:
        v.verify(a, spec(), now_ns=a.expires_wall_ns + 1_500_000_000)
    assert info.value.code == "approval.expired" and "1.500s ago" in info.value.reason
    v.verify(a, spec(), now_ns=a.expires_wall_ns)  # the last instant is still valid; refusals did not use it up
    m = sign(KEY, spec(), ttl_s=5.0, is_modify=True, now_ns=NOW)
    assert refused(v, m, spec(), now_ns=NOW) == "approval.wrong_order"
    v.verify(m, spec(), is_modify=True, now_ns=NOW)


def test_an_expired_approval_is_refused_on_the_real_clock() -> None:
    v = ApprovalVerifier(KEY)
    a = sign(KEY, spec(), ttl_s=-1.0)
    assert refused(v, a, spec()) == "approval.expired"
    fresh = sign(KEY, spec(), ttl_s=60.0)
    v.verify(fresh, spec())


def test_used_ids_are_remembered_up_to_the_capacity(monkeypatch) -> None:
    import bus.approval as approval

    monkeypatch.setattr(approval, "USED_APPROVALS_CAPACITY", 3)
    v = ApprovalVerifier(KEY)
    approvals = [sign(KEY, spec(client_order_id=f"c{i}"), ttl_s=5.0, now_ns=NOW) for i in range(5)]
    for i, a in enumerate(approvals):
        v.verify(a, spec(client_order_id=f"c{i}"), now_ns=NOW)
    assert list(v._used) == [a.approval_id for a in approvals[2:]]  # the oldest forgotten first
    assert refused(v, approvals[4], spec(client_order_id="c4"), now_ns=NOW) == "approval.reused"
    assert USED_APPROVALS_CAPACITY >= 100_000


def test_key_from_the_environment_or_the_key_file(tmp_path: Path) -> None:
    cfg = cfg_of(write_config(tmp_path))
    key = load_approval_key(cfg, {APPROVAL_KEY_ENV: " " + KEY.hex() + "\n"})
    assert key == KEY
    from_file = load_approval_key(cfg, {})
    assert from_file == bytes.fromhex(cfg.path(cfg.risk.approval_key_file).read_text().strip())
    with pytest.raises(ConfigError, match=APPROVAL_KEY_ENV + " must be hex"):
        load_approval_key(cfg, {APPROVAL_KEY_ENV: "zz"})
    with pytest.raises(ConfigError, match="too short"):
        load_approval_key(cfg, {APPROVAL_KEY_ENV: "ab" * 15})
    assert load_approval_key(cfg, {APPROVAL_KEY_ENV: "ab" * 16}) == b"\xab" * 16
    keyfile = cfg.path(cfg.risk.approval_key_file)
    keyfile.write_text("not hex\n")
    with pytest.raises(ConfigError, match="does not hold a hex key"):
        load_approval_key(cfg, {})
    keyfile.unlink()
    with pytest.raises(ConfigError, match="does not exist"):
        load_approval_key(cfg, {})


def test_key_from_the_process_environment_by_default(tmp_path: Path, monkeypatch) -> None:
    cfg = cfg_of(write_config(tmp_path))
    monkeypatch.setenv(APPROVAL_KEY_ENV, KEY.hex())
    assert load_approval_key(cfg) == KEY


def test_write_approval_key_creates_a_private_random_key_once(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "approval.key"
    write_approval_key(path)
    text = path.read_text()
    assert text.endswith("\n") and len(bytes.fromhex(text.strip())) == APPROVAL_KEY_BYTES
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    write_approval_key(path)
    assert path.read_text() == text  # an existing key is never replaced
    other = tmp_path / "keys" / "second.key"
    write_approval_key(other)
    assert other.read_text() != text


def test_each_refusal_says_exactly_why() -> None:
    v = ApprovalVerifier(KEY)
    cases = []
    other = sign(bytes(32), spec(), ttl_s=5.0, now_ns=NOW)
    cases.append((other, spec(), NOW, "approval signature is not the risk governor's"))
    a = sign(KEY, spec(), ttl_s=5.0, now_ns=NOW)
    cases.append((a, spec(quantity=100), NOW, "approval was issued for a different order"))
    cases.append((a, spec(), a.expires_wall_ns + 10**15, "approval expired 1000000.000s ago"))
    for approval, order, now, reason in cases:
        with pytest.raises(ApprovalError) as info:
            v.verify(approval, order, now_ns=now)
        assert info.value.reason == reason
    v.verify(a, spec(), now_ns=NOW)
    with pytest.raises(ApprovalError) as info:
        v.verify(a, spec(), now_ns=NOW)
    assert info.value.reason == "approval was already used for an order"


def test_a_key_that_is_not_hex_is_refused_naming_the_length_wanted(tmp_path: Path) -> None:
    cfg = cfg_of(write_config(tmp_path))
    with pytest.raises(ConfigError) as info:
        load_approval_key(cfg, {APPROVAL_KEY_ENV: "not hex"})
    assert str(info.value) == f"{APPROVAL_KEY_ENV} must be hex (64 hex digits)"
