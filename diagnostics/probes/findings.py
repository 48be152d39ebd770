"""Every evidence key a probe can find, with the words a person reads. A step's
`finds` and an action's `recommended_by` are chosen from these in admin (and
validated against them), so a typo cannot silently disconnect a finding from the
action it should recommend. A probe that finds something new adds its key here
(tests/diagnostics/test_evidence_registry.py checks the probes' sources against it).

Probes whose evidence key is a parameter (`postgres.count_query`, the log pattern
probes) may also find the key their step's parameters name."""

from __future__ import annotations

EVIDENCE_KEYS: dict[str, str] = {
    "long_running_queries": "Long-running queries",
    "db_connections_exhausted": "Database connections exhausted",
    "lock_contention": "Lock contention",
    "idle_in_transaction": "Sessions idle in a transaction",
    "disk_low": "Disk space low",
    "oom_killed": "Containers killed for memory (OOMKilled)",
    "crash_looping": "Containers crash-looping",
    "not_ready": "Pods not ready",
    "memory_pressure": "Memory near its limit",
    "recent_deploy": "A recent deploy",
    "webhook_failures": "Failed Stripe webhook deliveries",
    "plays_stuck": "Plays stuck pending",
    "hmac_mismatch": "Banca HMAC secret mismatch",
    "signature_failures": "Signature failures in the logs",
}
