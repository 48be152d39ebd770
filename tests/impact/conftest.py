from tests.impact.platform_db import platform, platform_db  # noqa: F401  (fixtures)
