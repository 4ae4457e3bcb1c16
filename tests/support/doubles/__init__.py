"""Test doubles of one peer each, for tests of one actor or of the SDK (the unit under test is always real):

* :mod:`.services` - ``FakeService`` (any service: a real ROUTER answering with a scripted handler) and
  ``InThreadProxy`` (the real event proxy on a thread); the SDK and CLI tests;
* :mod:`.order_manager` - ``OrderManagerDouble``: the order manager as the SDK sees it (idempotent by client
  order id);
* :mod:`.trading_states` - ``TradingStatesDouble``: the risk governor's ``GetTradingState`` as the SDK asks it;
* :mod:`.order_peers` - ``ChainDoubles``: the risk governor and the gateway as the order manager sees them;
* :mod:`.risk_gateway` - ``FakeGateway``: the gateway as the risk governor sees it (also used by bench/);
* :mod:`.publisher` - ``PublishedLog``: an actor's publisher in the unit tests of one actor.
"""
