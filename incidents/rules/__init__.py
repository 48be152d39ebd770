"""Pure rules, no I/O: who is told (escalation), who is on call (rota), the SLA
verdict (sla) and how durations read (text). Written once, imported everywhere."""
