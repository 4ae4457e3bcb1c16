"""The paper account: cash per currency, positions, P&L and margin.

Accounting follows IB's conventions:

* stocks and options exchange their notional for cash; an FX trade moves
  both currencies' cash (buying EUR.USD adds EUR and spends USD: IB's
  per-currency ledger), the pair stays a portfolio position whose value is
  that cash, so it is not counted again in NetLiquidation; futures only
  move cash by realized P&L and commissions (their open P&L is unrealized);
* a position's average cost includes commissions, as IB's does, so the
  realized P&L of a round trip is net of both commissions;
* monetary totals are in the account's base currency, converted at the FX
  market's rates (``sim.fx``), as IB's ExchangeRate values move with it;
* daily P&L follows IB's formula and reset schedule (``sim.pnl``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .fx import FxRates
from .instruments import Instrument, InstrumentUniverse
from .market import Market
from .pnl import ResetClock

#: Margin accounts get 4x intraday buying power on their available funds.
BUYING_POWER_MULTIPLIER = 4.0
#: Maintenance margin as a share of initial margin.
MAINT_MARGIN_RATIO = 0.8
#: Quantities closer to zero than this count as flat (fractional FX sizes).
QTY_EPSILON = 1e-9

#: Account summary tags the simulator answers (AccountSummaryTags.AllTags).
SUMMARY_TAGS = (
    "AccountType", "NetLiquidation", "TotalCashValue", "SettledCash", "AccruedCash",
    "BuyingPower", "EquityWithLoanValue", "PreviousDayEquityWithLoanValue",
    "GrossPositionValue", "RegTEquity", "RegTMargin", "SMA", "InitMarginReq",
    "MaintMarginReq", "AvailableFunds", "ExcessLiquidity", "Cushion",
    "FullInitMarginReq", "FullMaintMarginReq", "FullAvailableFunds",
    "FullExcessLiquidity", "LookAheadNextChange", "LookAheadInitMarginReq",
    "LookAheadMaintMarginReq", "LookAheadAvailableFunds", "LookAheadExcessLiquidity",
    "HighestSeverity", "DayTradesRemaining", "Leverage",
)


def money(x: float) -> str:
    return f"{x:.2f}"


@dataclass
class Position:
    """Holding in one contract; ``avg_price`` is per unit, commissions included."""

    instrument: Instrument
    quantity: float = 0.0
    avg_price: float = 0.0
    realized_pnl: float = 0.0
    #: average trade price without commissions (futures cash settlement)
    avg_raw: float = 0.0
    #: daily P&L state since the last reset: position and mark at the reset,
    #: cash the day's trades moved (commissions included), realized today
    day_quantity: float = 0.0
    day_price: float = 0.0
    day_traded: float = 0.0
    day_realized: float = 0.0
    next_reset: float = 0.0

    @property
    def avg_cost(self) -> float:
        """IB's averageCost: per unit times the multiplier."""
        return self.avg_price * self.instrument.mult


@dataclass(frozen=True)
class FillResult:
    """What booking one execution did to the account."""

    realized_pnl: float | None  # None when the fill only opened/increased
    commission: float
    currency: str


@dataclass(frozen=True)
class MarginPreview:
    """What-if figures for an order (strings as IB sends them)."""

    init_before: float
    maint_before: float
    equity_before: float
    init_after: float
    maint_after: float
    equity_after: float
    commission: float
    currency: str


