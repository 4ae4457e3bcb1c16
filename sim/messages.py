"""Message ids and names of the TWS API (text protocol, server version 176).

``In`` are requests a client sends to the server, ``Out`` are the server's
messages.  Names follow the official API so traces read like IB's docs.
"""

from __future__ import annotations

from enum import IntEnum


class In(IntEnum):
    """Client -> server message ids."""

    REQ_MKT_DATA = 1
    CANCEL_MKT_DATA = 2
    PLACE_ORDER = 3
    CANCEL_ORDER = 4
    REQ_OPEN_ORDERS = 5
    REQ_ACCOUNT_UPDATES = 6
    REQ_EXECUTIONS = 7
    REQ_IDS = 8
    REQ_CONTRACT_DETAILS = 9
    REQ_MKT_DEPTH = 10
    CANCEL_MKT_DEPTH = 11
    REQ_NEWS_BULLETINS = 12
    CANCEL_NEWS_BULLETINS = 13
    SET_SERVER_LOG_LEVEL = 14
    REQ_AUTO_OPEN_ORDERS = 15
    REQ_ALL_OPEN_ORDERS = 16
    REQ_MANAGED_ACCTS = 17
    REQ_FA = 18
    REPLACE_FA = 19
    REQ_HISTORICAL_DATA = 20
    EXERCISE_OPTIONS = 21
    REQ_SCANNER_SUBSCRIPTION = 22
    CANCEL_SCANNER_SUBSCRIPTION = 23
    REQ_SCANNER_PARAMETERS = 24
    CANCEL_HISTORICAL_DATA = 25
    REQ_CURRENT_TIME = 49
    REQ_REAL_TIME_BARS = 50
    CANCEL_REAL_TIME_BARS = 51
    REQ_FUNDAMENTAL_DATA = 52
    CANCEL_FUNDAMENTAL_DATA = 53
    REQ_CALC_IMPLIED_VOLAT = 54
    REQ_CALC_OPTION_PRICE = 55
    CANCEL_CALC_IMPLIED_VOLAT = 56
    CANCEL_CALC_OPTION_PRICE = 57
    REQ_GLOBAL_CANCEL = 58
    REQ_MARKET_DATA_TYPE = 59
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    CANCEL_ACCOUNT_SUMMARY = 63
    CANCEL_POSITIONS = 64
    VERIFY_REQUEST = 65
    VERIFY_MESSAGE = 66
    QUERY_DISPLAY_GROUPS = 67
    SUBSCRIBE_TO_GROUP_EVENTS = 68
    UPDATE_DISPLAY_GROUP = 69
    UNSUBSCRIBE_FROM_GROUP_EVENTS = 70
    START_API = 71
    VERIFY_AND_AUTH_REQUEST = 72
    VERIFY_AND_AUTH_MESSAGE = 73
    REQ_POSITIONS_MULTI = 74
    CANCEL_POSITIONS_MULTI = 75
    REQ_ACCOUNT_UPDATES_MULTI = 76
    CANCEL_ACCOUNT_UPDATES_MULTI = 77
    REQ_SEC_DEF_OPT_PARAMS = 78
    REQ_SOFT_DOLLAR_TIERS = 79
    REQ_FAMILY_CODES = 80
    REQ_MATCHING_SYMBOLS = 81
    REQ_MKT_DEPTH_EXCHANGES = 82
    REQ_SMART_COMPONENTS = 83
    REQ_NEWS_ARTICLE = 84
    REQ_NEWS_PROVIDERS = 85
    REQ_HISTORICAL_NEWS = 86
    REQ_HEAD_TIMESTAMP = 87
    REQ_HISTOGRAM_DATA = 88
    CANCEL_HISTOGRAM_DATA = 89
    CANCEL_HEAD_TIMESTAMP = 90
    REQ_MARKET_RULE = 91
    REQ_PNL = 92
    CANCEL_PNL = 93
    REQ_PNL_SINGLE = 94
    CANCEL_PNL_SINGLE = 95
    REQ_HISTORICAL_TICKS = 96
    REQ_TICK_BY_TICK_DATA = 97
    CANCEL_TICK_BY_TICK_DATA = 98
    REQ_COMPLETED_ORDERS = 99
    REQ_WSH_META_DATA = 100
    CANCEL_WSH_META_DATA = 101
    REQ_WSH_EVENT_DATA = 102
    CANCEL_WSH_EVENT_DATA = 103
    REQ_USER_INFO = 104


