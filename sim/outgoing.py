"""Builders for the server's messages, field by field.

Each function returns the list of fields of one message (message id first).
Layouts are derived from the decoders of ib_insync 0.9.86, ib_async 2.1.0
and ibapi 10.50 at the negotiated server version (at most 176), and are
exercised against all three by the test-suite.  Unset doubles are sent as
empty fields, which every client reads as "unset".
"""

from __future__ import annotations

from datetime import datetime, timezone

from .account import MarginPreview, Position, money
from .instruments import Instrument
from .market import Bar, format_bar_time
from .messages import Out
from .orders import Execution, SimOrder
from .protocol import UNSET_DOUBLE_STR, format_float, format_quantity

#: Version gates used below (see ibapi/server_versions.py).
V_ADVANCED_ORDER_REJECT = 166
V_SIZE_RULES = 164
V_FRACTIONAL_SIZE = 163
V_DURATION = 158
V_POST_TO_ATS = 160
V_AUTO_CANCEL_PARENT = 162
V_PEGBEST_PEGMID = 170
V_FA_PROFILE_DESUPPORT = 177

Fields = list


def _price(value: float | None) -> str:
    return "" if value is None else format_float(value)


def exec_time(ts: float) -> str:
    """Execution time as IB formats it (with an explicit zone)."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y%m%d %H:%M:%S") + " UTC"


def connection_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y%m%d %H:%M:%S") + " UTC"


# -- connection ------------------------------------------------------------------


def managed_accounts(account: str) -> Fields:
    return [Out.MANAGED_ACCOUNTS, 1, account]


def next_valid_id(order_id: int) -> Fields:
    return [Out.NEXT_VALID_ID, 1, order_id]


def error(req_id: int, code: int, message: str, version: int,
          advanced_reject_json: str = "") -> Fields:
    fields: Fields = [Out.ERROR, 2, req_id, code, message]
    if version >= V_ADVANCED_ORDER_REJECT:
        fields.append(advanced_reject_json)
    return fields


def current_time(epoch: float) -> Fields:
    return [Out.CURRENT_TIME, 1, int(epoch)]


# -- contracts ---------------------------------------------------------------------


def contract_details(req_id: int, inst: Instrument, exchange: str, now: float,
                     version: int, sec_type: str | None = None) -> Fields:
    """contractDetails; ``sec_type`` overrides the type (CONTFUT answers)."""
    last = inst.last_trade_date
    if last and inst.last_trade_time:
        last = f"{last} {inst.last_trade_time.replace(':', '')[:4]}"
    fields: Fields = [Out.CONTRACT_DETAILS]
    if version < V_SIZE_RULES:
        fields.append(8)
    fields += [
        req_id, inst.symbol, sec_type or inst.sec_type, last, inst.strike_text, inst.right,
        exchange, inst.currency, inst.local_symbol, inst.trading_class, inst.trading_class,
        inst.con_id, format_float(inst.min_tick),
    ]
    if version < V_SIZE_RULES:
        fields.append(1)  # mdSizeMultiplier
    sched = inst.schedule
    fields += [
        inst.multiplier, inst.order_type_list,
        inst.valid_exchanges, 1, inst.under_con_id, inst.long_name, inst.primary_exchange,
        inst.contract_month, inst.industry, inst.category, inst.subcategory,
        sched.time_zone, sched.hours_string(now, "extended"), sched.hours_string(now, "rth"),
        "", "",  # evRule, evMultiplier
    ]
    if inst.isin:
        fields += [1, "ISIN", inst.isin]
    else:
        fields.append(0)
    market_rules = ",".join([str(inst.market_rule_id)] * len(inst.valid_exchanges.split(",")))
    fields += [
        1,  # aggGroup
        inst.under_symbol, inst.under_sec_type,
        market_rules,  # one rule per valid exchange
        inst.last_trade_date,  # realExpirationDate
        inst.stock_type if inst.sec_type == "STK" else "",
    ]
    min_size, increment, suggested = inst.size_rules
    if version == V_FRACTIONAL_SIZE:
        fields.append(format_quantity(suggested))
    elif version >= V_SIZE_RULES:
        fields += [format_quantity(min_size), format_quantity(increment), format_quantity(suggested)]
    return fields


def contract_details_end(req_id: int) -> Fields:
    return [Out.CONTRACT_DETAILS_END, 1, req_id]


# -- market data -------------------------------------------------------------------


def tick_price(req_id: int, tick_type: int, price: float, size: float,
               attrib: int = 0) -> Fields:
    return [Out.TICK_PRICE, 6, req_id, tick_type, format_float(price),
            format_quantity(size), attrib]


def tick_size(req_id: int, tick_type: int, size: float) -> Fields:
    return [Out.TICK_SIZE, 6, req_id, tick_type, format_quantity(size)]


def tick_string(req_id: int, tick_type: int, value: str) -> Fields:
    return [Out.TICK_STRING, 6, req_id, tick_type, value]


def tick_req_params(req_id: int, min_tick: float, bbo_exchange: str = "9c0001",
                    snapshot_permissions: int = 3) -> Fields:
    return [Out.TICK_REQ_PARAMS, req_id, format_float(min_tick), bbo_exchange,
            snapshot_permissions]


def market_data_type(req_id: int, data_type: int) -> Fields:
    return [Out.MARKET_DATA_TYPE, 1, req_id, data_type]


def tick_snapshot_end(req_id: int) -> Fields:
    return [Out.TICK_SNAPSHOT_END, 1, req_id]


def historical_data(req_id: int, start: str, end: str, bars: list[Bar], bar_s: int,
                    format_date: int, tz_name: str) -> Fields:
    fields: Fields = [Out.HISTORICAL_DATA, req_id, start, end, len(bars)]
    for b in bars:
        fields += [format_bar_time(b.time, bar_s, format_date, tz_name),
                   format_float(b.open), format_float(b.high), format_float(b.low),
                   format_float(b.close), format_quantity(b.volume), format_float(b.wap),
                   b.count]
    return fields


def realtime_bar(req_id: int, bar: Bar) -> Fields:
    return [Out.REAL_TIME_BAR, 3, req_id, int(bar.time), format_float(bar.open),
            format_float(bar.high), format_float(bar.low), format_float(bar.close),
            format_quantity(bar.volume), format_float(bar.wap), bar.count]


def historical_data_update(req_id: int, bar: Bar, bar_s: int, format_date: int,
                           tz_name: str) -> Fields:
    return [Out.HISTORICAL_DATA_UPDATE, req_id, bar.count,
            format_bar_time(bar.time, bar_s, format_date, tz_name),
            format_float(bar.open), format_float(bar.close), format_float(bar.high),
            format_float(bar.low), format_float(bar.wap), format_quantity(bar.volume)]


# -- account -----------------------------------------------------------------------


def account_value(key: str, value: str, currency: str, account: str) -> Fields:
    return [Out.ACCOUNT_VALUE, 2, key, value, currency, account]


def account_update_multi(req_id: int, account: str, model_code: str, key: str, value: str,
                         currency: str) -> Fields:
    return [Out.ACCOUNT_UPDATE_MULTI, 1, req_id, account, model_code, key, value, currency]


def account_update_multi_end(req_id: int) -> Fields:
    return [Out.ACCOUNT_UPDATE_MULTI_END, 1, req_id]


def account_update_time(epoch: float) -> Fields:
    return [Out.ACCOUNT_UPDATE_TIME, 1, datetime.fromtimestamp(epoch, timezone.utc).strftime("%H:%M")]


def account_download_end(account: str) -> Fields:
    return [Out.ACCOUNT_DOWNLOAD_END, 1, account]


def portfolio_value(pos: Position, price: float, value: float, unrealized: float,
                    account: str) -> Fields:
    inst = pos.instrument
    return [Out.PORTFOLIO_VALUE, 8, inst.con_id, inst.symbol, inst.sec_type,
            inst.last_trade_date, inst.strike_text, inst.right, inst.multiplier, inst.primary_exchange or inst.exchange,
            inst.currency, inst.local_symbol, inst.trading_class,
            format_quantity(pos.quantity), format_float(price), money(value),
            format_float(round(pos.avg_cost, 8)), money(unrealized), money(pos.realized_pnl),
            account]


def position(account: str, pos: Position) -> Fields:
    inst = pos.instrument
    return [Out.POSITION, 3, account, inst.con_id, inst.symbol, inst.sec_type,
            inst.last_trade_date, inst.strike_text, inst.right, inst.multiplier, inst.listing_exchange,
            inst.currency, inst.local_symbol, inst.trading_class,
            format_quantity(pos.quantity), format_float(round(pos.avg_cost, 8))]


def position_end() -> Fields:
    return [Out.POSITION_END, 1]


def position_multi(req_id: int, account: str, pos: Position, model_code: str = "") -> Fields:
    inst = pos.instrument
    return [Out.POSITION_MULTI, 1, req_id, account, inst.con_id, inst.symbol, inst.sec_type,
            inst.last_trade_date, inst.strike_text, inst.right, inst.multiplier, inst.listing_exchange,
            inst.currency, inst.local_symbol, inst.trading_class,
            format_quantity(pos.quantity), format_float(round(pos.avg_cost, 8)), model_code]


def position_multi_end(req_id: int) -> Fields:
    return [Out.POSITION_MULTI_END, 1, req_id]


def account_summary(req_id: int, account: str, tag: str, value: str, currency: str) -> Fields:
    return [Out.ACCOUNT_SUMMARY, 1, req_id, account, tag, value, currency]


def account_summary_end(req_id: int) -> Fields:
    return [Out.ACCOUNT_SUMMARY_END, 1, req_id]


def pnl(req_id: int, daily: float, unrealized: float, realized: float) -> Fields:
    return [Out.PNL, req_id, format_float(daily), format_float(unrealized),
            format_float(realized)]


def pnl_single(req_id: int, pos: float, daily: float, unrealized: float, realized: float,
               value: float) -> Fields:
    return [Out.PNL_SINGLE, req_id, format_quantity(pos), format_float(daily),
            format_float(unrealized), format_float(realized), format_float(value)]


# -- orders ------------------------------------------------------------------------


def order_status(o: SimOrder) -> Fields:
    return [Out.ORDER_STATUS, o.order_id, o.status, format_quantity(o.filled),
            format_quantity(o.remaining), format_float(o.avg_fill_price), o.perm_id,
            o.parent_id, format_float(o.last_fill_price), o.client_id, o.why_held, ""]


def _order_contract(o: SimOrder) -> Fields:
    inst = o.instrument
    exchange = o.contract.exchange or inst.exchange
    return [inst.con_id, inst.symbol, inst.sec_type, inst.last_trade_date, inst.strike_text,
            inst.right, inst.multiplier, exchange, inst.currency, inst.local_symbol, inst.trading_class]


def _what_if_block(preview: MarginPreview | None) -> Fields:
    if preview is None:
        return [UNSET_DOUBLE_STR] * 9 + [UNSET_DOUBLE_STR, UNSET_DOUBLE_STR, UNSET_DOUBLE_STR, ""]
    p = preview
    change = [p.init_after - p.init_before, p.maint_after - p.maint_before,
              p.equity_after - p.equity_before]
    return [money(p.init_before), money(p.maint_before), money(p.equity_before),
            money(change[0]), money(change[1]), money(change[2]),
            money(p.init_after), money(p.maint_after), money(p.equity_after),
            format_float(p.commission), format_float(p.commission),
            format_float(p.commission), p.currency]


def _algo(o: SimOrder) -> Fields:
    """algoStrategy, then (when set) its parameters as a count and tag/value pairs."""
    if not o.algo_strategy:
        return [""]
    fields: Fields = [o.algo_strategy, len(o.algo_params)]
    for tag, value in o.algo_params.items():
        fields += [tag, value]
    return fields


def open_order(o: SimOrder, version: int, *, what_if: MarginPreview | None = None,
               status: str | None = None) -> Fields:
    """openOrder in the field order of the clients' decoders."""
    fields: Fields = [Out.OPEN_ORDER, o.order_id]
    fields += _order_contract(o)
    fields += [
        o.action, format_quantity(o.total_quantity), o.order_type, _price(o.lmt_price),
        _price(o.aux_price), o.tif, o.oca_group, o.account, "", 0, o.order_ref,
        o.client_id, o.perm_id, int(o.outside_rth), 0, "0", "",  # hidden, discretionaryAmt, goodAfterTime
        "",  # deprecated sharesAllocation
        "", "", "",  # faGroup, faMethod, faPercentage
    ]
    if version < V_FA_PROFILE_DESUPPORT:
        fields.append("")  # faProfile
    fields += [
        "", o.good_till_date, "", "", "",  # modelCode, goodTillDate, rule80A, percentOffset, settlingFirm
        0, "", -1,  # shortSaleSlot, designatedLocation, exemptCode
        0,  # auctionStrategy
        "", "", "",  # startingPrice, stockRefPrice, delta
        "", "",  # stockRangeLower, stockRangeUpper
        "", 0, 0, 0, "", o.oca_type,  # displaySize, blockOrder, sweepToFill, allOrNone, minQty, ocaType
        0, 0, "",  # eTradeOnly, firmQuoteOnly, nbboPriceCap
        o.parent_id, 0,  # parentId, triggerMethod
        "", 0, "", "",  # volatility, volatilityType, deltaNeutralOrderType (must stay empty), deltaNeutralAuxPrice
        0, 0,  # continuousUpdate, referencePriceType
        _price(o.trail_stop), _price(o.trailing_percent),  # trailStopPrice, trailingPercent
        "", "",  # basisPoints, basisPointsType
        "", 0, 0,  # comboLegsDescrip, comboLegs count, orderComboLegs count
        0,  # smartComboRoutingParams count
        "", "", "",  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
        "",  # hedgeType
        0,  # optOutSmartRouting
        "", "",  # clearingAccount, clearingIntent
        0,  # notHeld
        0,  # deltaNeutralContract present
    ]
    fields += _algo(o)
    fields += [
        0,  # solicited
        int(what_if is not None), status or o.status,
    ]
    fields += _what_if_block(what_if)
    fields += [
        "",  # warningText
        0, 0,  # randomizeSize, randomizePrice
        0,  # conditions count
        "", "", _price(o.trail_stop), _price(o.lmt_price_offset),  # adjustedOrderType, triggerPrice, trailStopPrice, lmtPriceOffset
        "", "", "", 0,  # adjustedStopPrice, adjustedStopLimitPrice, adjustedTrailingAmount, adjustableTrailingUnit
        "", "", "",  # softDollarTier name, value, displayName
        "",  # cashQty
        0, 0, 0, 0,  # dontUseAutoPriceForHedge, isOmsContainer, discretionaryUpToLimitPrice, usePriceMgmtAlgo
    ]
    if version >= V_DURATION:
        fields.append("")
    if version >= V_POST_TO_ATS:
        fields.append("")
    if version >= V_AUTO_CANCEL_PARENT:
        fields.append(0)
    if version >= V_PEGBEST_PEGMID:
        fields += ["", "", "", "", ""]
    return fields