class Account:
    """One paper account (``DU...``) kept consistent as fills happen."""

    def __init__(self, account_id: str, base_currency: str, starting_cash: float,
                 universe: InstrumentUniverse, market: Market,
                 reset_clock: ResetClock | None = None, now: float | None = None) -> None:
        if base_currency not in universe.fx_rates:
            raise ValueError(f"no fx rate for base currency {base_currency}")
        self.account_id = account_id
        self.base = base_currency
        self.universe = universe
        self.market = market
        self.rates = FxRates(universe, market)
        self.reset_clock = reset_clock or ResetClock()
        self.now = market.t0 if now is None else now
        self.cash: dict[str, float] = {base_currency: starting_cash}
        self.positions: dict[int, Position] = {}
        self.realized_by_ccy: dict[str, float] = {}
        self.commissions_paid = 0.0

    # -- booking -----------------------------------------------------------

    def commission_for(self, inst: Instrument, quantity: float, price: float) -> float:
        return self.universe.commission_model(inst.sec_type).commission(quantity, price, inst.mult)

    def apply_fill(self, inst: Instrument, side: str, quantity: float, price: float,
                   commission: float) -> FillResult:
        """Book an execution; ``side`` is BUY or SELL."""
        sign = 1.0 if side == "BUY" else -1.0
        mult = inst.mult
        ccy = inst.currency
        pos = self.positions.get(inst.con_id)
        if pos is None:
            pos = self.positions[inst.con_id] = Position(
                inst, next_reset=self.reset_clock.next_reset(inst, self.now))
        # cash: notional for stocks/options/FX, never for futures; commission always
        if inst.sec_type != "FUT":
            self.cash[ccy] = self.cash.get(ccy, 0.0) - sign * quantity * price * mult
        if inst.sec_type == "CASH":
            # the pair's base currency is bought or sold too (IB's ledger)
            self.cash[inst.symbol] = self.cash.get(inst.symbol, 0.0) + sign * quantity * mult
        self.cash[ccy] = self.cash.get(ccy, 0.0) - commission
        self.commissions_paid += self.rates.convert(commission, ccy, self.base)
        pos.day_traded += -sign * quantity * price * mult - commission

        realized: float | None = None
        old = pos.quantity
        per_unit_comm = commission / (quantity * mult) if quantity else 0.0
        if old == 0 or (old > 0) == (sign > 0):
            # opening or adding: the commission goes into the average cost
            new_qty = old + sign * quantity
            cost = abs(old) * pos.avg_price + quantity * (price + sign * per_unit_comm)
            pos.avg_price = cost / abs(new_qty)
            pos.avg_raw = (abs(old) * pos.avg_raw + quantity * price) / abs(new_qty)
            pos.quantity = new_qty
        else:
            closing = min(quantity, abs(old))
            opening = quantity - closing
            direction = 1.0 if old > 0 else -1.0
            realized = (price - pos.avg_price) * closing * mult * direction
            realized -= per_unit_comm * closing * mult
            pos.realized_pnl += realized
            if inst.sec_type == "FUT":
                # futures settle the trading P&L in cash; commissions were
                # already taken from cash when each fill was booked
                self.cash[ccy] = self.cash.get(ccy, 0.0) + (price - pos.avg_raw) * closing * mult * direction
            self.realized_by_ccy[ccy] = self.realized_by_ccy.get(ccy, 0.0) + realized
            pos.day_realized += realized
            remaining = old + sign * closing
            if opening > QTY_EPSILON:
                pos.quantity = sign * opening
                pos.avg_price = price + sign * per_unit_comm
                pos.avg_raw = price
            else:
                pos.quantity = 0.0 if abs(remaining) < QTY_EPSILON else remaining
                if pos.quantity == 0.0:
                    pos.avg_price = 0.0
                    pos.avg_raw = 0.0
        return FillResult(realized, commission, ccy)

    def rebuild(self, starting_cash: float,
                fills: list[tuple[Instrument, str, float, float, float]]) -> None:
        """Replay a ledger of (instrument, side, qty, price, commission) from scratch.

        Used for execution corrections: the corrected ledger is replayed, so
        cash, positions and P&L stay exactly consistent with the fills.
        """
        self.cash = {self.base: starting_cash}
        self.positions = {}
        self.realized_by_ccy = {}
        self.commissions_paid = 0.0
        for inst, side, qty, price, commission in fills:
            self.apply_fill(inst, side, qty, price, commission)

    # -- valuation -----------------------------------------------------------

    def _base(self, amount: float, ccy: str) -> float:
        return self.rates.convert(amount, ccy, self.base)

    # -- daily P&L -----------------------------------------------------------

    def roll_days(self, now: float) -> list[int]:
        """Start a new P&L day for every position whose reset time passed."""
        self.now = now
        rolled = []
        for con_id, pos in self.positions.items():
            if pos.next_reset and now >= pos.next_reset:
                pos.day_quantity = pos.quantity
                pos.day_price = self.market.mark_price(pos.instrument)
                pos.day_traded = 0.0
                pos.day_realized = 0.0
                pos.next_reset = self.reset_clock.next_reset(pos.instrument, now)
                rolled.append(con_id)
        return rolled

    def daily_pnl(self, pos: Position) -> float:
        """IB's daily P&L of one position, in its currency."""
        mult = pos.instrument.mult
        mark = self.market.mark_price(pos.instrument)
        return pos.quantity * mark * mult - pos.day_quantity * pos.day_price * mult + pos.day_traded

    def pnl_single(self, con_id: int) -> tuple[float, float, float, float, float]:
        """reqPnLSingle: (position, daily, unrealized, realized today, value) in base currency."""
        pos = self.positions.get(con_id)
        if pos is None:
            return 0.0, 0.0, 0.0, 0.0, 0.0
        _, value, unrealized = self.position_value(pos)
        ccy = pos.instrument.currency
        return (pos.quantity, self._base(self.daily_pnl(pos), ccy), self._base(unrealized, ccy),
                self._base(pos.day_realized, ccy), self._base(value, ccy))

    def pnl(self) -> tuple[float, float, float]:
        """reqPnL: (daily, unrealized, realized today) in base currency."""
        daily = unrealized = realized = 0.0
        for con_id in self.positions:
            _, d, u, r, _ = self.pnl_single(con_id)
            daily, unrealized, realized = daily + d, unrealized + u, realized + r
        return daily, unrealized, realized

    def position_value(self, pos: Position) -> tuple[float, float, float]:
        """(market price, market value, unrealized P&L) in the contract's currency."""
        inst = pos.instrument
        price = self.market.mark_price(inst)
        value = pos.quantity * price * inst.mult
        unrealized = (price - pos.avg_price) * pos.quantity * inst.mult if pos.quantity else 0.0
        return price, value, unrealized

    def _margin(self, inst: Instrument, quantity: float, price: float) -> float:
        if inst.margin_per_contract:
            return abs(quantity) * inst.margin
        return abs(quantity) * price * inst.mult * inst.margin

    def totals(self, extra: tuple[Instrument, float] | None = None,
               cash_delta: float = 0.0) -> dict[str, float]:
        """Key account figures in the base currency.

        ``extra`` adds a hypothetical (instrument, signed quantity) for
        what-if previews and margin checks.
        """
        cash = sum(self._base(v, c) for c, v in self.cash.items()) + cash_delta
        gross = 0.0
        stock_value = 0.0
        option_value = 0.0
        unrealized = 0.0
        futures_pnl = 0.0
        init = 0.0
        hypo: dict[int, float] = {}
        if extra is not None:
            hypo[extra[0].con_id] = extra[1]
            inst = extra[0]
            if inst.sec_type != "FUT":
                # buying moves cash into the position: value neutral
                cash -= self._base(extra[1] * self.market.mark_price(inst) * inst.mult,
                                   inst.currency)
            if inst.sec_type == "CASH":
                cash += self._base(extra[1] * inst.mult, inst.symbol)
        holdings = {con_id: (pos.instrument, pos) for con_id, pos in self.positions.items()}
        for con_id in hypo:
            if con_id not in holdings:
                holdings[con_id] = (self.universe.by_con_id[con_id], None)
        for con_id, (inst, pos) in holdings.items():
            qty = (pos.quantity if pos else 0.0) + hypo.get(con_id, 0.0)
            price = self.market.mark_price(inst)
            value = self._base(qty * price * inst.mult, inst.currency)
            if pos is not None and pos.quantity:
                upnl = self._base((price - pos.avg_price) * pos.quantity * inst.mult, inst.currency)
                unrealized += upnl
                if inst.sec_type == "FUT":
                    # open futures P&L in net liquidation is measured from the
                    # raw trade price: the commissions are already out of cash
                    futures_pnl += self._base((price - pos.avg_raw) * pos.quantity * inst.mult,
                                              inst.currency)
            if inst.sec_type == "OPT":
                option_value += value
                gross += abs(value)
            elif inst.sec_type not in ("FUT", "CASH"):  # FX positions are cash
                stock_value += value
                gross += abs(value)
            init += self._base(self._margin(inst, qty, price), inst.currency)
        net_liq = cash + stock_value + option_value + futures_pnl
        maint = init * MAINT_MARGIN_RATIO
        available = net_liq - init
        excess = net_liq - maint
        realized = sum(self._base(v, c) for c, v in self.realized_by_ccy.items())
        return {
            "NetLiquidation": net_liq, "TotalCashValue": cash,
            "GrossPositionValue": gross, "StockMarketValue": stock_value,
            "OptionMarketValue": option_value,
            "FuturesPNL": futures_pnl, "UnrealizedPnL": unrealized, "RealizedPnL": realized,
            "EquityWithLoanValue": net_liq, "InitMarginReq": init, "MaintMarginReq": maint,
            "AvailableFunds": available, "ExcessLiquidity": excess,
            "BuyingPower": max(0.0, available * BUYING_POWER_MULTIPLIER),
            "Cushion": excess / net_liq if net_liq else 0.0,
            "Leverage": gross / net_liq if net_liq else 0.0,
        }

    def margin_preview(self, inst: Instrument, side: str, quantity: float,
                       price: float) -> MarginPreview:
        before = self.totals()
        sign = 1.0 if side == "BUY" else -1.0
        commission = self.commission_for(inst, quantity, price)
        after = self.totals((inst, sign * quantity),
                            cash_delta=-self._base(commission, inst.currency))
        return MarginPreview(before["InitMarginReq"], before["MaintMarginReq"],
                             before["EquityWithLoanValue"], after["InitMarginReq"],
                             after["MaintMarginReq"], after["EquityWithLoanValue"],
                             commission, inst.currency)

    def check_margin(self, inst: Instrument, side: str, quantity: float,
                     price: float) -> str | None:
        """None if the order is acceptable, else IB's rejection text."""
        p = self.margin_preview(inst, side, quantity, price)
        if p.init_after > p.equity_after and p.init_after > p.init_before:
            return (f"YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE DESIRED POSITION "
                    f"YOUR EQUITY WITH LOAN VALUE [{p.equity_after:.2f} {self.base}] MUST "
                    f"EXCEED THE INITIAL MARGIN [{p.init_after:.2f} {self.base}]")
        return None

    # -- reporting -----------------------------------------------------------

    def net_liquidation_by_currency(self) -> dict[str, float]:
        """NetLiquidation per currency (cash + securities + open futures P&L), unconverted."""
        out = {c: v for c, v in self.cash.items()}
        for pos in self.positions.values():
            inst = pos.instrument
            if not pos.quantity or inst.sec_type == "CASH":
                continue
            price, value, _ = self.position_value(pos)
            if inst.sec_type == "FUT":
                value = (price - pos.avg_raw) * pos.quantity * inst.mult
            out[inst.currency] = out.get(inst.currency, 0.0) + value
        return out

    def currencies(self) -> list[str]:
        ccys = set(self.cash) | set(self.realized_by_ccy) | {self.base}
        ccys |= {p.instrument.currency for p in self.positions.values()}
        return sorted(ccys)

    def account_values(self) -> list[tuple[str, str, str]]:
        """(key, value, currency) rows for updateAccountValue, IB's spelling."""
        t = self.totals()
        b = self.base
        rows: list[tuple[str, str, str]] = [
            ("AccountCode", self.account_id, ""),
            ("AccountReady", "true", ""),
            ("AccountType", "INDIVIDUAL", ""),
        ]
        for key in ("NetLiquidation", "TotalCashValue", "GrossPositionValue",
                    "StockMarketValue", "OptionMarketValue", "FuturesPNL", "UnrealizedPnL",
                    "RealizedPnL",
                    "EquityWithLoanValue", "InitMarginReq", "MaintMarginReq",
                    "AvailableFunds", "ExcessLiquidity", "BuyingPower"):
            rows.append((key, money(t[key]), b))
        for key in ("FullInitMarginReq", "FullMaintMarginReq", "FullAvailableFunds",
                    "FullExcessLiquidity"):
            rows.append((key, money(t[key[4:]]), b))
        rows.append(("Cushion", f"{t['Cushion']:.6f}", ""))
        rows.append(("Leverage-S", f"{t['Leverage']:.2f}", ""))
        rows.append(("DayTradesRemaining", "-1", ""))
        rows.append(("SettledCash", money(t["TotalCashValue"]), b))
        # per currency ledger, then the BASE aggregate (IB's $LEDGER:ALL shape)
        nlv = self.net_liquidation_by_currency()
        for ccy in self.currencies():
            cash = self.cash.get(ccy, 0.0)
            rows.append(("CashBalance", money(cash), ccy))
            rows.append(("TotalCashBalance", money(cash), ccy))
            rows.append(("ExchangeRate", f"{self.rates.rate(ccy, b):.6f}", ccy))
            rows.append(("RealizedPnL", money(self.realized_by_ccy.get(ccy, 0.0)), ccy))
            upnl = sum(self.position_value(p)[2] for p in self.positions.values()
                       if p.instrument.currency == ccy)
            rows.append(("UnrealizedPnL", money(upnl), ccy))
            rows.append(("NetLiquidationByCurrency", money(nlv.get(ccy, 0.0)), ccy))
            rows.append(("Currency", ccy, ccy))
        rows.append(("CashBalance", money(t["TotalCashValue"]), "BASE"))
        rows.append(("TotalCashBalance", money(t["TotalCashValue"]), "BASE"))
        rows.append(("NetLiquidationByCurrency", money(t["NetLiquidation"]), "BASE"))
        rows.append(("RealizedPnL", money(t["RealizedPnL"]), "BASE"))
        rows.append(("UnrealizedPnL", money(t["UnrealizedPnL"]), "BASE"))
        rows.append(("ExchangeRate", "1.00", "BASE"))
        rows.append(("Currency", "BASE", "BASE"))
        return rows

    def summary(self, tags: str) -> list[tuple[str, str, str]]:
        """(tag, value, currency) rows for reqAccountSummary."""
        wanted = [t.strip() for t in tags.split(",") if t.strip()]
        t = self.totals()
        b = self.base
        values = {
            "AccountType": ("INDIVIDUAL", ""),
            "Cushion": (f"{t['Cushion']:.6f}", ""),
            "Leverage": (f"{t['Leverage']:.2f}", ""),
            "DayTradesRemaining": ("-1", ""),
            **{f"DayTradesRemainingT+{i}": ("-1", "") for i in range(1, 5)},
            "HighestSeverity": ("0", ""),
            "LookAheadNextChange": ("0", ""),
            "SettledCash": (money(t["TotalCashValue"]), b),
            "AccruedCash": ("0.00", b),
            "PreviousDayEquityWithLoanValue": (money(t["EquityWithLoanValue"]), b),
            "RegTEquity": (money(t["EquityWithLoanValue"]), b),
            "RegTMargin": (money(t["InitMarginReq"]), b),
            "SMA": (money(max(0.0, t["AvailableFunds"])), b),
        }
        for key in ("NetLiquidation", "TotalCashValue", "BuyingPower", "EquityWithLoanValue",
                    "GrossPositionValue", "InitMarginReq", "MaintMarginReq",
                    "AvailableFunds", "ExcessLiquidity"):
            values[key] = (money(t[key]), b)
        for key in ("InitMarginReq", "MaintMarginReq", "AvailableFunds", "ExcessLiquidity"):
            values["Full" + key] = values[key]
            values["LookAhead" + key] = values[key]
        rows: list[tuple[str, str, str]] = []
        for tag in wanted:
            if tag in values:
                rows.append((tag, *values[tag]))
            elif tag.startswith("$LEDGER"):
                ccys = ["BASE"] if tag == "$LEDGER" else (
                    self.currencies() + ["BASE"] if tag == "$LEDGER:ALL" else [tag.split(":", 1)[1]])
                for ccy in ccys:
                    if ccy == "BASE":
                        cash, npl = t["TotalCashValue"], t["NetLiquidation"]
                    else:
                        cash = self.cash.get(ccy, 0.0)
                        npl = self.net_liquidation_by_currency().get(ccy, 0.0)
                    rows.append(("CashBalance", money(cash), ccy))
                    rows.append(("TotalCashBalance", money(cash), ccy))
                    rows.append(("NetLiquidationByCurrency", money(npl), ccy))
        return rows

    def snapshot(self) -> dict:
        """Ground truth for the control API."""
        t = self.totals()
        return {
            "account": self.account_id,
            "base_currency": self.base,
            "cash": {c: round(v, 6) for c, v in sorted(self.cash.items())},
            "values": {k: round(v, 6) for k, v in t.items()},
            "commissions": round(self.commissions_paid, 6),
            "positions": [
                {"conId": p.instrument.con_id, "symbol": p.instrument.symbol,
                 "localSymbol": p.instrument.local_symbol, "secType": p.instrument.sec_type,
                 "position": p.quantity, "avgCost": round(p.avg_cost, 8),
                 "avgPrice": round(p.avg_price, 8),
                 "marketPrice": self.position_value(p)[0],
                 "marketValue": round(self.position_value(p)[1], 6),
                 "unrealizedPnL": round(self.position_value(p)[2], 6),
                 "realizedPnL": round(p.realized_pnl, 6)}
                for p in sorted(self.positions.values(), key=lambda p: p.instrument.con_id)],
        }
