"""Reporting: period figures (MTTA, MTTR, SLA compliance), exports (Markdown,
PDF, CSV) and charts."""
