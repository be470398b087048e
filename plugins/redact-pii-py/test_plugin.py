import unittest
from pathlib import Path

import plugin
from hookwasm import testing

EVENTS = Path(__file__).resolve().parent.parent.parent / "examples" / "events"


def sample(name: str):
    return testing.load_event(str(EVENTS / f"{name}.json"))


class RedactPiiTest(unittest.TestCase):
    def redact(self, name, config=None):
        outcome = testing.run(plugin, sample(name), config)
        self.assertTrue(outcome.ok, outcome.error)
        return testing.delivered_json(outcome.value), outcome.logs

    def test_emails_and_phone_numbers_are_masked(self):
        body, logs = self.redact("message.created")
        text = str(body)
        self.assertNotIn("ada.okafor@example.org", text)
        self.assertNotIn("+44 20 7946 0958", text)
        self.assertEqual(body["data"]["message"]["id"], "msg_0Pz71")
        self.assertEqual(logs, [("debug", "redacted 5 values")])

    def test_fields_are_blanked_by_name_and_skip_fields_are_kept(self):
        body, _ = self.redact("message.created", {"fields": "name", "skip_fields": "id"})
        self.assertEqual(body["data"]["conversation"]["customer"]["name"], "[redacted]")
        self.assertEqual(body["data"]["conversation"]["created_at"], "2026-11-27T09:58:02Z")

    def test_dates_are_not_phone_numbers(self):
        outcome = testing.run(plugin, testing.event("x", {"note": "due 2026-11-27 10:15"}), {"skip_fields": ""})
        self.assertEqual(testing.delivered_json(outcome.value)["data"]["note"], "due 2026-11-27 10:15")

    def test_an_unknown_detector_is_refused(self):
        outcome = testing.check_config(plugin, {"detect": "email,ssn"})
        self.assertFalse(outcome.ok)
        self.assertIn("unknown detector", outcome.error)


if __name__ == "__main__":
    unittest.main()
