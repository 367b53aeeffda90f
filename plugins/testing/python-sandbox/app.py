"""A processor that tries to leave its sandbox, for the host's tests.

Each event's value names one attempt; the output says what happened:
``<attempt>: ok <detail>`` when it worked, ``<attempt>: <ExceptionClass>``
when Python raised. The host grants nothing, so every attempt must fail.

- ``read-file``: reads /etc/passwd
- ``list-root``: lists /
- ``tcp``: opens a TCP connection to 127.0.0.1:9
- ``dns``: resolves localhost
- ``env``: counts the environment variables (ok 0 is expected)
- ``print``: writes a line to stdout, one to stderr and one through the
  ``log`` interface
"""

import os
import socket
import sys

import tidewater
from tidewater import Event, Output


def attempt(what: str) -> str:
    try:
        if what == "read-file":
            with open("/etc/passwd", "rb") as f:
                return f"ok {len(f.read())} bytes"
        if what == "list-root":
            return f"ok {len(os.listdir('/'))} entries"
        if what == "tcp":
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.connect(("127.0.0.1", 9))
            return "ok connected"
        if what == "dns":
            return f"ok {socket.gethostbyname('localhost')}"
        if what == "env":
            return f"ok {len(os.environ)}"
        if what == "print":
            print("hello from python on stdout")
            print("hello from python on stderr", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            tidewater.log.info("hello from python through the log interface")
            return "ok printed"
        return "unknown attempt"
    except Exception as e:  # noqa: BLE001 - the class is the answer
        return type(e).__name__


@tidewater.processor
def process(event: Event) -> list[Output]:
    what = event.value_str() or ""
    return [Output(f"{what}: {attempt(what)}")]


from tidewater.component import WitWorld  # noqa: E402,F401
