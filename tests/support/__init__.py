"""Everything the tests share (one home per helper; test modules never import each other or a conftest):

* :mod:`.keys` - the CURVE keys and allow-list every test config gets (the bus is authenticated by default):
  ``provision_keys``, the strategy ids (``TEST_STRATEGIES``) and test actors that have keys;
* :mod:`.clients` - clients, subscribers, publishers and raw sockets with a key (``sync_client``,
  ``sync_subscriber``, ``publisher``, ``raw_dealer``, ``RoutedClient``, ``OwnerPublisher``, ``serving_security``);
* :mod:`.local_process` - what any process on the host can try against a running system (the security tests);
* :mod:`.fixtures` - the fixtures of every package (``zctx``, ``config_path``, ``cfg``, ``processes``, ``proxy``,
  a fresh event loop), imported by ``tests/conftest.py``;
* :mod:`.config` - a ``khazad.toml`` on free ports (``write_config``, ``cfg_of``), the simulator's ``[gateway]``
  section (``gateway_extra``), the order manager's test settings, ``REPO``;
* :mod:`.processes` - ``ActorProcess`` and the waits that say a process serves (``wait_serving``), the gateway is
  READY (``wait_gateway_ready``), an actor is ready (``wait_ready``); ``start_proxy``, ``start_actor``;
* :mod:`.waiting` - the one wait helper, ``eventually`` (``eventually_async`` in coroutines), ``run_bounded``;
* :mod:`.events` - the one event recorder, ``EventRecorder`` (bodies, senders, heartbeats, order statuses);
* :mod:`.builders` - the one order builder, ``order`` (keyword overrides; ``order_for(strategy)``), ticks, fills,
  commissions, positions, account values, instruments;
* :mod:`.sim_state` - the simulator's ground truth (working orders, request log, prices) and a raw TWS session;
* :mod:`.system` - the whole supervised system (``running_system``) for the system and chaos tests;
* :mod:`.gateway_harness` - the gateway process with an approving client (``GatewayHarness``, ``place_working``);
* :mod:`.chain` - the actor chain (proxy, gateway, risk, optionally orders and portfolio) as processes over a
  simulator, the test playing the order manager or a strategy (``running_chain``, ``Chain``, ``spec``);
* :mod:`.orders_journal` - the order manager's journal checks and the statuses a strategy sees;
* :mod:`.message_samples` - a valid sample of every bus message (the schema tests);
* :mod:`.doubles` - doubles of one peer each (see its docstring);
* :mod:`.programs` - small programs run as real processes (probe, echo, burst publisher, stalled subscriber, the
  two-node test's remote strategy and keyless intruder).
"""
