"""Unit tests of {{name}}: make test (python3 -m unittest)."""

import unittest

import app
from tidewater import Event, Invalid, state


class ProcessTest(unittest.TestCase):
    def test_shouts_and_counts(self):
        state.clear()
        self.assertEqual(app.process(Event("in", b"hi"))[0].value, "HI")
        self.assertEqual(app.process(Event("in", b"yo"))[0].headers, [("seen", b"2")])
        with self.assertRaises(Invalid):
            app.process(Event("in", None))


if __name__ == "__main__":
    unittest.main()
