"""Runs: one generation each, on its own task, writing numbered events into a run store.

A connection never drives a backend. It subscribes to a run from a cursor and is told about new events, so a
dropped client can come back to the same run, many viewers cost one generation, and what the model said is saved
by the run when it ends — not by whichever connection happened to be open.

- :mod:`~tokenrelay.runs.manager`: the lifecycle (start, cancel, cancel a conversation's runs, shutdown);
- :mod:`~tokenrelay.runs.drive`: a run's own task, pumping its backend into the store and recording its end
  whatever fails (store retries, a bounded save, the ending kept here when the store will not take it);
- :mod:`~tokenrelay.runs.subscription`: the viewers (a subscription's follow loop, the disconnect policy);
- :mod:`~tokenrelay.runs.state`: a driven run's one state and its transitions;
- :mod:`~tokenrelay.runs.base`: run ids, heartbeats, the outcome handed to ``on_finish``.
"""

from tokenrelay.coalescing import coalesce
from tokenrelay.errors import RunLimitError, RunNotFound
from tokenrelay.runs.base import HEARTBEAT, DisconnectPolicy, Heartbeat, RunOutcome, new_run_id
from tokenrelay.runs.manager import RunManager
from tokenrelay.runs.subscription import Subscription

__all__ = [
    "HEARTBEAT",
    "DisconnectPolicy",
    "Heartbeat",
    "RunLimitError",
    "RunManager",
    "RunNotFound",
    "RunOutcome",
    "Subscription",
    "coalesce",
    "new_run_id",
]
