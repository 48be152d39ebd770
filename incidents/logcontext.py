"""Which incident and check run a log line is about.

Celery tasks and views set the context (`bind(incident=..., check_run=...)`);
a logging filter copies it onto every record, so the JSON lines (LOG_FORMAT=json)
carry `incident` and `check_run` without each call site passing them."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar

_context: ContextVar[dict[str, int]] = ContextVar("lotoops_log_context", default={})  # noqa: B039


def add(**ids: int | None) -> None:
    """Add to the context of the enclosing `bind` (undone when it ends)."""
    _context.set(_context.get() | {k: v for k, v in ids.items() if v is not None})


@contextlib.contextmanager
def bind(**ids: int | None) -> Iterator[None]:
    token = _context.set(_context.get() | {k: v for k, v in ids.items() if v is not None})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key in ("incident", "check_run"):
            setattr(record, key, _context.get().get(key))
        return True
