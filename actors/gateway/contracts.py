"""Instruments qualified by IB: every instrument becomes IB's contract (its conId) and IB's contract details.

:meth:`ContractCache.resolve` asks IB (reqContractDetails, plus reqMarketRule for the price increments) once per
instrument and caches the answer by instrument and by conId. A strategy's instrument may say less than IB (a
symbol and a type, an expiry month, no multiplier) but never something different:

* IB knows no such contract: ``unknown_symbol``; unless it knows it in another currency: ``contract_mismatch``;
* several contracts match (``ES`` without an expiry): ``ambiguous_contract``, listing them;
* the instrument's multiplier, currency, type, expiry, strike or right contradicts IB's: ``contract_mismatch``.

The multiplier never takes part in the lookup (it does not identify a contract): a wrong one comes back as a
mismatch, never as "no such contract". The first qualification of a conId is published on ``instrument.<conId>``
(:class:`~bus.messages.InstrumentEvent`) for every actor's cache. Details are asked again after
:data:`DETAILS_TTL_S` (IB's trading hours list about a week); while IB cannot answer, the older details serve.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from loguru import logger

from actors.gateway import libtypes as lib
from actors.gateway.convert import contract_info, multiplier_value
from actors.gateway.ib import IB_REQUEST_TIMEOUT_S, IbSession
from actors.gateway.outbox import Outbox
from bus.messages import ContractInfo, Instrument, InstrumentEvent

#: Refresh contract details this often (trading hours move on; IB lists about seven days).
DETAILS_TTL_S = 6 * 3600.0
#: A multiplier within this relative distance of IB's is IB's (``"50"`` vs ``"50.0"``).
MULTIPLIER_TOLERANCE = 1e-9
#: How many matching contracts an ambiguity reason lists.
AMBIGUOUS_LISTED = 8

UNKNOWN = "unknown_symbol"
AMBIGUOUS = "ambiguous_contract"
MISMATCH = "contract_mismatch"


@dataclass(frozen=True, slots=True)
class Qualified:
    """IB's contract (what orders and market data are requested with) and its details."""

    info: ContractInfo
    contract: lib.Contract
    at_mono: float

    @property
    def con_id(self) -> int:
        return self.info.con_id


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an instrument is not one IB contract: ``code`` is one of UNKNOWN, AMBIGUOUS, MISMATCH."""

    code: str
    reason: str


def contradiction(inst: Instrument, info: ContractInfo) -> str | None:
    """What ``inst`` says that IB's contract contradicts (None when it only says less)."""
    ib = info.instrument
    name = info.display
    if inst.multiplier and not math.isclose(
        multiplier_value(inst.multiplier), info.multiplier, rel_tol=MULTIPLIER_TOLERANCE
    ):
        return f"multiplier {inst.multiplier} contradicts IB's multiplier {info.multiplier:g} for {name}"
    if inst.currency and inst.currency.upper() != ib.currency.upper():
        return f"currency {inst.currency} contradicts IB's currency {ib.currency} for {name}"
    if inst.sec_type != ib.sec_type:
        return f"type {inst.sec_type} contradicts IB's type {ib.sec_type} for {name} (conId {ib.con_id})"
    if inst.symbol.upper() not in (ib.symbol.upper(), ib.local_symbol.upper()):
        return f"symbol {inst.symbol} contradicts IB's symbol {ib.symbol} for conId {ib.con_id}"
    if inst.last_trade_date and not ib.last_trade_date.startswith(inst.last_trade_date.split(" ")[0]):
        return f"expiry {inst.last_trade_date} contradicts IB's expiry {ib.last_trade_date} for {name}"
    if inst.strike and not math.isclose(inst.strike, ib.strike, rel_tol=1e-9):
        return f"strike {inst.strike:g} contradicts IB's strike {ib.strike:g} for {name}"
    if inst.right and inst.right != ib.right:
        return f"right {inst.right} contradicts IB's right {ib.right} for {name}"
    return None


def describe(inst: Instrument) -> str:
    parts = [inst.symbol, inst.sec_type, inst.exchange, inst.currency]
    if inst.last_trade_date:
        parts.append(inst.last_trade_date)
    if inst.sec_type == "OPT":
        parts += [f"{inst.strike:g}", inst.right]
    if inst.con_id:
        parts.append(f"conId {inst.con_id}")
    return " ".join(p for p in parts if p)


