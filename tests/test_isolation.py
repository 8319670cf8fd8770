"""Crash isolation: a parser that crashes, hangs or exhausts memory on one file costs that file."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing import util as beam_testing
from apache_beam.transforms import window
import hostile_parsers
import midi_builders

from beam_pipelines import elements, preprocess, runner
from partita import failures, isolation
from partita import notes as notes_lib

OPTIONS = notes_lib.ParseOptions()
LIMITS = isolation.IsolationOptions(timeout_seconds=3.0, memory_bytes=2 * 2**30)


def test_parser_process_survives_crash_hang_and_memory_blow_up():
  parser = isolation.ParserProcess(LIMITS)
  good = midi_builders.midi_bytes(midi_builders.random_melody(0, 12))
  try:
    outcomes = []
    for data in (good, b'CRASH', good, b'HANG', good, b'HOG', good, b'not midi'):
      try:
        outcomes.append(parser.parse(hostile_parsers.parse_or_fail, data, OPTIONS))
      except failures.RejectionError as e:
        outcomes.append((e.reason, e.detail))
  finally:
    parser.close()
  expected = midi_builders.expected_notes(midi_builders.random_melody(0, 12))
  for piece in outcomes[0:8:2]:
    assert piece['pitch'].tolist() == expected['pitch'].tolist()
  assert outcomes[1] == ('parser_crash', 'the parser process died (signal SIGSEGV)')
  assert outcomes[3] == ('parse_timeout', 'parsing took longer than 3 s')
  assert outcomes[5] == ('out_of_memory', 'parsing needed more than 2.0 GiB')
  assert outcomes[7] == ('not_midi', 'file does not start with a MIDI header (MThd)')


def test_parse_next_answers_each_file_in_turn_through_crashes_and_large_answers():
  """While the child parses one file the caller holds the next.

  Every outcome comes back with its own context, a crash or hang costs only its file, and
  answers and files over a pipe's 64 KB do not deadlock the two processes.
  """
  parser = isolation.ParserProcess(LIMITS)
  small = midi_builders.random_melody(0, 12)
  large = midi_builders.random_melody(1, 12_000)  # about 100 KB of MIDI, 120 KB of notes
  files = [('small', midi_builders.midi_bytes(small)), ('crash', b'CRASH'),
           ('large', midi_builders.midi_bytes(large)), ('hang', b'HANG'),
           ('large again', midi_builders.midi_bytes(large)), ('bad', b'not midi'),
           ('small again', midi_builders.midi_bytes(small))]
  assert len(files[2][1]) > 65536
  try:
    answered = [parser.parse_next(hostile_parsers.parse_or_fail, data, OPTIONS, name)
                for name, data in files]
    answered.append(parser.finish())
    assert parser.finish() is None
  finally:
    parser.close()
  assert answered[0] is None
  outcomes = dict(answered[1:])
  assert list(outcomes) == [name for name, _ in files]
  for name, melody in (('small', small), ('large', large), ('large again', large),
                       ('small again', small)):
    expected = midi_builders.expected_notes(melody)
    assert outcomes[name]['pitch'].tolist() == expected['pitch'].tolist()
  rejected = {name: (e.reason, e.detail) for name, e in outcomes.items()
              if isinstance(e, failures.RejectionError)}
  assert rejected == {
      'crash': ('parser_crash', 'the parser process died (signal SIGSEGV)'),
      'hang': ('parse_timeout', 'parsing took longer than 3 s'),
      'bad': ('not_midi', 'file does not start with a MIDI header (MThd)')}


def test_an_input_left_in_flight_by_a_failed_bundle_never_reaches_the_next_bundle():
  fn = preprocess.ParsePieceFn(hostile_parsers.parse_or_fail, OPTIONS, LIMITS)
  fn.setup()
  try:
    fn.start_bundle()
    first = elements.InputBytes('first.mid',
                                midi_builders.midi_bytes(midi_builders.random_melody(0, 12)))
    assert list(fn.process(first, 0, window.GlobalWindow())) == []  # in the child, unanswered
    # The bundle fails here: the runner retries it elsewhere and starts another on this DoFn.
    fn.start_bundle()
    second = elements.InputBytes('second.mid',
                                 midi_builders.midi_bytes(midi_builders.random_melody(1, 12)))
    outputs = list(fn.process(second, 0, window.GlobalWindow())) + list(fn.finish_bundle())
  finally:
    fn.teardown()
  assert [copy.input.name for _, copy in (output.value for output in outputs)] == ['second.mid']


def test_a_crashing_file_costs_that_file_not_the_beam_job():
  inputs = [elements.InputBytes(f'good{seed}.mid',
                                midi_builders.midi_bytes(midi_builders.random_melody(seed, 12)))
            for seed in range(3)]
  inputs += [elements.InputBytes('crash.mid', b'CRASH'), elements.InputBytes('hang.mid', b'HANG')]
  with test_pipeline.TestPipeline(runner.LOCAL_RUNNER) as pipeline:
    parsed = (pipeline
              | beam.Create(inputs)
              | beam.ParDo(preprocess.ParsePieceFn(hostile_parsers.parse_or_fail, OPTIONS,
                                                   LIMITS)).with_outputs(
                                                       'dead_letter', main='pieces'))
    beam_testing.assert_that(parsed.pieces | beam.MapTuple(lambda _, copy: copy.input.name),
                             beam_testing.equal_to(['good0.mid', 'good1.mid', 'good2.mid']),
                             label='pieces')
    beam_testing.assert_that(
        parsed.dead_letter | beam.Map(lambda d: (d['input'], d['reason'])),
        beam_testing.equal_to([('crash.mid', 'parser_crash'), ('hang.mid', 'parse_timeout')]),
        label='dead_letters')
