"""``redact-pii-py``: masks email addresses and phone numbers in every string of the payload,
and blanks whole fields by name. The result is the event envelope with redacted ``data``.
The Python twin of ``plugins/redact-pii``: the same config, and the same bytes out for every
event (a test checks it on every sample). One difference: numbers are written again as Python
writes them, so a float in exponent form differs from the Rust plugin's (``1e+16`` against
``1e16``), and an integer past 64 bits stays exact where Rust makes it a float.

=============== ==============================================================
key             meaning
=============== ==============================================================
``detect``      comma list of ``email``, ``phone`` (default both)
``fields``      keys whose values are replaced whole wherever they appear
``skip_fields`` keys never touched (default ``id,url,created_at,updated_at``)
``replacement`` text used for a masked value (default ``[redacted]``)
=============== ==============================================================
"""

import re

from hookwasm import Action, Event, config, log

# ASCII classes, as the Rust plugin's regex-lite reads `\d`.
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", re.ASCII)
PHONE = re.compile(r"\+?\(?\d[\d ().-]{5,}\d", re.ASCII)
DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
DEFAULT_SKIP = "id,url,created_at,updated_at"


class Rules:
    def __init__(self) -> None:
        detect = config.list("detect") if config.get("detect") is not None else ["email", "phone"]
        for detector in detect:
            if detector not in ("email", "phone"):
                raise ValueError(f'plugin_config.detect: unknown detector "{detector}" (email, phone)')
        self.email = "email" in detect
        self.phone = "phone" in detect
        self.fields = config.list("fields")
        skip = config.list("skip_fields") if config.get("skip_fields") is not None else DEFAULT_SKIP.split(",")
        self.skip_fields = skip
        replacement = config.get("replacement")
        self.replacement = "[redacted]" if replacement is None else replacement

    def redact_text(self, text: str) -> str:
        out = text
        if self.email:
            out = EMAIL.sub(lambda _: self.replacement, out)
        if self.phone:
            out = PHONE.sub(self.phone_or_kept, out)
        return out

    def phone_or_kept(self, match: re.Match) -> str:
        candidate = match.group(0)
        digits = sum(c.isascii() and c.isdigit() for c in candidate)
        return self.replacement if 7 <= digits <= 15 and not DATE.match(candidate) else candidate

    def redact(self, value):
        """The value redacted, and how many values changed."""
        if isinstance(value, str):
            changed = self.redact_text(value)
            return changed, int(changed != value)
        if isinstance(value, list):
            results = [self.redact(item) for item in value]
            return [v for v, _ in results], sum(n for _, n in results)
        if isinstance(value, dict):
            out, count = {}, 0
            for key, item in value.items():
                if key in self.skip_fields:
                    out[key] = item
                elif key in self.fields and item is not None and not isinstance(item, dict):
                    out[key], count = self.replacement, count + 1
                else:
                    out[key], changed = self.redact(item)
                    count += changed
            return out, count
        return value, 0


def check_config() -> None:
    Rules()


def transform(event: Event) -> Action:
    rules = Rules()
    data, redacted = rules.redact(event.json())
    log.debug(f"redacted {redacted} values")
    envelope = {"id": event.id, "type": event.event_type, "timestamp": event.timestamp, "data": data}
    # Sorted keys: what the Rust plugin's `serde_json::Value` writes.
    return Action.deliver_json(envelope, sort_keys=True)
