"""Market scanners: the parameters XML and a few of IB's scan codes, ranked
on the simulator's own market.

======================  =================================================
scan code               ranking (US stocks in the universe)
======================  =================================================
TOP_PERC_GAIN           change from the close, highest first (gainers only)
TOP_PERC_LOSE           change from the close, lowest first (losers only)
MOST_ACTIVE             day volume, highest first
HOT_BY_VOLUME           day volume relative to the average volume of a day
HOT_BY_PRICE            absolute change from the close, highest first
TOP_TRADE_COUNT         trades printed today, highest first
======================  =================================================

Filters honoured: abovePrice, belowPrice, aboveVolume, numberOfRows;
instrument ``STK`` with locations ``STK.US``, ``STK.US.MAJOR``,
``STK.NASDAQ``, ``STK.NYSE``, ``STK.ARCA``.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

from .instruments import Instrument
from .market import Market

SCAN_CODES = {
    "TOP_PERC_GAIN": "Top % Gainers",
    "TOP_PERC_LOSE": "Top % Losers",
    "MOST_ACTIVE": "Most Active",
    "HOT_BY_VOLUME": "Hot Contracts by Volume",
    "HOT_BY_PRICE": "Hot Contracts by Price",
    "TOP_TRADE_COUNT": "Top Trade Count",
}
LOCATIONS = {
    "STK.US": None, "STK.US.MAJOR": None, "STK.NASDAQ": "NASDAQ", "STK.NYSE": "NYSE",
    "STK.ARCA": "ARCA",
}
#: IB's default and largest number of rows.
DEFAULT_ROWS = 50
#: A stock's typical daily volume in the walk (shares), for HOT_BY_VOLUME.
TYPICAL_DAILY_VOLUME = 1_000_000.0
#: IB refreshes a scanner subscription about every 30 seconds.
REFRESH_SECONDS = 30.0


@dataclass(frozen=True)
class ScanRequest:
    """The parts of reqScannerSubscription the simulator acts on."""

    rows: int
    instrument: str
    location: str
    scan_code: str
    above_price: float | None
    below_price: float | None
    above_volume: float | None


def parameters_xml() -> str:
    """A small scanner-parameters document in IB's layout."""
    scans = "".join(
        f"<ScanType><displayName>{escape(name)}</displayName><scanCode>{code}</scanCode>"
        f"<instruments>STK</instruments><absoluteColumns>false</absoluteColumns>"
        f"<Columns/><supportsSorting>true</supportsSorting><respSizeLimit>{DEFAULT_ROWS}"
        f"</respSizeLimit></ScanType>"
        for code, name in SCAN_CODES.items())
    locations = "".join(
        f"<Location><displayName>{code}</displayName><locationCode>{code}</locationCode>"
        f"<instruments>STK</instruments></Location>" for code in LOCATIONS)
    filters = "".join(
        f"<SimpleFilter><id>{fid}</id><category>PRICE_VOLUME</category><AbstractField "
        f"type=\"DoubleField\"><code>{fid}</code><displayName>{name}</displayName>"
        f"</AbstractField></SimpleFilter>"
        for fid, name in (("priceAbove", "Price Above"), ("priceBelow", "Price Below"),
                          ("volumeAbove", "Volume Above")))
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<ScanParameterResponse>'
            '<InstrumentList><Instrument><name>US Stocks</name><type>STK</type>'
            '<filters>priceAbove,priceBelow,volumeAbove</filters></Instrument></InstrumentList>'
            f'<LocationTree><Location><displayName>US Stocks</displayName>'
            f'<locationCode>STK.US</locationCode><LocationTree>{locations}</LocationTree>'
            f'</Location></LocationTree><ScanTypeList>{scans}</ScanTypeList>'
            f'<FilterList>{filters}</FilterList></ScanParameterResponse>')


def scan(market: Market, instruments: list[Instrument], req: ScanRequest) -> list[Instrument]:
    """The instruments ``req`` selects, best first."""
    venue = LOCATIONS.get(req.location, "?")
    pool = [i for i in instruments if i.sec_type == "STK" and i.currency == "USD"
            and (venue is None or i.primary_exchange == venue)]
    scored: list[tuple[float, Instrument]] = []
    for inst in pool:
        q = market.quote(inst.con_id)
        price = q.last if q.last is not None else q.mid
        if req.above_price is not None and price <= req.above_price:
            continue
        if req.below_price is not None and price >= req.below_price:
            continue
        if req.above_volume is not None and q.volume <= req.above_volume:
            continue
        change = (price - q.close) / q.close if q.close else 0.0
        key = {
            "TOP_PERC_GAIN": change, "TOP_PERC_LOSE": -change, "MOST_ACTIVE": q.volume,
            "HOT_BY_VOLUME": q.volume / TYPICAL_DAILY_VOLUME, "HOT_BY_PRICE": abs(change),
            "TOP_TRADE_COUNT": market.trade_count(inst),
        }[req.scan_code]
        if req.scan_code == "TOP_PERC_GAIN" and change <= 0:
            continue
        if req.scan_code == "TOP_PERC_LOSE" and change >= 0:
            continue
        scored.append((key, inst))
    scored.sort(key=lambda kv: (-kv[0], kv[1].symbol))
    rows = DEFAULT_ROWS if req.rows <= 0 else min(req.rows, DEFAULT_ROWS)
    return [inst for _, inst in scored[:rows]]
