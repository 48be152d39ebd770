"""One module per backend; importing this package registers every probe."""

from . import base  # noqa: F401

for _module in ("http", "postgres", "redis", "rabbitmq", "prometheus", "kubernetes", "banca"):
    try:
        __import__(f"{__name__}.{_module}")
    except ModuleNotFoundError as exc:  # a backend module not written yet
        if exc.name != f"{__name__}.{_module}":
            raise
