"""Does the label condition the model? Per-label likelihood and a style classifier's verdict.

Two measurements, both on the test split of a dataset whose pieces carry labels
(``partita.labels``):

* **Likelihood with and without the label** (:func:`label_rows`, from the sums
  ``evaluation.evaluate.likelihood`` collects): the test pitch and note NLL of every window
  scored with its piece's true label id and again with the unconditional id, per label with at
  least :data:`MIN_TEST_PIECES` test pieces, and over every labelled window (a window of an
  ``unknown`` piece is scored the same both ways, so the labelled windows are where the label
  can help). Conditioning works when the true label lowers the NLL.
* **Style** (:func:`style_evaluation`): ``evaluation.style``'s classifier is fitted on the
  chunks of real training pieces of every label with an id of its own, scored on the real test
  chunks (the ceiling: how well these statistics tell the labels apart at all) and on pieces the
  model generates for each label, from two starts (:data:`STARTS`): the *same* test primes for
  every label (windows of every label, spread over the split), and no prime (the neutral
  window), so what tells one label's pieces from another's is the label alone.
"""

from __future__ import annotations

import os

import numpy as np

from evaluation import style
from partita import atomic, constants, contract, midi_io
from partita import labels as labels_lib
from serving import export_client
from serving import primes as primes_lib
from serving import sampling as sampling_lib

# Test pieces a label needs for its own row in the per-label table.
MIN_TEST_PIECES = 5
# Training chunks per label the style classifier is fitted on, at most (evenly spread over the
# label's chunks in file order): enough for 185 features, and a big label does not take hours.
MAX_CHUNKS_PER_LABEL = 300
# Where the generated pieces of the style evaluation start: the same test primes for every
# label, or the neutral window (no prime), where the label is all the model is told.
STARTS = ('test primes', 'no prime')
STYLE_PNG = {'real': 'style_real.png', STARTS[0]: 'style_generated_primed.png',
             STARTS[1]: 'style_generated_unprimed.png'}


def own_labels(labels: dict) -> list[str]:
  """The labels with an id of their own (not ``unknown``, not ``other``), in id order."""
  return labels['vocabulary'][labels_lib.OTHER_ID + 1:]


def label_rows(sums: dict[int, dict[str, float]], labels: dict) -> dict:
  """Per-label and overall means from ``{label id: {metric: sum, 'windows': count}}``.

  The metrics are ``pitch_nll``, ``note_nll`` and their ``*_unconditional`` twins.

  Returns ``{'labels': {name: row}, 'labelled': row, 'all': row}``, each row the means, the
  windows and (per label) test pieces; per-label rows only for labels with
  :data:`MIN_TEST_PIECES` test pieces or more.
  """
  def mean(parts: list[dict[str, float]]) -> dict:
    windows = int(sum(part['windows'] for part in parts))
    row = {name: sum(part[name] for part in parts) / max(windows, 1)
           for name in parts[0] if name != 'windows'} if parts else {}
    for metric in ('pitch_nll', 'note_nll'):
      if row:
        row[f'{metric}_gain'] = row[f'{metric}_unconditional'] - row[metric]
    return {**row, 'windows': windows}

  pieces = labels_lib.pieces_per_id(labels, 'test')
  rows = {}
  for label_id, part in sorted(sums.items()):
    if label_id != labels_lib.UNCONDITIONAL_ID and pieces.get(label_id, 0) >= MIN_TEST_PIECES:
      rows[labels['vocabulary'][label_id]] = {**mean([part]), 'test_pieces': pieces[label_id]}
  labelled = [part for label_id, part in sums.items()
              if label_id != labels_lib.UNCONDITIONAL_ID]
  return {'labels': rows, 'labelled': mean(labelled), 'all': mean(list(sums.values())),
          'min_test_pieces': MIN_TEST_PIECES}


