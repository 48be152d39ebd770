"""The runbook engine's signals.

check_finished: sent with `sender=CheckRun` inside the transaction that records a
run's final state, with `run` (CheckRun), `status` (RunStatus value), `outcome`
(ok / warning / failing / error) and `summary`. Verification of action items listens.
"""

from __future__ import annotations

from django.dispatch import Signal

check_finished = Signal()

ALL = (check_finished,)
