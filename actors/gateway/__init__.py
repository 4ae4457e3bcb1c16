"""The gateway actor: the one process that owns the IB connection (issue #4, docs/gateway.md).

Public names: :class:`~actors.gateway.actor.GatewayActor`, :func:`~actors.gateway.actor.build_gateway`. The
duplicate-submit status is :data:`bus.messages.DUPLICATE_STATUS`. ``khazad doctor`` (:mod:`cli.doctor`) speaks
:mod:`~.tws_wire`. Only :mod:`actors.gateway.ib` imports the IB client library; importing this package does not.
"""