class Out(IntEnum):
    """Server -> client message ids."""

    TICK_PRICE = 1
    TICK_SIZE = 2
    ORDER_STATUS = 3
    ERROR = 4
    OPEN_ORDER = 5
    ACCOUNT_VALUE = 6
    PORTFOLIO_VALUE = 7
    ACCOUNT_UPDATE_TIME = 8
    NEXT_VALID_ID = 9
    CONTRACT_DETAILS = 10
    EXECUTION_DATA = 11
    MANAGED_ACCOUNTS = 15
    HISTORICAL_DATA = 17
    TICK_GENERIC = 45
    TICK_STRING = 46
    CURRENT_TIME = 49
    REAL_TIME_BAR = 50
    CONTRACT_DETAILS_END = 52
    OPEN_ORDER_END = 53
    ACCOUNT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    TICK_SNAPSHOT_END = 57
    MARKET_DATA_TYPE = 58
    COMMISSION_REPORT = 59
    POSITION = 61
    POSITION_END = 62
    ACCOUNT_SUMMARY = 63
    ACCOUNT_SUMMARY_END = 64
    POSITION_MULTI = 71
    POSITION_MULTI_END = 72
    ACCOUNT_UPDATE_MULTI = 73
    ACCOUNT_UPDATE_MULTI_END = 74
    TICK_REQ_PARAMS = 81
    HISTORICAL_DATA_UPDATE = 90
    PNL = 94
    PNL_SINGLE = 95
    COMPLETED_ORDER = 101
    COMPLETED_ORDERS_END = 102


def _camel(name: str) -> str:
    head, *rest = name.lower().split("_")
    return head + "".join(part.capitalize() for part in rest)


#: Request names as the official EClient spells them (reqMktData, ...).
_IN_NAME_OVERRIDES = {
    In.REQ_ACCOUNT_UPDATES: "reqAccountUpdates",
    In.REQ_CONTRACT_DETAILS: "reqContractDetails",
    In.REQ_MANAGED_ACCTS: "reqManagedAccts",
    In.REQ_CALC_IMPLIED_VOLAT: "calculateImpliedVolatility",
    In.REQ_CALC_OPTION_PRICE: "calculateOptionPrice",
    In.CANCEL_CALC_IMPLIED_VOLAT: "cancelCalculateImpliedVolatility",
    In.CANCEL_CALC_OPTION_PRICE: "cancelCalculateOptionPrice",
    In.REQ_PNL: "reqPnL",
    In.CANCEL_PNL: "cancelPnL",
    In.REQ_PNL_SINGLE: "reqPnLSingle",
    In.CANCEL_PNL_SINGLE: "cancelPnLSingle",
    In.REQ_FA: "requestFA",
    In.REPLACE_FA: "replaceFA",
    In.REQ_WSH_META_DATA: "reqWshMetaData",
    In.CANCEL_WSH_META_DATA: "cancelWshMetaData",
    In.REQ_WSH_EVENT_DATA: "reqWshEventData",
    In.CANCEL_WSH_EVENT_DATA: "cancelWshEventData",
}

_OUT_NAME_OVERRIDES = {
    Out.ERROR: "error",
    Out.ACCOUNT_VALUE: "updateAccountValue",
    Out.PORTFOLIO_VALUE: "updatePortfolio",
    Out.ACCOUNT_UPDATE_TIME: "updateAccountTime",
    Out.EXECUTION_DATA: "execDetails",
    Out.EXECUTION_DATA_END: "execDetailsEnd",
    Out.REAL_TIME_BAR: "realtimeBar",
    Out.PNL: "pnl",
    Out.PNL_SINGLE: "pnlSingle",
}

