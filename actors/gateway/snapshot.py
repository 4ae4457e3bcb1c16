"""``GetSnapshot``: IB's state now, asked of IB (not of the gateway's memory) - every working order at the account
(reqAllOpenOrders: this client's, other client ids', orders typed into TWS) with IB's own status, executions since
a time, commissions, positions with market values, account values, IB's daily P&L (account and positions) and the
contract details of every contract in it (qualified on the way if need be)."""

from __future__ import annotations

import time

from loguru import logger

from actors.gateway.account import AccountFeed
from actors.gateway.connection import ConnectionTracker
from actors.gateway.contracts import ContractCache
from actors.gateway.convert import commission_event, error_text, exec_revision, fill_event, ib_order, parse_since
from actors.gateway.ib import IB_REQUEST_TIMEOUT_S, IbSession
from actors.gateway.pnl import PnLFeed
from bus.messages import (
    DONE_STATUSES,
    MAX_SNAPSHOT_CONTRACTS,
    MAX_SNAPSHOT_EXECUTIONS,
    MAX_SNAPSHOT_ORDERS,
    CommissionEvent,
    FillEvent,
    GatewaySnapshot,
    GetSnapshot,
    Instrument,
    Rejected,
    tag_of,
)


class SnapshotBuilder:
    """Answers ``GetSnapshot`` from IB (see module docstring)."""

    def __init__(
        self, session: IbSession, account: AccountFeed, conn: ConnectionTracker, contracts: ContractCache, pnl: PnLFeed
    ) -> None:
        self.session = session
        self.account = account
        self.conn = conn
        self.contracts = contracts
        self.pnl = pnl

    async def _qualify(self, instruments: list[Instrument]) -> set[int]:
        """Make sure the details of every contract in the snapshot are known (by conId); their conIds."""
        con_ids: set[int] = set()
        for inst in instruments:
            if not inst.con_id:
                continue
            con_ids.add(inst.con_id)
            if self.contracts.known(inst.con_id) is None:
                try:
                    await self.contracts.resolve(inst)
                except (TimeoutError, ConnectionError) as exc:
                    logger.warning("gateway: snapshot: details of {} unavailable: {}", inst.display, error_text(exc))
        return con_ids

    async def snapshot(self, req: GetSnapshot) -> GatewaySnapshot | Rejected:
        rtype = tag_of(GetSnapshot)
        try:
            since = parse_since(req.exec_since)
        except ValueError as exc:
            return Rejected(code="bad_request", reason=str(exc), request_type=rtype)
        if not self.session.is_connected():
            return Rejected(code="disconnected", reason="gateway is not connected to IB", request_type=rtype)
        try:
            fills = await self.session.executions(
                IB_REQUEST_TIMEOUT_S, since=since.strftime("%Y%m%d-%H:%M:%S") if since else ""
            )
        except (TimeoutError, ConnectionError) as exc:
            return Rejected(
                code="disconnected", reason=f"executions request failed: {error_text(exc)}", request_type=rtype
            )
        try:
            listed = await self.session.all_open_orders(IB_REQUEST_TIMEOUT_S)
        except (TimeoutError, ConnectionError) as exc:
            return Rejected(
                code="disconnected", reason=f"open-order request failed: {error_text(exc)}", request_type=rtype
            )
        executions: list[FillEvent] = []
        commissions: list[CommissionEvent] = []
        for f in fills:
            t = f.execution.time
            if since is not None and hasattr(t, "timestamp") and t.timestamp() < since.timestamp():
                continue
            executions.append(
                fill_event(f.contract, f.execution, is_correction=exec_revision(f.execution.execId) > 1, replayed=False)
            )
            if getattr(f.commissionReport, "execId", ""):
                commissions.append(
                    commission_event(
                        f.commissionReport,
                        order_ref=f.execution.orderRef or "",
                        symbol=executions[-1].instrument.display,
                        con_id=executions[-1].instrument.con_id,
                    )
                )
        open_orders = [
            ib_order(t, status) for t in listed if (status := self.session.ib_status(t)) not in DONE_STATUSES
        ]
        truncated = len(executions) > MAX_SNAPSHOT_EXECUTIONS or len(commissions) > MAX_SNAPSHOT_EXECUTIONS
        if truncated or len(open_orders) > MAX_SNAPSHOT_ORDERS:
            # a snapshot nobody can read helps nobody: keep the newest executions (the ones a reconciliation is
            # most likely missing) and say so
            logger.error(
                "gateway: snapshot clipped to the message bounds: {} open orders, {} executions, {} commissions "
                "(bounds {} / {})",
                len(open_orders),
                len(executions),
                len(commissions),
                MAX_SNAPSHOT_ORDERS,
                MAX_SNAPSHOT_EXECUTIONS,
            )
            open_orders = open_orders[:MAX_SNAPSHOT_ORDERS]
            executions = executions[-MAX_SNAPSHOT_EXECUTIONS:]
            commissions = commissions[-MAX_SNAPSHOT_EXECUTIONS:]
        positions = self.account.positions()
        con_ids = await self._qualify(
            [p.instrument for p in positions] + [o.instrument for o in open_orders] + [e.instrument for e in executions]
        )
        contracts = self.contracts.infos(con_ids)
        if len(contracts) > MAX_SNAPSHOT_CONTRACTS:
            # positions' and open orders' contracts first: a reader values and checks those; an execution's contract
            # it can still qualify itself
            live = {i.con_id for i in [p.instrument for p in positions] + [o.instrument for o in open_orders]}
            logger.error(
                "gateway: snapshot clipped to {} of {} contracts' details", MAX_SNAPSHOT_CONTRACTS, len(contracts)
            )
            contracts = sorted(contracts, key=lambda c: c.con_id not in live)[:MAX_SNAPSHOT_CONTRACTS]
        return GatewaySnapshot(
            open_orders=open_orders,
            executions=executions,
            commissions=commissions,
            truncated=truncated,
            positions=positions,
            account_values=self.account.account_values(),
            account=self.conn.account,
            connection=self.conn.state,
            as_of_wall_ns=time.time_ns(),
            pnl=self.pnl.account,
            position_pnl=[self.pnl.positions[c] for c in sorted(self.pnl.positions)],
            contracts=contracts,
        )
