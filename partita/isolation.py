"""Parsing in a child process, so that a native crash, a hang or a memory blow-up on one file
costs that file, not the job.

symusic is C++: a malformed file can crash it outright (a segfault has been reported upstream,
symusic#104), which no ``try`` catches and which would take a Beam worker down with every file
of its bundle, over and over on retry. :class:`ParserProcess` keeps one long-lived child per
caller (a Beam DoFn instance): each file costs one round trip of its bytes and its note arrays,
and a child that dies, overruns its time or exceeds its memory limit is replaced, with the file
rejected under its own reason.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection

from partita.notes import ParseOptions, RejectedPiece

Parse = Callable[[bytes, ParseOptions], dict]


@dataclasses.dataclass(frozen=True)
class IsolationOptions:
  """Limits for one file's parse."""
  timeout_seconds: float = 20.0
  memory_bytes: int = 4 * 2**30  # address space of the child


def _serve(connection: Connection, memory_bytes: int) -> None:
  """The child's loop: (parse, data, options) in, ('ok', notes) or a rejection out."""
  import resource  # pylint: disable=import-outside-toplevel
  resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
  while True:
    try:
      parse, data, options = connection.recv()
    except EOFError:  # the parent is gone
      return
    try:
      connection.send(('ok', parse(data, options)))
    except RejectedPiece as e:
      connection.send(('rejected', e.reason, e.detail))
    except MemoryError:
      connection.send(('rejected', 'out_of_memory',
                       f'parsing needed more than {memory_bytes / 2**30:.1f} GiB'))
    except Exception as e:  # a bug on one odd file must cost that file, not the job
      connection.send(('rejected', 'internal_error', f'{type(e).__name__}: {e}'))


class ParserProcess:
  """One child process that parses files one at a time; restarted after a failure."""

  def __init__(self, options: IsolationOptions = IsolationOptions()):
    self._options = options
    # 'spawn': the parent may run threads (Beam, TensorFlow), which fork would copy mid-state.
    self._context = multiprocessing.get_context('spawn')
    self._process = None
    self._connection = None

  def _start(self) -> None:
    self._connection, child_end = self._context.Pipe()
    self._process = self._context.Process(
        target=_serve, args=(child_end, self._options.memory_bytes), daemon=True)
    self._process.start()
    child_end.close()

  def parse(self, parse: Parse, data: bytes, options: ParseOptions) -> dict:
    """``parse(data, options)`` in the child.

    Raises:
      RejectedPiece: as ``parse`` does, or with reason ``parser_crash`` (the child died),
        ``parse_timeout`` or ``out_of_memory``.
    """
    if self._process is None or not self._process.is_alive():
      self._start()
    try:
      self._connection.send((parse, data, options))
      if not self._connection.poll(self._options.timeout_seconds):
        self.close()
        raise RejectedPiece('parse_timeout',
                            f'parsing took longer than {self._options.timeout_seconds:g} s')
      answer = self._connection.recv()
    except (EOFError, OSError) as e:  # the child died mid-parse
      self._process.join(5)
      code = self._process.exitcode
      self.close()
      cause = (f'signal {signal.Signals(-code).name}' if code and code < 0
               else f'exit code {code}' if code is not None else type(e).__name__)
      raise RejectedPiece('parser_crash', f'the parser process died ({cause})') from e
    if answer[0] == 'ok':
      return answer[1]
    raise RejectedPiece(answer[1], answer[2])

  def close(self) -> None:
    if self._process is not None:
      if self._process.is_alive():
        os.kill(self._process.pid, signal.SIGKILL)
      self._process.join()
      self._connection.close()
    self._process = self._connection = None
