"""Per-strategy books that persist across trading days and restarts (BookKeeper over a real SQLite store).

Days are those of ``portfolio.trading_day`` ("00:00 America/New_York" here); executions carry IB's UTC time."""

from __future__ import annotations

import os
import stat
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from actors.portfolio.keeper import BookKeeper
from actors.portfolio.store import BookStore
from bus.tradingday import TradingDay
from tests.support.builders import MSFT, commission, fill

NY = ZoneInfo("America/New_York")
DAYS = TradingDay.from_spec("00:00 America/New_York")
#: 2030-03-04 and 2030-03-05, 15:00 New York (20:00 UTC)
DAY1, DAY2, DAY3 = "20300304-20:00:00", "20300305-20:00:00", "20300306-20:00:00"


def at(label: str, hh: int = 15) -> float:
    y, m, d = (int(x) for x in label.split("-"))
    return datetime(y, m, d, hh, 0, tzinfo=NY).timestamp()


def keeper(path, day: str = "2030-03-04") -> BookKeeper:
    return BookKeeper(BookStore(path), DAYS, now=at(day))


def book(k: BookKeeper, strategy: str, key: str = "con:265598"):
    return k.ledger.books[strategy][key]


def test_books_survive_a_restart_exactly(tmp_path):
    path = tmp_path / "portfolio.sqlite"
    k = keeper(path)
    k.add_fill(fill(1, "BUY", 100, 10.0, at=DAY1))
    k.add_fill(fill(2, "SELL", 40, 12.0, at=DAY1))
    k.add_commission(commission(1, 1.0))
    k.add_commission(commission(2, 0.5))
    k.add_fill(fill(3, "BUY", 10, 20.0, inst=MSFT, strategy="beta", at=DAY1))
    before = {s: {key: (b.quantity, b.avg_price, b.realized) for key, b in books.items()}
              for s, books in k.ledger.books.items()}
    k.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = keeper(path)
    after = {s: {key: (b.quantity, b.avg_price, b.realized) for key, b in books.items()}
             for s, books in again.ledger.books.items()}
    assert after == before
    assert book(again, "alpha").realized == pytest.approx(80.0 - 1.5)
    # the gateway replays the day's executions after a restart: nothing is counted twice
    assert again.add_fill(fill(1, "BUY", 100, 10.0, at=DAY1, replayed=True))[0] == "duplicate"
    assert book(again, "alpha").quantity == 60


def test_a_day_roll_keeps_carried_positions_with_their_owner(tmp_path):
    path = tmp_path / "portfolio.sqlite"
    k = keeper(path)
    k.add_fill(fill(1, "BUY", 100, 10.0, at=DAY1))
    k.add_fill(fill(2, "SELL", 40, 12.0, at=DAY1))
    k.add_fill(fill(3, "SELL", 5, 30.0, inst=MSFT, strategy="beta", at=DAY1))
    assert k.roll_if_due(at("2030-03-05", 0) + 1)
    assert k.day == "2030-03-05" and not k.ledger.fills
    alpha = book(k, "alpha")
    assert (alpha.quantity, alpha.avg_price, alpha.realized, alpha.realized_today) == (60, 10.0, 80.0, 0.0)
    assert book(k, "beta", "con:272093").quantity == -5
    k.add_fill(fill(4, "SELL", 60, 11.0, at=DAY2))
    assert book(k, "alpha").quantity == 0
    assert book(k, "alpha").realized_today == pytest.approx(60.0)
    assert book(k, "alpha").realized == pytest.approx(140.0)
    k.close()
    # a restart later that day: yesterday's carry and today's executions, each with its strategy
    again = BookKeeper(BookStore(path), DAYS, now=at("2030-03-05", 16))
    assert again.day == "2030-03-05"
    assert book(again, "alpha").realized_today == pytest.approx(60.0)
    assert book(again, "beta", "con:272093").quantity == -5
    again.close()
    # a restart two days later rolls through: carried positions are still beta's
    third = BookKeeper(BookStore(path), DAYS, now=at("2030-03-07", 9))
    assert third.day == "2030-03-07"
    assert book(third, "beta", "con:272093").quantity == -5
    assert book(third, "alpha").realized == pytest.approx(140.0)


