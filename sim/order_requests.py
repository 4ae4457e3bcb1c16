"""Parsers of the order requests: placeOrder and cancelOrder.

Field positions follow ``client.placeOrder`` of ib_insync 0.9.86, ib_async 2.1
and ibapi 10.50 at server version 176 (they agree field for field).  The
parser walks the whole message: the fields after ``whatIf`` (order
conditions, ``lmtPriceOffset``, ``cashQty``, ...) are read when present and
defaulted when a bare client stops early.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .protocol import FieldReader, ProtocolError
from .requests import ContractSpec, read_contract, with_sec_id

#: placeOrder sends faProfile only before this version.
FA_PROFILE_DESUPPORT = 177
#: cancelOrder carries manualOrderCancelTime from this version.
MANUAL_ORDER_TIME = 169
#: Fields each order condition type carries after its type field
#: (price, time, margin, execution, volume, percent change).
CONDITION_FIELDS = {1: 6, 3: 3, 4: 3, 5: 4, 6: 5, 7: 5}


@dataclass(frozen=True)
class PlaceOrder:
    """The parts of placeOrder the simulator acts on."""

    order_id: int
    contract: ContractSpec
    action: str
    total_quantity: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str
    oca_group: str
    account: str
    order_ref: str
    transmit: bool
    parent_id: int
    outside_rth: bool
    good_after_time: str
    good_till_date: str
    oca_type: int
    what_if: bool
    #: the TIF exactly as sent ("" when the client left it to the preset)
    tif_sent: str = "DAY"
    trail_stop_price: float | None = None
    trailing_percent: float | None = None
    algo_strategy: str = ""
    algo_params: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    conditions: int = 0
    lmt_price_offset: float | None = None
    cash_qty: float | None = None

    @property
    def algo(self) -> dict[str, str]:
        return dict(self.algo_params)


def _skip_conditions(r: FieldReader, count: int) -> None:
    for _ in range(count):
        kind = r.int()
        if kind not in CONDITION_FIELDS:
            raise ProtocolError(f"unknown order condition type {kind}")
        r.skip(CONDITION_FIELDS[kind])
    r.skip(2)  # conditionsIgnoreRth, conditionsCancelOrder


def read_place_order(r: FieldReader, version: int) -> PlaceOrder:
    """Walk placeOrder (see the module docstring)."""
    order_id = r.int()
    contract = read_contract(r)
    contract = with_sec_id(contract, r.str(), r.str())
    action = r.str().upper()
    total_quantity = r.float(0.0) or 0.0
    order_type = r.str().upper()
    lmt_price = r.float()
    aux_price = r.float()
    tif_sent = r.str().upper()
    oca_group = r.str()
    account = r.str()
    r.skip(2)  # openClose, origin
    order_ref = r.str()
    transmit = r.bool()
    parent_id = r.int()
    r.skip(4)  # blockOrder, sweepToFill, displaySize, triggerMethod
    outside_rth = r.bool()
    r.skip(1)  # hidden
    if contract.sec_type == "BAG":
        legs = r.int()
        r.skip(8 * legs)
        order_legs = r.int()
        r.skip(order_legs)
        params = r.int()
        r.skip(2 * params)
    r.skip(1)  # deprecated sharesAllocation
    r.skip(1)  # discretionaryAmt
    good_after_time = r.str()
    good_till_date = r.str()
    r.skip(3)  # faGroup, faMethod, faPercentage
    if version < FA_PROFILE_DESUPPORT:
        r.skip(1)  # faProfile
    r.skip(1)  # modelCode
    r.skip(3)  # shortSaleSlot, designatedLocation, exemptCode
    oca_type = r.int()
    r.skip(2)  # rule80A, settlingFirm
    r.skip(3)  # allOrNone, minQty, percentOffset
    r.skip(3)  # eTradeOnly, firmQuoteOnly, nbboPriceCap
    r.skip(1)  # auctionStrategy
    r.skip(5)  # startingPrice, stockRefPrice, delta, stockRangeLower/Upper
    r.skip(1)  # overridePercentageConstraints
    r.skip(2)  # volatility, volatilityType
    delta_neutral_order_type = r.str()
    r.skip(1)  # deltaNeutralAuxPrice
    if delta_neutral_order_type:
        r.skip(8)
    r.skip(2)  # continuousUpdate, referencePriceType
    trail_stop_price = r.float()
    trailing_percent = r.float()
    r.skip(2)  # scaleInitLevelSize, scaleSubsLevelSize
    increment = r.float()
    if increment is not None and increment > 0:
        r.skip(7)
    r.skip(3)  # scaleTable, activeStartTime, activeStopTime
    if r.str():  # hedgeType
        r.skip(1)  # hedgeParam
    r.skip(1)  # optOutSmartRouting
    r.skip(2)  # clearingAccount, clearingIntent
    r.skip(1)  # notHeld
    if r.bool():  # deltaNeutralContract present
        r.skip(3)
    algo_strategy = r.str()
    algo_params: list[tuple[str, str]] = []
    if algo_strategy:
        for _ in range(r.int()):
            algo_params.append((r.str(), r.str()))
    r.skip(1)  # algoId
    what_if = r.bool()
    conditions, lmt_price_offset, cash_qty = 0, None, None
    if r.remaining() >= 4:
        r.skip(4)  # orderMiscOptions, solicited, randomizeSize, randomizePrice
        if order_type == "PEG BENCH":
            r.skip(5)
        conditions = r.int()
        if conditions:
            _skip_conditions(r, conditions)
        r.skip(2)  # adjustedOrderType, triggerPrice
        lmt_price_offset = r.float()
        r.skip(4)  # adjustedStopPrice, adjustedStopLimitPrice, adjustedTrailingAmount, adjustableTrailingUnit
        r.skip(1)  # extOperator
        r.skip(2)  # softDollarTier name, value
        cash_qty = r.float()
    return PlaceOrder(
        order_id=order_id, contract=contract, action=action,
        total_quantity=total_quantity, order_type=order_type,
        lmt_price=lmt_price, aux_price=aux_price, tif=tif_sent or "DAY",
        oca_group=oca_group, account=account, order_ref=order_ref,
        transmit=transmit, parent_id=parent_id, outside_rth=outside_rth,
        good_after_time=good_after_time, good_till_date=good_till_date,
        oca_type=oca_type, what_if=what_if, tif_sent=tif_sent,
        trail_stop_price=trail_stop_price, trailing_percent=trailing_percent,
        algo_strategy=algo_strategy, algo_params=tuple(algo_params),
        conditions=conditions, lmt_price_offset=lmt_price_offset, cash_qty=cash_qty)


def read_cancel_order(r: FieldReader, version: int) -> int:
    r.skip(1)  # version
    order_id = r.int()
    if version >= MANUAL_ORDER_TIME:
        r.opt_str()
    return order_id
