"""Native test helpers: run a plugin module on an event with a given ``plugin_config``, as
the host would, under ``python -m unittest``.

.. code-block:: python

    import unittest
    import plugin
    from hookwasm import testing

    class PluginTest(unittest.TestCase):
        def test_passes(self):
            outcome = testing.run(plugin, testing.event("message.created", {"x": 1}))
            self.assertEqual(outcome.value.kind, "pass")
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

from . import Action, Event, Outcome, with_call

Config = dict[str, str] | list[tuple[str, str]]


def _pairs(config: Config | None) -> list[tuple[str, str]]:
    items = list(config.items()) if isinstance(config, dict) else list(config or [])
    return sorted(items)


def event(event_type: str, data: Any, id: str = "evt_test", timestamp: str = "2026-01-01T00:00:00Z") -> Event:
    """An event of ``event_type`` with ``data`` (serialized as compact JSON, as hookwasm
    passes it)."""
    return Event(id, event_type, timestamp, json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())


def load_event(path: str) -> Event:
    """An event from an envelope file (``{"id", "type", "timestamp", "data"}``)."""
    with open(path, encoding="utf-8") as file:
        envelope = json.load(file)
    data = json.dumps(envelope["data"], separators=(",", ":"), ensure_ascii=False).encode()
    return Event(envelope["id"], envelope["type"], envelope["timestamp"], data)


def run(plugin: ModuleType, event: Event, config: Config | None = None) -> Outcome:
    """Runs ``plugin.transform`` as the host would."""
    return with_call(_pairs(config), lambda: plugin.transform(event))


def check_config(plugin: ModuleType, config: Config | None = None) -> Outcome:
    """Runs ``plugin.check_config`` (if the module has one) with ``config``."""
    check = getattr(plugin, "check_config", None)
    return with_call(_pairs(config), lambda: check() if check else None)


def delivered_json(action: Action) -> Any:
    """The JSON body of a ``deliver`` action."""
    if action.kind != "deliver":
        raise AssertionError(f"expected a deliver action, got {action.kind}")
    return json.loads(action.body)
