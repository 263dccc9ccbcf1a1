"""The event catalog and the code agree: every event logged or sent is listed, with its level and
fields, and everything listed is logged or sent somewhere.

The source is read, not run: each logger call (``log.info("name", field=...)``, or a level chosen by
``a if cond else b`` of two logger methods) and each ``Event("name", ..., data)`` is found with
``ast``. A name that is not a string literal fails: computed names cannot be looked up in the docs.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from rotator.config.followup_settings import EVENT_NAMES
from rotator.events_catalog import ACCOUNT_FIELDS, CATALOG, EVENTS, LOGGED, WEBHOOK_EVENTS

SOURCE = Path(__file__).resolve().parents[2] / "rotator"
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
# structlog's format_exc_info renders exc_info as the field "exception".
RENAMED = {"exc_info": "exception"}


@dataclass(frozen=True)
class Use:
    where: str
    names: tuple[str, ...]  # one, or two for ``"a" if cond else "b"``
    levels: tuple[str, ...]  # empty for a notification
    fields: frozenset[str]


def _is_logger(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr in LEVELS and "log" in ast.unparse(node.value)


def _names(node: ast.expr, where: str, problems: list[str]) -> tuple[str, ...]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return (node.value,)
    if isinstance(node, ast.IfExp):
        return _names(node.body, where, problems) + _names(node.orelse, where, problems)
    problems.append(f"{where}: the event name is computed ({ast.unparse(node)}); write it as a literal")
    return ()


def _dict_keys(node: ast.expr, function: ast.AST | None, where: str, problems: list[str]) -> set[str]:
    """The keys of a dict literal, or of the dict literal a local name was assigned."""
    if isinstance(node, ast.Dict):
        keys = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
        if len(keys) != len(node.keys):
            problems.append(f"{where}: fields not all literal ({ast.unparse(node)[:60]})")
        return keys
    if isinstance(node, ast.Name) and function is not None:
        # The last assignment of a dict literal to that name before the call.
        assigns = [
            a
            for a in ast.walk(function)
            if isinstance(a, ast.Assign)
            and isinstance(a.value, ast.Dict)
            and a.lineno < node.lineno
            and any(isinstance(t, ast.Name) and t.id == node.id for t in a.targets)
        ]
        if assigns:
            return _dict_keys(max(assigns, key=lambda a: a.lineno).value, function, where, problems)
    problems.append(f"{where}: cannot see the fields of {ast.unparse(node)}")
    return set()


def _level_variables(function: ast.AST) -> dict[str, tuple[str, ...]]:
    """``level = log.warning if ... else log.info``: the name ``level`` and the two levels."""
    found = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.IfExp):
            branches = (node.value.body, node.value.orelse)
            if all(_is_logger(b) for b in branches):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        found[target.id] = tuple(b.attr for b in branches if isinstance(b, ast.Attribute))
    return found


def scan() -> tuple[list[Use], list[str]]:
    uses: list[Use] = []
    problems: list[str] = []
    seen: set[tuple[str, int]] = set()
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        for function in functions:
            levels_of = _level_variables(function)
            for node in ast.walk(function):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                where = f"{path.relative_to(SOURCE.parent)}:{node.lineno}"
                if (where, node.col_offset) in seen:  # a nested function's calls, walked again
                    continue
                seen.add((where, node.col_offset))
                callee = node.func
                if _is_logger(callee) or (isinstance(callee, ast.Name) and callee.id in levels_of):
                    if isinstance(callee, ast.Attribute):
                        levels: tuple[str, ...] = (callee.attr,)
                    else:
                        assert isinstance(callee, ast.Name)
                        levels = levels_of[callee.id]
                    fields: set[str] = set()
                    for keyword in node.keywords:
                        if keyword.arg is None:
                            fields |= _dict_keys(keyword.value, function, where, problems)
                        else:
                            fields.add(RENAMED.get(keyword.arg, keyword.arg))
                    names = _names(node.args[0], where, problems)
                    uses.append(Use(where, names, levels, frozenset(fields)))
                elif isinstance(callee, ast.Name) and callee.id == "Event":
                    data = node.args[4] if len(node.args) > 4 else None
                    data = next((k.value for k in node.keywords if k.arg == "data"), data)
                    keys = _dict_keys(data, function, where, problems) if data is not None else set()
                    uses.append(Use(where, _names(node.args[0], where, problems), (), frozenset(keys)))
    # A call outside any function would be missed above; rotator logs only from functions.
    return uses, problems


USES, PROBLEMS = scan()
LOGS = [u for u in USES if u.levels]
SENDS = [u for u in USES if not u.levels]


def test_the_scan_finds_the_calls_it_is_meant_to_find() -> None:
    # The scan itself can fail: it must see the calls whose shapes are the unusual ones.
    assert not PROBLEMS, "\n".join(PROBLEMS)
    assert any(u.levels == ("warning", "info") and "rotation_skipped" in u.names for u in LOGS)
    assert any("notification_id" in u.fields for u in LOGS)  # a **fields dict
    assert {n for u in SENDS for n in u.names} >= {"rotation_failed", "rotation_unconfirmed"}
    assert len(LOGS) > 40


@pytest.mark.parametrize("use", LOGS, ids=lambda u: f"{(u.names or ('?',))[0]}@{u.where}")
def test_every_logged_event_is_in_the_catalog_with_its_level_and_fields(use: Use) -> None:
    for name in use.names:
        assert name in LOGGED, f"{use.where}: {name} is logged but not in rotator/events_catalog.py"
        spec = CATALOG[name]
        assert set(use.levels) <= set(spec.levels), f"{use.where}: {name} at {use.levels}: {spec.levels}"
        unknown = use.fields - set(spec.fields) - set(ACCOUNT_FIELDS)
        assert not unknown, f"{use.where}: {name} logs {sorted(unknown)}, not in its catalog entry"


@pytest.mark.parametrize("use", SENDS, ids=lambda u: f"{(u.names or ('?',))[0]}@{u.where}")
def test_every_notification_is_in_the_catalog_with_its_data(use: Use) -> None:
    for name in use.names:
        assert name in WEBHOOK_EVENTS, f"{use.where}: {name} is sent but not a catalog webhook event"
        assert use.fields == set(CATALOG[name].webhook or ()), f"{use.where}: {name}'s data"


def test_everything_in_the_catalog_is_logged_or_sent_somewhere_with_every_field_and_level() -> None:
    logged_levels: dict[str, set[str]] = defaultdict(set)
    logged_fields: dict[str, set[str]] = defaultdict(set)
    for use in LOGS:
        for name in use.names:
            logged_levels[name] |= set(use.levels)
            logged_fields[name] |= use.fields
    sent = {n for u in SENDS for n in u.names}
    for spec in EVENTS:
        if spec.levels:
            assert logged_levels[spec.name] == set(spec.levels), f"{spec.name}: levels in the code"
            missing = set(spec.fields) - logged_fields[spec.name]
            assert not missing, f"{spec.name}: the catalog lists {sorted(missing)}, logged nowhere"
        if spec.webhook is not None:
            assert spec.name in sent, f"{spec.name}: a webhook event in the catalog that nothing sends"
        assert set(spec.notes) <= set(spec.fields), f"{spec.name}: notes on fields it does not have"


def test_the_events_a_webhook_may_name_are_the_catalogs() -> None:
    assert set(EVENT_NAMES) == set(WEBHOOK_EVENTS)
    assert len(CATALOG) == len(EVENTS), "an event listed twice"


def test_the_catalog_imports_nothing_of_rotator() -> None:
    tree = ast.parse((SOURCE / "events_catalog.py").read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + [
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    ]
    assert not [m for m in imported if m.startswith("rotator")]


def test_a_notifications_type_is_the_catalogs_prefix_and_name() -> None:
    from rotator.after.notify import EVENT_TYPE_PREFIX
    from rotator.events_catalog import WEBHOOK_TYPE_PREFIX

    assert EVENT_TYPE_PREFIX == WEBHOOK_TYPE_PREFIX
