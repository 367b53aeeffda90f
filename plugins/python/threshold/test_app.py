"""Unit tests of threshold, run natively: python3 -m unittest (make test does)."""

import unittest

import app
from tidewater import Config, Event, state


def reading(flow):
    v = '{"device":"pipe","ts":"t","kind":"flowmeter","measurements":{"flow_l_s":%s}}' % flow
    return Event("readings-enriched", v.encode())


class ThresholdTest(unittest.TestCase):
    def test_alerts_on_crossing_and_jump_and_keeps_state(self):
        state.clear()
        app._rules.clear()
        app.init(Config([("flow_l_s.min", "50"), ("flow_l_s.delta", "30")]))
        self.assertEqual(app.process(reading("100")), [])
        self.assertEqual(
            [o.value for o in app.process(reading("24.5"))],
            [
                '{"device":"pipe","ts":"t","measurement":"flow_l_s","alert":"below-min","value":24.5,"limit":50,"previous":100}',
                '{"device":"pipe","ts":"t","measurement":"flow_l_s","alert":"jump","value":24.5,"limit":30,"previous":100}',
            ],
        )
        self.assertEqual(app.process(reading("25")), [])
        raw = state.get(b"pipe/flow_l_s")
        self.assertEqual(app._TRACK.unpack(raw), (3, 25.0, 24.5, 100.0, app.BELOW))


if __name__ == "__main__":
    unittest.main()
