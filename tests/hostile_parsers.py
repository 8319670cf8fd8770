"""A parse function with injected failures, for the crash-isolation tests.

It lives in its own module so the parser's child process can import it by name.
"""

import os
import signal
import time

from partita import notes as notes_lib


def parse_or_fail(data: bytes, options: notes_lib.ParseOptions) -> dict:
  """Crashes natively on b'CRASH', hangs on b'HANG', exhausts memory on b'HOG'; else parses."""
  if data == b'CRASH':
    os.kill(os.getpid(), signal.SIGSEGV)
  if data == b'HANG':
    time.sleep(3600)
  if data == b'HOG':
    hoard = [bytearray(2**28) for _ in range(64)]  # 16 GiB
    return {'never': hoard}
  return notes_lib.parse_midi(data, options)
