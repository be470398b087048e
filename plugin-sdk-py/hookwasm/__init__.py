"""The hookwasm plugin SDK for Python: what a plugin module needs and nothing more.

A plugin module (``plugin.py``) defines ``transform(event)`` and, optionally,
``check_config()``. ``hookwasm plugin build`` (or ``python -m hookwasm.build``) makes it a
WebAssembly component of the contract ``hookwasm:plugin@0.2.0`` (``wit/plugin.wit``) with
componentize-py. The same module runs under ``python -m unittest`` through
:mod:`hookwasm.testing`.

.. code-block:: python

    from hookwasm import Action, Event

    def transform(event: Event) -> Action:
        data = event.json()
        if "vip" not in data["conversation"].get("labels", []):
            return Action.skip("not a VIP conversation")
        return Action.deliver_json({"text": f"VIP: {data['message']['body']}"})
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TypeVar

__all__ = ["Action", "Event", "config", "log"]

T = TypeVar("T")


@dataclass(frozen=True)
class Event:
    """One EasyDesk event, as the producer posted it."""

    id: str
    """Unique event id, stable across retries."""
    event_type: str
    """Dotted event type, e.g. ``message.created``."""
    timestamp: str
    """RFC 3339 timestamp of when the event happened."""
    data: bytes
    """The event's ``data`` object as UTF-8 JSON text."""

    def json(self) -> Any:
        """``data`` parsed."""
        try:
            return _json.loads(self.data)
        except ValueError as error:
            raise ValueError(f"event data is not valid JSON: {error}") from None


@dataclass(frozen=True)
class Action:
    """What to deliver for an event: build one with the class's constructors."""

    kind: str
    """``deliver``, ``pass`` or ``skip``."""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    reason: str = ""

    @staticmethod
    def deliver(body: bytes | str, headers: dict[str, str] | None = None) -> "Action":
        """Send ``body`` (a str is sent as UTF-8) with extra ``headers``. It must be JSON
        unless a ``content-type`` header is given."""
        data = body.encode() if isinstance(body, str) else bytes(body)
        return Action("deliver", list((headers or {}).items()), data)

    @staticmethod
    def deliver_json(value: Any, sort_keys: bool = False) -> "Action":
        """Send ``value`` as compact JSON, non-ASCII characters as they are. With
        ``sort_keys``, object keys are written sorted (as Rust's ``serde_json::Value`` writes
        them), else in insertion order."""
        text = _json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)
        return Action.deliver(text)

    @staticmethod
    def skip(reason: str) -> "Action":
        """Send nothing; the delivery is recorded as filtered with ``reason``."""
        return Action("skip", reason=reason)


Action.PASS = Action("pass")  # type: ignore[attr-defined]
"""Send the event envelope unchanged."""


class _Call:
    """One call's config and log lines. A fresh instance runs every call; tests reset it."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self.config = dict(pairs)
        self.logs: list[tuple[str, str]] = []


_current = _Call()


class _Config:
    """The webhook's ``plugin_config``, for the call in progress."""

    def get(self, key: str) -> str | None:
        """The value of ``key``, if set."""
        return _current.config.get(key)

    def keys(self) -> list[str]:
        """Every key that is set, sorted."""
        return sorted(_current.config)

    def require(self, key: str) -> str:
        """The value of ``key``, or an error naming the missing key."""
        value = _current.config.get(key)
        if value is None:
            raise ValueError(f"plugin_config.{key} is required")
        return value

    def list(self, key: str) -> list[str]:
        """Comma-separated list in ``key``, trimmed, empty items dropped; empty if unset."""
        return [item.strip() for item in _current.config.get(key, "").split(",") if item.strip()]

    def flag(self, key: str, default: bool) -> bool:
        """Boolean in ``key`` (``true``/``false``), ``default`` if unset, an error otherwise."""
        value = _current.config.get(key)
        if value is None:
            return default
        if value in ("true", "false"):
            return value == "true"
        raise ValueError(f"plugin_config.{key} must be true or false, got {_json.dumps(value)}")


class _Log:
    """Lines for the host's log, tagged there with the plugin and event. ``print`` output
    reaches the log too, as stdout."""

    def debug(self, message: str) -> None:
        _current.logs.append(("debug", str(message)))

    def info(self, message: str) -> None:
        _current.logs.append(("info", str(message)))

    def warn(self, message: str) -> None:
        _current.logs.append(("warn", str(message)))

    def error(self, message: str) -> None:
        _current.logs.append(("error", str(message)))


config = _Config()
log = _Log()


@dataclass
class Outcome:
    """What a call did: its value (``ok``) or the error's message, and the lines it logged."""

    ok: bool
    value: Any
    error: str | None
    logs: list[tuple[str, str]]


def with_call(pairs: Iterable[tuple[str, str]], body: Callable[[], T]) -> Outcome:
    """Runs ``body`` with ``pairs`` as the config. Shared by the component and the tests."""
    global _current
    _current = _Call(pairs)
    try:
        return Outcome(True, body(), None, _current.logs)
    except Exception as error:  # the plugin failed: the delivery is held with the message
        return Outcome(False, None, str(error) or type(error).__name__, _current.logs)
    finally:
        _current = _Call()
