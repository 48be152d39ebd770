"""One module per backend; importing this package registers every probe.

Imported explicitly: a missing or broken module is an error at start-up, never
a silent "not available yet" (tests list the runbook steps with no probe yet)."""

from . import (  # noqa: F401
    banca,
    base,
    http,
    kubernetes,
    postgres,
    prometheus,
    rabbitmq,
    redis,
    stripe,
)
