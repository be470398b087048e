"""The component's exports (``hookwasm:plugin@0.2.0``) around the plugin module ``plugin``:
what ``python -m hookwasm.build`` makes a component of. Not for plugin code."""

import plugin
import wit_world
from componentize_py_types import Err, Ok
from wit_world.imports import types

from . import with_call

_LEVELS = {
    "debug": types.Level.DEBUG,
    "info": types.Level.INFO,
    "warn": types.Level.WARN,
    "error": types.Level.ERROR,
}


def _logs(lines):
    return [types.LogLine(_LEVELS[level], message) for level, message in lines]


def _action(action):
    kind = getattr(action, "kind", None)
    if kind == "deliver":
        return Ok(types.Action_Deliver(types.Request(list(action.headers), bytes(action.body))))
    if kind == "pass":
        return Ok(types.Action_Pass())
    if kind == "skip":
        return Ok(types.Action_Skip(action.reason))
    return Err("transform returned no Action (use Action.deliver, Action.deliver_json, Action.PASS or Action.skip)")


class WitWorld(wit_world.WitWorld):
    def transform(self, event, config):
        from . import Event

        outcome = with_call(config, lambda: plugin.transform(Event(event.id, event.event_type, event.timestamp, event.data)))
        action = _action(outcome.value) if outcome.ok else Err(outcome.error)
        return types.Transformed(action, _logs(outcome.logs))

    def check_config(self, config):
        check = getattr(plugin, "check_config", None)
        outcome = with_call(config, lambda: check() if check else None)
        return types.Checked(Ok(None) if outcome.ok else Err(outcome.error), _logs(outcome.logs))
