"""Simulator configuration."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

from .clock import DEFAULT_MANUAL_START
from .latency import LATENCY_PROFILES
from .validation import TIFS, Precautions

CLOCK_MODES = ("realtime", "manual")
MARKET_HOURS = ("always", "exchange", "closed", "overnight")
ACCOUNT_PATTERN = re.compile(r"^DU\d+$")


@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes one simulator instance.

    ``control_port``: None disables the HTTP control API, 0 binds an
    ephemeral port (see ``SimServer.control_port``), any other value that
    port.  ``port=0`` likewise binds an ephemeral API port.
    """

    host: str = "127.0.0.1"
    port: int = 4002
    control_host: str = "127.0.0.1"
    control_port: int | None = None
    seed: int = 1
    account: str = "DU1234567"
    base_currency: str = "USD"
    starting_cash: float = 1_000_000.0
    clock: str = "realtime"
    #: manual clock start (ISO-8601); a Monday 10:00 in New York by default
    start_time: str = DEFAULT_MANUAL_START
    market_hours: str = "always"
    tick_interval: float = 0.25
    pacing_limit: int = 50
    trace: str | None = None
    instruments: str | None = None
    #: highest server version announced (clients get min(their max, this))
    max_server_version: int = 176
    #: IB's historical-data pacing: all (every bar size), small (bars <= 30 s, like IB), off
    history_pacing: str = "all"
    #: the account's real-time market-data subscriptions: realtime, 10089, 354, 10090, none
    #: (see sim.entitlements); per instrument with the ``market_data`` control command
    market_data: str = "realtime"
    #: when daily P&L restarts: "instrument" (IB's per-instrument schedule) or "HH:MM Zone"
    pnl_reset: str = "instrument"
    #: a recorded market to replay (CSV, or Parquet with pyarrow); see sim.replay
    replay: str | None = None
    #: replay pace: N x the wall clock (realtime clock only)
    replay_speed: float = 1.0
    #: order acknowledgement/fill latency: "fast" (at once) or "ib" (tens of ms, seeded tail)
    latency: str = "fast"
    #: IBKR's price check: a limit this many % through the NBBO is cancelled (202); 0 = off
    price_cap_pct: float = Precautions.price_cap_pct
    #: TWS preset "Percentage" (error 163): a limit this many % off the market is refused; 0 = off
    precaution_pct: float = Precautions.percentage
    #: TWS preset "Size Limit" (error 383) in shares/contracts/units; 0 = off
    size_limit: float = Precautions.size_limit
    #: TWS preset "Total Value Limit" (error 451) in USD; 0 = off
    value_limit: float = Precautions.value_limit
    #: TIF TWS gives orders sent without one, announced with notice 10349; "" = no preset notice
    tif_preset: str = ""

    def __post_init__(self) -> None:
        if self.clock not in CLOCK_MODES:
            raise ValueError(f"clock must be one of {CLOCK_MODES}, not {self.clock!r}")
        if self.market_hours not in MARKET_HOURS:
            raise ValueError(f"market_hours must be one of {MARKET_HOURS}, not {self.market_hours!r}")
        if not ACCOUNT_PATTERN.match(self.account):
            raise ValueError(f"account must look like DU1234567, not {self.account!r}")
        if self.tick_interval <= 0:
            raise ValueError("tick_interval must be positive")
        if self.replay_speed <= 0:
            raise ValueError("replay_speed must be positive")
        if self.pacing_limit < 0:
            raise ValueError("pacing_limit must be >= 0 (0 disables pacing)")
        if not 100 <= self.max_server_version <= 176:
            raise ValueError("max_server_version must be within 100..176")
        from .entitlements import check_state
        from .pacing import PACING_MODES
        if self.history_pacing not in PACING_MODES:
            raise ValueError(f"history_pacing must be one of {PACING_MODES}, not {self.history_pacing!r}")
        check_state(self.market_data)
        from .pnl import parse_reset
        parse_reset(self.pnl_reset)
        if self.latency not in LATENCY_PROFILES:
            raise ValueError(f"latency must be one of {LATENCY_PROFILES}, not {self.latency!r}")
        Precautions(price_cap_pct=self.price_cap_pct, percentage=self.precaution_pct,
                    size_limit=self.size_limit, value_limit=self.value_limit)  # raises on a bad value
        object.__setattr__(self, "tif_preset", self.tif_preset.upper())
        if self.tif_preset and self.tif_preset not in TIFS:
            raise ValueError(f"tif_preset must be empty or one of {TIFS}, not {self.tif_preset!r}")
        object.__setattr__(self, "base_currency", self.base_currency.upper())

    def with_overrides(self, **overrides: object) -> "SimConfig":
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown SimConfig fields: {sorted(unknown)}")
        return replace(self, **overrides)