def spread(items: list, count: int) -> list:
  """At most ``count`` of ``items``, evenly spaced in their order."""
  if len(items) <= count:
    return list(items)
  return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def chunks_by_label(chunks: list[dict], labels: dict, names: list[str],
                    per_label: int) -> tuple[list[dict], list[str]]:
  """At most ``per_label`` chunks of each label in ``names`` (notes only) and their labels."""
  pieces, piece_labels = [], []
  for name in names:
    label_id = labels['vocabulary'].index(name)
    own = [chunk for chunk in chunks if int(chunk[contract.LABEL_FEATURE]) == label_id]
    for chunk in spread(own, per_label):
      pieces.append({feature: chunk[feature] for feature in constants.NOTE_FEATURES})
      piece_labels.append(name)
  return pieces, piece_labels


def generate_per_label(export, classes: list[str], labels: dict, primes: dict,
                       sampling: sampling_lib.Sampling) -> dict[str, list[dict]]:
  """One piece per prime for every label in ``classes``: ``{label: [notes dicts]}``.

  Row ``i`` of every label is seeded ``sampling.seed + i``, so a label is all that tells them
  apart.
  """
  rows = len(primes['pitch'])
  generated = {}
  for name in classes:
    notes = export_client.generate(export, primes, sampling,
                                   labels=[labels['vocabulary'].index(name)] * rows)
    generated[name] = [{feature: values[i] for feature, values in notes.items()}
                       for i in range(rows)]
  return generated


def style_evaluation(export, info: dict, train_chunks: list[dict], test_chunks: list[dict],
                     primes: dict, sampling: sampling_lib.Sampling) -> tuple[dict, dict]:
  """The style classifier on real test chunks and on pieces generated for each label.

  Pieces are generated from two starts (:data:`STARTS`): the test ``primes`` (``{feature:
  [pieces, window]}``), the same for every label, and the neutral window of
  ``serving.primes.neutral_window`` (as many rows), where the label is the only thing the model
  is told, with ``sampling`` (its ``label_guidance`` included). ``info``: the export's.
  Returns (``{'real': score, 'generated': {start: score}, 'classes': names, ...}``, ``{start:
  {label: [notes dicts]}}``); ``{'skipped': why}`` and no pieces when fewer than two labels
  have both training and test chunks.
  """
  labels = info['labels']
  names = own_labels(labels)
  train, train_labels = chunks_by_label(train_chunks, labels, names, MAX_CHUNKS_PER_LABEL)
  test, test_labels = chunks_by_label(test_chunks, labels, names, MAX_CHUNKS_PER_LABEL)
  classes = [name for name in names if name in train_labels and name in test_labels]
  if len(classes) < 2 or not primes:
    return {'skipped': f'{len(classes)} label(s) have training and test pieces; a style '
                       'classifier needs 2'}, {}
  fitted_on = [i for i, name in enumerate(train_labels) if name in classes]
  classifier = style.fit([train[i] for i in fitted_on], [train_labels[i] for i in fitted_on])
  scored = [i for i, name in enumerate(test_labels) if name in classes]
  real = style.score(classifier, [test[i] for i in scored], [test_labels[i] for i in scored],
                     classes)
  rows = len(primes['pitch'])
  neutral = primes_lib.neutral_window(info, info['window_length'])
  starts = {STARTS[0]: primes,
            STARTS[1]: {name: np.repeat(values[None], rows, axis=0)
                        for name, values in neutral.items()}}
  generated, scores = {}, {}
  for start, start_primes in starts.items():
    generated[start] = generate_per_label(export, classes, labels, start_primes, sampling)
    pieces = [piece for name in classes for piece in generated[start][name]]
    scores[start] = style.score(classifier, pieces, [name for name in classes
                                                     for _ in range(rows)], classes)
  return {'classes': classes, 'train_chunks': len(fitted_on), 'real': real,
          'generated': scores, 'pieces_per_label': rows,
          'label_guidance': sampling.label_guidance}, generated