class ContractCache:
    """Instrument -> IB's contract and details (see module docstring)."""

    def __init__(self, session: IbSession, outbox: Outbox, *, timeout_s: float = IB_REQUEST_TIMEOUT_S) -> None:
        self.session = session
        self.outbox = outbox
        self.timeout_s = timeout_s
        self._by_instrument: dict[Instrument, Qualified] = {}
        self._by_con_id: dict[int, Qualified] = {}
        self._rules: dict[int, list[tuple[float, float]]] = {}
        self._inflight: dict[Instrument, asyncio.Future[Qualified | Refusal]] = {}

    # -- queries ---------------------------------------------------------------------------------------------

    def known(self, con_id: int) -> Qualified | None:
        return self._by_con_id.get(con_id)

    def cached(self, inst: Instrument) -> Qualified | None:
        """What ``inst`` was qualified as, if it was (no IB request)."""
        return self._by_instrument.get(inst)

    def infos(self, con_ids: set[int]) -> list[ContractInfo]:
        return [q.info for c in sorted(con_ids) if (q := self._by_con_id.get(c)) is not None]

    async def get(self, inst: Instrument) -> lib.Contract | None:
        """IB's contract for ``inst``, or None when it is not exactly one IB contract."""
        found = await self.resolve(inst)
        return found.contract if isinstance(found, Qualified) else None

    async def resolve(self, inst: Instrument) -> Qualified | Refusal:
        """Qualify ``inst`` (cached). Raises TimeoutError/ConnectionError when IB cannot answer and nothing is
        cached."""
        hit = self._by_instrument.get(inst)
        now = time.monotonic()
        if hit is not None and now - hit.at_mono < DETAILS_TTL_S:
            return hit
        pending = self._inflight.get(inst)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Qualified | Refusal] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        self._inflight[inst] = fut
        try:
            try:
                found = await self._lookup(inst)
            except (TimeoutError, ConnectionError):
                if hit is not None:  # IB cannot answer now: the details we have are still IB's
                    found = hit
                else:
                    raise
            fut.set_result(found)
            return found
        except BaseException as exc:
            fut.set_exception(exc)
            raise
        finally:
            self._inflight.pop(inst, None)

    # -- IB ----------------------------------------------------------------------------------------------------

    async def all_details(self, inst: Instrument) -> list[ContractInfo]:
        """IB's details of every contract ``inst`` matches (all expiries of a future), not cached; empty when IB
        has none. Raises TimeoutError/ConnectionError."""
        details = await self.session.contract_details(self.session.make_contract(inst), self.timeout_s)
        return [contract_info(d, await self._increments(d)) for d in details]

    async def _lookup(self, inst: Instrument) -> Qualified | Refusal:
        known = self._by_con_id.get(inst.con_id) if inst.con_id else None
        if known is not None and time.monotonic() - known.at_mono < DETAILS_TTL_S:
            return self._keep(inst, known)
        details = await self.session.contract_details(self.session.make_contract(inst), self.timeout_s)
        if not details:
            if inst.currency and not inst.con_id:
                other = await self.session.contract_details(
                    self.session.make_contract(inst, with_currency=False), self.timeout_s
                )
                currencies = sorted({d.contract.currency for d in other if d.contract is not None})
                if currencies:
                    return Refusal(
                        MISMATCH,
                        f"IB has {describe(inst)} only in {', '.join(currencies)}: currency {inst.currency} "
                        f"contradicts IB's",
                    )
            return Refusal(UNKNOWN, f"IB has no security definition for {describe(inst)} (IB 200)")
        if len(details) > 1:
            names = sorted((d.contract.localSymbol or str(d.contract.conId)) for d in details if d.contract is not None)
            listed = ", ".join(names[:AMBIGUOUS_LISTED]) + (", ..." if len(names) > AMBIGUOUS_LISTED else "")
            return Refusal(
                AMBIGUOUS,
                f"{describe(inst)} matches {len(details)} IB contracts ({listed}): say which "
                f"(expiry, strike, right, exchange, currency or conId)",
            )
        d = details[0]
        info = contract_info(d, await self._increments(d))
        qualified = Qualified(info=info, contract=d.contract, at_mono=time.monotonic())  # type: ignore[arg-type]
        first = info.con_id not in self._by_con_id
        self._by_con_id[info.con_id] = qualified
        if first:
            logger.info(
                "gateway: qualified {} as {} (conId {}, multiplier {:g}, {}, tick {:g}, size increment {:g})",
                describe(inst),
                info.display,
                info.con_id,
                info.multiplier,
                info.instrument.currency,
                info.min_tick,
                info.size_increment,
            )
            self.outbox.instrument(InstrumentEvent(info=info))
        return self._keep(inst, qualified)

    def _keep(self, inst: Instrument, qualified: Qualified) -> Qualified | Refusal:
        problem = contradiction(inst, qualified.info)
        if problem is not None:
            logger.warning("gateway: {}: {}", describe(inst), problem)
            return Refusal(MISMATCH, problem)
        self._by_instrument[inst] = qualified
        return qualified

    async def _increments(self, details: lib.ContractDetails) -> list[tuple[float, float]]:
        ids = [int(x) for x in (details.marketRuleIds or "").split(",") if x.strip().isdigit()]
        if not ids:
            return []
        rule = ids[0]
        if rule not in self._rules:
            try:
                self._rules[rule] = await self.session.market_rule(rule, self.timeout_s)
            except TimeoutError:
                logger.warning("gateway: market rule {} not answered; the min tick applies", rule)
                return []
        return self._rules[rule]