def test_an_execution_of_a_later_day_rolls_the_books_first(tmp_path):
    k = keeper(tmp_path / "p.sqlite")
    k.add_fill(fill(1, "BUY", 100, 10.0, at=DAY1))
    k.add_fill(fill(2, "SELL", 100, 11.0, at=DAY2))
    assert k.day == "2030-03-05"
    assert book(k, "alpha").realized_today == pytest.approx(100.0)
    assert [f.exec_key for f in k.ledger.fills.values()] == [fill(2, "SELL", 1, 1).exec_key]


def test_a_correction_replaces_its_revision_and_a_correction_of_yesterday_restates_today(tmp_path):
    path = tmp_path / "p.sqlite"
    k = keeper(path)
    k.add_fill(fill(1, "BUY", 100, 10.0, at=DAY1))
    assert k.add_fill(fill(1, "BUY", 100, 10.5, at=DAY1, rev=2))[0] == "correction"
    assert book(k, "alpha").avg_price == 10.5
    assert k.add_fill(fill(1, "BUY", 100, 10.0, at=DAY1, rev=1))[0] == "stale"  # an older revision, late
    k.roll_if_due(at("2030-03-05", 1))
    k.add_fill(fill(2, "SELL", 50, 12.0, at=DAY2))
    assert book(k, "alpha").realized_today == pytest.approx(75.0)
    # IB corrects yesterday's execution: today's opening average and realized follow
    assert k.add_fill(fill(1, "BUY", 100, 11.0, at=DAY1, rev=3))[0] == "correction"
    assert book(k, "alpha").avg_price == 11.0
    assert book(k, "alpha").realized_today == pytest.approx(50.0)
    k.close()
    rows = BookStore(path, readonly=True).query_fills()
    assert [(r.fill.exec_id[-2:], r.revisions, r.corrected) for r in rows] == [("03", 3, True), ("01", 1, False)]
    again = BookKeeper(BookStore(path), DAYS, now=at("2030-03-05", 16))
    assert book(again, "alpha").avg_price == 11.0 and book(again, "alpha").quantity == 50


def test_a_late_execution_or_commission_of_an_earlier_day_restates_the_books(tmp_path):
    k = keeper(tmp_path / "p.sqlite")
    k.add_fill(fill(1, "BUY", 100, 10.0, at=DAY1))
    k.roll_if_due(at("2030-03-06", 1))  # two days on
    assert k.add_fill(fill(2, "BUY", 20, 13.0, at=DAY2, strategy="beta"))[0] == "late"
    assert book(k, "beta").quantity == 20 and book(k, "alpha").quantity == 100
    assert k.add_commission(commission(1, 2.0))
    assert book(k, "alpha").realized == pytest.approx(-2.0)
    assert book(k, "alpha").realized_today == 0.0  # it belongs to its own day


def test_executions_before_the_books_began_are_recorded_not_booked(tmp_path):
    k = keeper(tmp_path / "p.sqlite", day="2030-03-05")
    assert k.add_fill(fill(1, "BUY", 100, 10.0, at=DAY1))[0] == "new"
    assert "alpha" not in k.ledger.books
    assert [r.booked for r in k.store.query_fills()] == [False]


def test_adopted_holdings_are_carried_as_externals(tmp_path):
    path = tmp_path / "p.sqlite"
    k = keeper(path)
    k.adopt("", MSFT, 30, 200.0, "held at IB")
    k.add_fill(fill(1, "SELL", 10, 210.0, inst=MSFT, ref="tws", at=DAY1))  # a trade from TWS: external's
    assert book(k, "external", "con:272093").quantity == 20
    assert book(k, "external", "con:272093").realized_today == pytest.approx(100.0)
    k.close()
    again = BookKeeper(BookStore(path), DAYS, now=at("2030-03-05"))
    assert book(again, "external", "con:272093").quantity == 20


def test_the_trading_day_labels_sessions_that_start_in_the_evening_by_the_next_date():
    chicago = TradingDay.from_spec("17:00 America/Chicago")
    sunday_evening = datetime(2030, 3, 3, 18, 0, tzinfo=ZoneInfo("America/Chicago")).timestamp()
    assert chicago.label(sunday_evening) == "2030-03-04"
    start, end = chicago.bounds("2030-03-04")
    assert start < sunday_evening < end and end - start == 24 * 3600
    assert DAYS.label(at("2030-03-04", 23) + 3599) == "2030-03-04"
    assert DAYS.label(at("2030-03-05", 0)) == "2030-03-05"
