"""Every URL the project serves, from the URL resolver, and how to fill one in.

A route is named by its namespaced URL name ("incidents:detail",
"admin:incidents_incident_change") or, without a name, by its pattern. Tests that
walk the site (the permission matrix, the bad-input test) start from `routes()`,
so a URL added anywhere shows up in them without anyone listing it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from django.urls import URLPattern, URLResolver, get_resolver

PARAM = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")


@dataclass(frozen=True)
class Route:
    name: str  # "incidents:detail"
    pattern: str  # "incidents/<int:pk>/"

    @property
    def params(self) -> dict[str, str]:
        """{parameter name: converter} of the route."""
        found = {m["name"]: m["converter"] or "str" for m in PARAM.finditer(self.pattern)}
        found |= {name: "regex" for name in re.findall(r"\(\?P<(\w+)>", self.pattern)}
        return found

    @property
    def is_admin(self) -> bool:
        return self.name.startswith("admin:") or self.pattern.startswith("admin/")

    def url(self, values: Mapping[str, object]) -> str:
        """The path with each parameter replaced by values[name] (as given: a test
        may pass a value the converter would refuse)."""
        # Django admin's few regular-expression routes: ^(?P<app_label>a|b)/$, (?P<url>.*)$
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: str(values[m[1]]), self.pattern)
        path = PARAM.sub(lambda m: str(values[m["name"]]), path)
        return "/" + path.replace("^", "").replace("$", "")


def routes() -> list[Route]:
    return list(_walk(get_resolver().url_patterns, "", ""))


def _walk(patterns: list[object], prefix: str, namespace: str) -> Iterator[Route]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern), inner)
        elif isinstance(entry, URLPattern):
            pattern = prefix + str(entry.pattern)
            name = f"{namespace}{entry.name}" if entry.name else pattern
            yield Route(name, pattern)
