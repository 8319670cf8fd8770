"""A parse function with injected failures, for the crash-isolation tests.

It lives in its own module so the parser's child process can import it by name.
"""

import os
import signal
import time

from partita import notes as notes_lib


def parse_or_fail(data: bytes, options: notes_lib.ParseOptions) -> dict:
  """Parses, except on three hostile inputs.

  Crashes natively on b'CRASH', hangs for an hour on b'HANG', asks for 16 GiB on b'HOG'.
  """
  if data == b'CRASH':
    os.kill(os.getpid(), signal.SIGSEGV)
  if data == b'HANG':
    time.sleep(3600)
  if data == b'HOG':
    # One allocation far over any limit the tests set: it fails at once, without touching
    # memory, so the outcome cannot depend on how fast this machine faults pages in.
    return {'never': bytearray(2**34)}  # 16 GiB
  return notes_lib.parse_midi(data, options)