def headline_lines(conditioning: dict) -> list[str]:
  """The conditioning's figures in a line or two, for the report's headline."""
  labelled = conditioning['likelihood']['labelled']
  lines = [f"label           test pitch NLL with the true label {labelled['pitch_nll']:.3f} vs the "
           f"unconditional id {labelled['pitch_nll_unconditional']:.3f} nats/note: "
           f"{labelled['pitch_nll_gain']:+.3f} gain ({labelled['windows']} labelled windows)"]
  scores = conditioning['style']
  if 'skipped' in scores:
    lines.append(f"style           skipped: {scores['skipped']}")
    return lines
  generated = ', '.join(f"from {start} {score['accuracy']:.1%}"
                        for start, score in scores['generated'].items())
  lines.append(f"style           classifier accuracy on generated pieces {generated} vs chance "
               f"{scores['real']['chance']:.1%} ({len(scores['classes'])} labels x "
               f"{scores['pieces_per_label']}, label guidance {scores['label_guidance']:g}); on "
               f"real test pieces {scores['real']['accuracy']:.1%}")
  return lines


def report_section(conditioning: dict, out_dir: str, generated: dict, pieces_dir: str) -> str:
  """The report's Markdown section on the label, with its plots and pieces.

  Writes the confusion plots into ``out_dir`` and, per label, the first piece generated from no
  prime (MIDI and piano roll) into its ``pieces_dir``. ``generated``: :func:`style_evaluation`'s
  pieces.
  """
  likelihood = conditioning['likelihood']
  lines = ['## Conditioning on the label', '',
           'Test NLL (nats/note) of every window with its true label id and with the '
           f"unconditional id; labels with at least {likelihood['min_test_pieces']} test pieces "
           'get a row. A positive gain means the label helps.', '',
           '| label | test pieces | windows | pitch NLL | unconditional | gain | note NLL | '
           'unconditional | gain |',
           '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  rows = dict(likelihood['labels'], **{'all labelled windows': likelihood['labelled'],
                                       'all windows': likelihood['all']})
  for name, row in rows.items():
    lines.append(f"| {name} | {row.get('test_pieces', '')} | {row['windows']} | "
                 f"{row['pitch_nll']:.3f} | {row['pitch_nll_unconditional']:.3f} | "
                 f"{row['pitch_nll_gain']:+.3f} | {row['note_nll']:.3f} | "
                 f"{row['note_nll_unconditional']:.3f} | {row['note_nll_gain']:+.3f} |")
  scores = conditioning['style']
  lines += ['', '### Style classifier', '']
  if 'skipped' in scores:
    return '\n'.join(lines + [f"Skipped: {scores['skipped']}.", ''])
  lines.append(
      f"Logistic regression over per-piece music statistics (`evaluation.style`), fitted on "
      f"{scores['train_chunks']} chunks of real training pieces of {len(scores['classes'])} "
      f"labels. Real test chunks: accuracy {scores['real']['accuracy']:.1%} (the ceiling; "
      f"chance {scores['real']['chance']:.1%}, majority {scores['real']['majority_rate']:.1%}). "
      f"Generated, {scores['pieces_per_label']} pieces per label at label guidance "
      f"{scores['label_guidance']:g} (`--label-guidance`), from the same test primes "
      'for every label, and from no prime (a neutral window: the label is all the model is '
      'told): accuracy ' + ' and '.join(
          f"{score['accuracy']:.1%} ({start})" for start, score in scores['generated'].items())
      + f" against chance {scores['real']['chance']:.1%}.")
  plotted = {'real': scores['real'], **scores['generated']}
  for kind, path in STYLE_PNG.items():
    style.plot_confusion(plotted[kind], os.path.join(out_dir, path),
                         f'style classifier: {kind if kind == "real" else "generated, " + kind}')
    lines += ['', f'![confusion matrix, {kind}]({path})']
  atomic.makedirs(os.path.join(out_dir, pieces_dir))
  links = []
  for name, pieces in generated[STARTS[1]].items():
    stem = os.path.join(pieces_dir, f'label_{name}')
    midi_io.write_midi(os.path.join(out_dir, stem + '.mid'), None, pieces[0], 0)
    midi_io.write_piano_roll(os.path.join(out_dir, stem + '.png'), None, pieces[0],
                             title=f'generated for {name}, no prime')
    links.append(f'[{name}]({stem}.mid) ([piano roll]({stem}.png))')
  return '\n'.join(lines + ['', 'The first piece generated for each label from no prime: '
                            + ', '.join(links), ''])