IN_NAMES: dict[int, str] = {
    m.value: _IN_NAME_OVERRIDES.get(m, _camel(m.name)) for m in In}
OUT_NAMES: dict[int, str] = {
    m.value: _OUT_NAME_OVERRIDES.get(m, _camel(m.name)) for m in Out}


def in_name(msg_id: int) -> str:
    return IN_NAMES.get(msg_id, f"unknown{msg_id}")


def out_name(msg_id: int) -> str:
    return OUT_NAMES.get(msg_id, f"msg{msg_id}")


# Tick types (https://interactivebrokers.github.io/tws-api/tick_types.html)
class TickType(IntEnum):
    """The tick types the simulator emits."""

    BID_SIZE = 0
    BID = 1
    ASK = 2
    ASK_SIZE = 3
    LAST = 4
    LAST_SIZE = 5
    HIGH = 6
    LOW = 7
    VOLUME = 8
    CLOSE = 9
    OPEN = 14
    LAST_TIMESTAMP = 45
    DELAYED_BID = 66
    DELAYED_ASK = 67
    DELAYED_LAST = 68
    DELAYED_BID_SIZE = 69
    DELAYED_ASK_SIZE = 70
    DELAYED_LAST_SIZE = 71
    DELAYED_HIGH = 72
    DELAYED_LOW = 73
    DELAYED_VOLUME = 74
    DELAYED_CLOSE = 75
    DELAYED_OPEN = 76
    DELAYED_LAST_TIMESTAMP = 88


#: Real-time tick type -> its delayed counterpart.
DELAYED_TICK = {
    TickType.BID_SIZE: TickType.DELAYED_BID_SIZE,
    TickType.BID: TickType.DELAYED_BID,
    TickType.ASK: TickType.DELAYED_ASK,
    TickType.ASK_SIZE: TickType.DELAYED_ASK_SIZE,
    TickType.LAST: TickType.DELAYED_LAST,
    TickType.LAST_SIZE: TickType.DELAYED_LAST_SIZE,
    TickType.HIGH: TickType.DELAYED_HIGH,
    TickType.LOW: TickType.DELAYED_LOW,
    TickType.VOLUME: TickType.DELAYED_VOLUME,
    TickType.CLOSE: TickType.DELAYED_CLOSE,
    TickType.OPEN: TickType.DELAYED_OPEN,
    TickType.LAST_TIMESTAMP: TickType.DELAYED_LAST_TIMESTAMP,
}


class ErrorCode:
    """IB error/notice codes the simulator emits."""

    DUPLICATE_ORDER_ID = 103
    CANT_MODIFY_FILLED = 104
    PACING = 100
    MAX_TICKERS = 101
    ORDER_CANCELLED = 202
    ORDER_REJECTED = 201
    NO_SECURITY_DEFINITION = 200
    CANNOT_FIND_ORDER = 135
    HISTORICAL_DATA_ERROR = 162
    ERROR_READING_REQUEST = 320
    ERROR_VALIDATING_REQUEST = 321
    ERROR_PROCESSING_REQUEST = 322
    CLIENT_ID_IN_USE = 326
    UNSUPPORTED_ORDER_TYPE = 387
    CONNECTIVITY_LOST = 1100
    CONNECTIVITY_RESTORED_DATA_LOST = 1101
    CONNECTIVITY_RESTORED_DATA_KEPT = 1102
    MARKET_DATA_FARM_OK = 2104
    HMDS_FARM_OK = 2106
    SEC_DEF_FARM_OK = 2158
    CANCEL_UNKNOWN_ORDER = 10147
    CANCEL_DONE_ORDER = 10148
    DELAYED_DATA_NOTICE = 10167
    NOT_SUBSCRIBED = 300
