"""The real ASGI app with the test probes registered (test.restart, test.echo): what
the web processes of the live approval tests serve, so a step of the test runbook is
as available there as in the test process."""

from lotoops.asgi import application
from tests.diagnostics import engine_probes  # noqa: F401  (registers the test probes)

__all__ = ["application"]
