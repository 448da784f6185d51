"""``ddpctl top``: a live view of every node, from the nodes' own counters.

:mod:`.snapshot` asks every live node for its counters through the control channel
(:mod:`ddpctl.control`, command kind ``"stats"``, answered with
:func:`ddpctl.server.stats.node_stats`), the registry standing in for a node that does not
answer in time; :mod:`.rates` turns two snapshots into rates; :mod:`.view` draws them with
rich; :mod:`.keys` reads the keyboard (``q`` quits).
"""