def open_order_end() -> Fields:
    return [Out.OPEN_ORDER_END, 1]


def completed_order(o: SimOrder, version: int, parent_perm_id: int = 0) -> Fields:
    fields: Fields = [Out.COMPLETED_ORDER]
    fields += _order_contract(o)
    fields += [
        o.action, format_quantity(o.total_quantity), o.order_type, _price(o.lmt_price),
        _price(o.aux_price), o.tif, o.oca_group, o.account, "", 0, o.order_ref, o.perm_id,
        int(o.outside_rth), 0, "0", "",  # hidden, discretionaryAmt, goodAfterTime
        "", "", "",  # faGroup, faMethod, faPercentage
    ]
    if version < V_FA_PROFILE_DESUPPORT:
        fields.append("")
    fields += [
        "", o.good_till_date, "", "", "",  # modelCode, goodTillDate, rule80A, percentOffset, settlingFirm
        0, "", -1,  # shortSaleSlot, designatedLocation, exemptCode
        "", "", "",  # startingPrice, stockRefPrice, delta
        "", "",  # stockRangeLower, stockRangeUpper
        "", 0, 0, "", o.oca_type, 0,  # displaySize, sweepToFill, allOrNone, minQty, ocaType, triggerMethod
        "", 0, "", "",  # volatility, volatilityType, deltaNeutralOrderType, deltaNeutralAuxPrice
        0, 0,  # continuousUpdate, referencePriceType
        _price(o.trail_stop), _price(o.trailing_percent),  # trailStopPrice, trailingPercent
        "", 0, 0,  # comboLegsDescrip, comboLegs, orderComboLegs
        0,  # smartComboRoutingParams
        "", "", "",  # scale
        "",  # hedgeType
        "", "",  # clearingAccount, clearingIntent
        0,  # notHeld
        0,  # deltaNeutralContract present
    ]
    fields += _algo(o)
    fields += [
        0,  # solicited
        o.status,
        0, 0,  # randomizeSize, randomizePrice
        0,  # conditions
        _price(o.trail_stop), _price(o.lmt_price_offset),  # trailStopPrice, lmtPriceOffset
        "",  # cashQty
        0, 0,  # dontUseAutoPriceForHedge, isOmsContainer
        "", format_quantity(o.filled), 0, 0,  # autoCancelDate, filledQuantity, refFuturesConId, autoCancelParent
        "", 0, 0,  # shareholder, imbalanceOnly, routeMarketableToBbo
        parent_perm_id or "",
        exec_time(o.completed_at or o.created_at), o.completed_status or o.status,
    ]
    if version >= V_PEGBEST_PEGMID:
        fields += ["", "", "", "", ""]
    return fields


def completed_orders_end() -> Fields:
    return [Out.COMPLETED_ORDERS_END]


def exec_details(req_id: int, e: Execution) -> Fields:
    inst = e.instrument
    venue = inst.listing_exchange
    return [Out.EXECUTION_DATA, req_id, e.order_id, inst.con_id, inst.symbol, inst.sec_type,
            inst.last_trade_date, inst.strike_text, inst.right, inst.multiplier, venue, inst.currency,
            inst.local_symbol, inst.trading_class, e.exec_id, exec_time(e.time), e.account,
            venue, e.side, format_quantity(e.shares), format_float(e.price), e.perm_id,
            e.client_id, 0, format_quantity(e.cum_qty), format_float(e.avg_price), e.order_ref,
            "", "", "", e.liquidity]


def exec_details_end(req_id: int) -> Fields:
    return [Out.EXECUTION_DATA_END, 1, req_id]


def commission_report(e: Execution) -> Fields:
    realized = UNSET_DOUBLE_STR if e.realized_pnl is None else format_float(round(e.realized_pnl, 6))
    return [Out.COMMISSION_REPORT, 1, e.exec_id, format_float(e.commission),
            e.commission_currency, realized, UNSET_DOUBLE_STR, ""]

