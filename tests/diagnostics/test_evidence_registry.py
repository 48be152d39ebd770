"""Every evidence key a probe reports is in the registry the admin's checkboxes and
validation use (diagnostics/probes/findings.py), and every key the seeded runbook
names is one a probe (or the step's parameters) can report."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from diagnostics.probes.findings import EVIDENCE_KEYS

PROBES = Path(__file__).resolve().parents[2] / "diagnostics" / "probes"
RUNBOOKS = Path(__file__).resolve().parents[2] / "diagnostics" / "runbooks"


def _dict_keys(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Dict):
        return {
            k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
        }
    return set()


def keys_in(source: str) -> set[str]:
    """The literal keys of the evidence each ProbeResult carries: a dict literal, or a
    variable filled in the same function (`evidence = {...}`, `evidence["x"] = ...`)."""
    found: set[str] = set()
    tree = ast.parse(source)
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        names: set[str] = set()
        for call in ast.walk(function):
            if not isinstance(call, ast.Call):
                continue
            func = call.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name != "ProbeResult":
                continue
            evidence = next((k.value for k in call.keywords if k.arg == "evidence"), None)
            if evidence is None and len(call.args) >= 4:
                evidence = call.args[3]
            if evidence is None:
                continue
            found |= _dict_keys(evidence)
            if isinstance(evidence, ast.Name):
                names.add(evidence.id)
        for node in ast.walk(function):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id in names:
                        found |= _dict_keys(node.value)
                    if (
                        isinstance(target, ast.Subscript)
                        and isinstance(target.value, ast.Name)
                        and target.value.id in names
                        and isinstance(target.slice, ast.Constant)
                    ):
                        found.add(target.slice.value)
    return found


def test_every_key_a_probe_reports_is_registered():
    reported: dict[str, set[str]] = {}
    for path in sorted(PROBES.glob("*.py")):
        for key in keys_in(path.read_text()):
            reported.setdefault(key, set()).add(path.name)
    assert len(reported) >= 10  # the walker finds them (it is not reading nothing)
    assert {k: v for k, v in reported.items() if k not in EVIDENCE_KEYS} == {}


def test_the_walker_sees_each_way_a_probe_writes_its_evidence():
    source = """
def a():
    return ProbeResult(Outcome.FAILING, "x", evidence={"one": 1})
def b():
    evidence = {"two": 2}
    evidence["three"] = 3
    return ProbeResult(Outcome.FAILING, "x", {}, evidence)
"""
    assert keys_in(source) == {"one", "two", "three"}


def test_every_key_the_seeded_runbook_names_is_known():
    unknown = []
    for path in RUNBOOKS.glob("*.toml"):
        for book in tomllib.loads(path.read_text())["runbook"]:
            for step in book.get("step", []):
                own = {step.get("params", {}).get("evidence")} - {None}
                for key in step.get("finds", []) + step.get("recommended_by", []):
                    if key not in EVIDENCE_KEYS and key not in own:
                        unknown.append((step["key"], key))
    assert unknown == []
