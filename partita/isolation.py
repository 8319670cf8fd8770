"""Parsing in a child process: a native crash, hang or memory blow-up costs one file, not the job.

symusic is C++: a malformed file can crash it outright (a segfault has been reported upstream,
symusic#104), which no ``try`` catches and which would take a Beam worker down with every file
of its bundle, over and over on retry. :class:`ParserProcess` keeps one long-lived child per
caller (a Beam DoFn instance): each file costs one round trip of its bytes and its note arrays,
and a child that dies, overruns its time or exceeds its memory limit is replaced, with the file
rejected under its own reason. :meth:`ParserProcess.parse_next` lets the caller work while the
child parses: it starts one file and answers the one before it.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from multiprocessing import connection
import os
import signal
import subprocess
import sys
from typing import Any

from partita import failures
from partita import notes as notes_lib

Parse = Callable[[bytes, notes_lib.ParseOptions], dict]
STARTUP_TIMEOUT_SECONDS = 300


@dataclasses.dataclass(frozen=True)
class IsolationOptions:
  """Limits for one file's parse."""
  timeout_seconds: float = 20.0
  memory_bytes: int = 4 * 2**30  # address space of the child


def _serve(requests: connection.Connection, answers: connection.Connection,
           memory_bytes: int) -> None:
  """The child's loop: (parse, data, options) in, ('ok', notes) or a rejection out."""
  import resource
  resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
  answers.send(('ready',))
  while True:
    try:
      parse, data, options = requests.recv()
    except EOFError:  # the parent is gone
      return
    try:
      answers.send(('ok', parse(data, options)))
    except failures.RejectionError as e:
      answers.send(('rejected', e.reason, e.detail))
    except MemoryError:
      answers.send(('rejected', 'out_of_memory',
                    f'parsing needed more than {memory_bytes / 2**30:.1f} GiB'))
    except Exception as e:  # a bug on one odd file must cost that file, not the job
      answers.send(('rejected', 'internal_error', f'{type(e).__name__}: {e}'))


class ParserProcess:
  """One child process that parses files one at a time; restarted after a failure.

  The child is a fresh ``python -m partita.isolation`` rather than a multiprocessing child:
  'fork' would copy a parent running threads (Beam, TensorFlow) mid-state, and 'spawn' would
  import the parent's main module (all of Beam) again in every child.
  """

  def __init__(self, options: IsolationOptions = IsolationOptions()):
    self._options = options
    self._process = None
    self._requests = self._answers = None
    # (context,) of the file parse_next sent and nobody has answered yet (a context may be None).
    self._in_flight = None

  def _start(self) -> None:
    request_read, request_write = os.pipe()
    answer_read, answer_write = os.pipe()
    # The parse function is pickled by name: the child needs the parent's import path.
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    self._process = subprocess.Popen(
        [sys.executable, '-m', 'partita.isolation', str(request_read), str(answer_write),
         str(self._options.memory_bytes)],
        pass_fds=(request_read, answer_write), env=environment)
    os.close(request_read)
    os.close(answer_write)
    self._requests = connection.Connection(request_write, readable=False)
    self._answers = connection.Connection(answer_read, writable=False)
    # Start-up (an interpreter, numpy, symusic) is not the file's fault and can be slow on a
    # loaded machine, so the parse timeout only starts once the child says it is ready.
    try:
      ready = self._answers.poll(STARTUP_TIMEOUT_SECONDS) and self._answers.recv()
    except (EOFError, OSError):
      ready = None
    if ready != ('ready',):
      self.close()
      raise RuntimeError(f'the parser process did not start within {STARTUP_TIMEOUT_SECONDS} s')

  def parse(self, parse: Parse, data: bytes, options: notes_lib.ParseOptions) -> dict:
    """``parse(data, options)`` in the child.

    Raises:
      failures.RejectionError: as ``parse`` does, or with reason ``parser_crash`` (the child died),
        ``parse_timeout`` or ``out_of_memory``.
      RuntimeError: a file that :meth:`parse_next` started is not finished.
    """
    if self._in_flight is not None:
      raise RuntimeError('finish() the file parse_next started before parsing another')
    self._send(parse, data, options)
    return self._receive()

  def parse_next(self, parse: Parse, data: bytes, options: notes_lib.ParseOptions,
                 context: Any) -> tuple[Any, Any] | None:
    """Starts ``parse(data, options)`` in the child and returns the file started before it.

    Returns ``(its context, its outcome)``, or None if there was none; :meth:`finish` answers the
    last.

    The outcome is the parse's result or the :class:`failures.RejectionError` that
    :meth:`parse` would raise. The previous answer is read before the next file is sent, so
    the child never waits to send an answer while the caller waits to send it a file (each
    pipe holds only 64 KB), whatever their sizes. A file's time limit counts from when its
    answer is awaited, so it gets at least that long.
    """
    previous = self.finish()
    self._send(parse, data, options)
    self._in_flight = (context,)
    return previous

  def finish(self) -> tuple[Any, Any] | None:
    """``(context, outcome)`` of the file :meth:`parse_next` started last, once parsed.

    None if none is in flight.
    """
    if self._in_flight is None:
      return None
    (context,), self._in_flight = self._in_flight, None
    try:
      return context, self._receive()
    except failures.RejectionError as e:
      return context, e

  def _send(self, parse: Parse, data: bytes, options: notes_lib.ParseOptions) -> None:
    if self._process is None or self._process.poll() is not None:
      self.close()
      self._start()
    try:
      self._requests.send((parse, data, options))
    except OSError:  # the child died before reading it: _receive says so
      pass

  def _receive(self) -> dict:
    try:
      if not self._answers.poll(self._options.timeout_seconds):
        self.close()
        raise failures.RejectionError(
            'parse_timeout', f'parsing took longer than {self._options.timeout_seconds:g} s')
      answer = self._answers.recv()
    except (EOFError, OSError) as e:  # the child died mid-parse
      try:
        code = self._process.wait(5)
      except subprocess.TimeoutExpired:
        code = None
      self.close()
      cause = (f'signal {signal.Signals(-code).name}' if code and code < 0
               else f'exit code {code}' if code is not None else type(e).__name__)
      raise failures.RejectionError('parser_crash', f'the parser process died ({cause})') from e
    if answer[0] == 'ok':
      return answer[1]
    raise failures.RejectionError(answer[1], answer[2])

  def close(self) -> None:
    """Stops the child, if one runs, and closes its pipes."""
    if self._process is not None:
      if self._process.poll() is None:
        self._process.kill()
      self._process.wait()
      self._requests.close()
      self._answers.close()
    self._process = self._requests = self._answers = self._in_flight = None


if __name__ == '__main__':
  _serve(connection.Connection(int(sys.argv[1]), writable=False),
         connection.Connection(int(sys.argv[2]), readable=False), int(sys.argv[3]))
