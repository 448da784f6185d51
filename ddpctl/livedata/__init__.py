"""The live-data engine: from a committed row change to the DDP messages of each client.

- :mod:`.capture` -- triggers that record every committed change in ``ddpctl_change``;
- :mod:`.changelog` -- reading that log in commit order, without holes;
- :mod:`.collection` -- how a model's rows look to clients (fields, ids, visibility);
- :mod:`.publish` -- low-level publications and :class:`~.publish.Subscription`;
- :mod:`.publication` -- model-backed publications;
- :mod:`.sharing` -- which subscribers may share an observer (what a publication read);
- :mod:`.observer` -- live queries shared by subscribers, refreshed per batch of changes.
"""
