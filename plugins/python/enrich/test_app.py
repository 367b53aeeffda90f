"""Unit tests of enrich, run natively: python3 -m unittest (make test does)."""

import unittest

import app
import tidewater
from tidewater import Event, Invalid


def run(value):
    out = app.process(Event("sensor-readings", value.encode()))
    assert len(out) == 1
    return out[0]


class EnrichTest(unittest.TestCase):
    def test_converts_celsius(self):
        out = run('{"device":"buoy","ts":"2016-02-15T00:00:00Z","temperature (celsius)":4.929}')
        self.assertEqual(out.key, "buoy")
        self.assertEqual(
            out.value,
            '{"device":"buoy","ts":"2016-02-15T00:00:00Z","kind":"thermometer",'
            '"measurements":{"temperature_c":4.929,"temperature_f":40.8722}}',
        )

    def test_nil_cell_becomes_null(self):
        out = run('{"device":"cgm","ts":"t","isig":"nil","glucose":"258"}')
        self.assertEqual(
            out.value,
            '{"device":"cgm","ts":"t","kind":"glucose-monitor",'
            '"measurements":{"glucose_mg_dl":258,"isig_na":null}}',
        )

    def test_invalid_values(self):
        with self.assertRaises(Invalid) as e:
            app.process(Event("t", None))
        self.assertEqual(e.exception.message, "tombstone: a reading needs a value")
        with self.assertRaises(Invalid) as e:
            app.process(Event("t", b"not json"))
        self.assertEqual(e.exception.message, "value is not JSON")

    def test_the_sdk_turns_errors_into_results(self):
        results = tidewater.process_batch([Event("t", b"[1]"), Event("t", b'{"device":"d","ts":"t","glucose":1}')])
        self.assertIsInstance(results[0], Invalid)
        self.assertEqual(results[0].message, "value is not a JSON object")
        self.assertEqual(len(results[1]), 1)


if __name__ == "__main__":
    unittest.main()
