"""The evaluation report, from the numbers of ``evaluation.evaluate``.

Markdown, ``index.html``, ``evaluation.json``, PNG plots and the first pieces of every set as
MIDI, piano rolls and WAV.

``index.html`` (``partita.listening_page``) holds the report's tables and plots, then the real,
model and n-gram continuations of the same primes side by side, each labelled for what it is,
with a player where FluidSynth rendered a WAV. The tables are the Markdown report's, turned
into HTML by the ``markdown`` package.

No TensorFlow here: the report is drawn from plain numbers and numpy arrays, with bare
matplotlib Figures on the Agg canvas (as ``partita.midi_io`` draws piano rolls), so nothing
needs a display and nothing is left open. Every file is written atomically, on a local disk or
on ``gs://`` (``partita.atomic``).
"""

from __future__ import annotations

import io
import json
import os

import markdown
from matplotlib import figure as figure_lib
from matplotlib.backends import backend_agg
import numpy as np

from evaluation import conditioning, listening
from partita import atomic, audio, constants, listening_page, midi_io, music_stats

REPORT_FILE = 'report.md'
REPORT_TITLE = 'Evaluation report'
RESULTS_FILE = 'evaluation.json'
CURVES_PNG = 'training_curves.png'
FEATURES_PNG = 'features.png'
DISTANCES_PNG = 'distances.png'
PIECES_DIR = 'pieces'
PIECES_PER_SET = 3
SET_COLOURS = {'real': 'black', 'model': 'tab:red', 'n-gram': 'tab:blue'}
# What each set's continuations are, on their piano rolls, players and links.
SET_LABELS = {'real': 'real continuation', 'model': 'model continuation',
              'n-gram': 'n-gram continuation'}
# TensorBoard tags of trainer.task (trainer.metrics.TRAINING_METRICS) drawn in the
# training-curves figure, one panel each.
CURVE_PANELS = (('pitch NLL (nats/note)', ('pitch_nll',)),
                ('pitch accuracy', ('pitch_accuracy', 'pitch_top5_accuracy')),
                ('timing NLL (nats/note, 10 ms grid)', ('step_nll', 'duration_nll')))


def headline_lines(results: dict) -> list[str]:
  """The few lines a person reads first.

  The model against the best baselines in pitch NLL and accuracy, step + duration NLL and note
  NLL, mean overlapping area of the generated sets, and the measures a listener hears
  (``evaluation.listening``) with the model's targets.
  """
  rows = results['likelihood']
  model, best = rows['model'], rows[results['best_ngram']]

  def comparison(model_value: float, baseline_value: float) -> str:
    gap = baseline_value - model_value
    return f"model {'better' if gap > 0 else 'worse'} by {abs(gap):.3f}"

  model_timing = model['step_nll'] + model['duration_nll']
  lines = [
      f"test pitch NLL  model {model['pitch_nll']:.3f} vs best n-gram "
      f"({results['best_ngram']}) {best['pitch_nll']:.3f} nats/note: "
      + comparison(model['pitch_nll'], best['pitch_nll']),
      f"test accuracy   model top-1 {model['pitch_accuracy']:.1%} top-5 "
      f"{model['pitch_top5_accuracy']:.1%} vs {results['best_ngram']} top-1 "
      f"{best['pitch_accuracy']:.1%} top-5 {best['pitch_top5_accuracy']:.1%} "
      f"({results['test_windows']} windows)",
      f"test timing NLL model step + duration {model_timing:.3f} vs {results['best_timing']} "
      f"{results['baseline_timing_nll']:.3f} nats/note (10 ms grid): "
      + comparison(model_timing, results['baseline_timing_nll']),
      f"test note NLL   model {model['note_nll']:.3f} vs {results['best_ngram']} + "
      f"{results['best_timing']} {results['baseline_note_nll']:.3f} nats/note: "
      + comparison(model['note_nll'], results['baseline_note_nll'])]
  statistics = results['statistics']
  if 'mean_oa' in statistics:
    lines.append(
        f"music stats     mean overlapping area with real music: model "
        f"{statistics['mean_oa']['model']:.3f} vs n-gram {statistics['mean_oa']['n-gram']:.3f}, "
        f"lowest of the rhythm features model {statistics['min_rhythm_oa']['model']:.3f} vs "
        f"n-gram {statistics['min_rhythm_oa']['n-gram']:.3f} ({statistics['pieces']} pieces x "
        f"{statistics['notes']} notes; higher is closer)")
  else:
    lines.append(f"music stats     skipped: {statistics['skipped']}")
  if 'listening' in results:
    lines += listening.headline_lines(results['listening'])
  if 'conditioning' in results:
    lines += conditioning.headline_lines(results['conditioning'])
  return lines


def write_report(out_dir: str, results: dict, curves: dict, comparisons: dict, features: dict,
                 sets: dict, primes: dict, generated_by_label: dict | None = None) -> None:
  """Writes every file of the report into ``out_dir``.

  Args:
    out_dir: the report's folder, on a local disk or on ``gs://``.
    results: the numbers (written as ``evaluation.json`` and tabulated).
    curves: ``{'train'|'validation': {tag: (steps, values)}}``; empty without logs.
    comparisons: ``{'model'|'n-gram': music_stats.compare_sets(real, that set)}``.
    features: ``{set name: music_stats.set_features(pieces)}``.
    sets: ``{set name: list of notes dicts}`` (continuations only).
    primes: ``{feature: [pieces, window]}``, the prime before each piece of every set.
    generated_by_label: ``{label: [notes dicts]}``, the pieces of the style evaluation
      (``evaluation.conditioning``), when the test pieces carry labels.
  """
  atomic.makedirs(out_dir)
  atomic.write_bytes(os.path.join(out_dir, RESULTS_FILE), json.dumps(results, indent=1).encode())
  sections = [_header(results), _likelihood_section(results)]
  entries, audio_note = [], None
  if comparisons:
    _save(_features_figure(features), os.path.join(out_dir, FEATURES_PNG))
    _save(_distances_figure(comparisons), os.path.join(out_dir, DISTANCES_PNG))
    sections.append(_statistics_section(results))
    if 'listening' in results:
      sections.append(listening.report_section(results['listening']))
    soundfont = audio.default_soundfont()
    audio_note = audio.unavailable_reason(soundfont)
    entries = _write_pieces(out_dir, sets, primes, None if audio_note else soundfont)
  else:
    sections.append(f"## Music statistics\n\nSkipped: {results['statistics']['skipped']}.\n")
  if 'conditioning' in results:
    sections.append(conditioning.report_section(results['conditioning'], out_dir,
                                                generated_by_label or {}, PIECES_DIR))
  if curves:
    _save(_curves_figure(curves, results), os.path.join(out_dir, CURVES_PNG))
    sections.append(f'## Training curves\n\n![training curves]({CURVES_PNG})\n\n'
                    'TensorBoard scalars of `trainer.task` (`MODEL_DIR/logs`); the dashed line '
                    'is the best n-gram\'s test NLL.\n')
  else:
    sections.append('## Training curves\n\nNo TensorBoard logs beside the export.\n')
  pieces_intro, piano_rolls = _pieces_section(entries, results)
  atomic.write_bytes(os.path.join(out_dir, REPORT_FILE),
                     '\n'.join(sections + [pieces_intro + piano_rolls]).encode())
  # The page has its own title, and shows the pieces as its own sections after the text.
  text = '\n'.join(sections + [pieces_intro]).removeprefix(f'# {REPORT_TITLE}\n')
  body = markdown.markdown(text, extensions=['tables'])
  page = listening_page.render(REPORT_TITLE, entries, audio_note=audio_note, body_html=body)
  atomic.write_bytes(os.path.join(out_dir, listening_page.PAGE_FILE), page.encode())


def _header(results: dict) -> str:
  lines = '\n'.join(f'- {line}' for line in headline_lines(results))
  return (f"# {REPORT_TITLE}\n\nExport `{results['export']}`, data `{results['data']}`, "
          f"{results['test_windows']} test windows; {results['seconds']} s.\n\n{lines}\n")


LIKELIHOOD_COLUMNS = (('pitch NLL', 'pitch_nll'), ('top-1', 'pitch_accuracy'),
                      ('top-5', 'pitch_top5_accuracy'), ('step NLL', 'step_nll'),
                      ('duration NLL', 'duration_nll'), ('note NLL', 'note_nll'))


def _likelihood_section(results: dict) -> str:
  rows = dict(results['likelihood'])
  combined = f"{results['best_ngram']} + {results['best_timing']}"
  rows[combined] = {'note_nll': results['baseline_note_nll']}
  header = ('| predictor | ' + ' | '.join(title for title, _ in LIKELIHOOD_COLUMNS)
            + ' |\n| --- |' + ' ---: |' * len(LIKELIHOOD_COLUMNS))

  def cell(row, name):
    if name not in rows[row]:
      return ''
    return f'{rows[row][name]:.1%}' if 'accuracy' in name else f'{rows[row][name]:.3f}'

  lines = [header]
  bold = ('model', results['best_ngram'], results['best_timing'], combined)
  for row in rows:
    label = row.replace('|', '\\|')  # a pipe in a name would end the cell
    label = f'**{label}**' if row in bold else label
    lines.append(f'| {label} | ' + ' | '.join(cell(row, name) for _, name in LIKELIHOOD_COLUMNS)
                 + ' |')
  return (
      '## Likelihood on the test split\n\n' + '\n'.join(lines) + '\n\n'
      'Means over every test window (each note after the first window of each test piece, '
      'once), in nats/note. Step and duration NLLs are the log-probability of the 10 ms bin '
      'holding the true time (bin 0 is [0, 5 ms): chords); the note NLL is pitch + step + '
      'duration, each of the model\'s heads given the true parts before its own. Baselines are '
      'fitted on the training targets and score the same notes from the same windows: n-grams '
      'are interpolated Kneser-Ney; *repeat previous* gives the previous pitch probability '
      f"1 - eps (eps = {results['repeat_previous_eps']:.3f}, the training rate of pitch "
      'changes; its maximum-likelihood value) and the rest eps / 127 each; *timing histogram* '
      'is the training histogram of binned steps and durations (add-one smoothing), '
      '*| previous* the same conditioned on the previous note\'s binned step or duration; the '
      f'last row adds the best n-gram\'s pitch NLL to the better timing baseline\'s. Ties in '
      'probability count against top-k hits.\n\n'
      f"The model predicts a note's parts in the order `{results['note_order']}`: each of its "
      'NLLs is given the true parts before it (its pitch NLL, after the step, knows whether the '
      'note joins a chord), while the n-grams see no timing at all, so the note NLL is the '
      'like-for-like comparison.\n')


def _statistics_section(results: dict) -> str:
  statistics = results['statistics']
  lines = ['| feature | OA model | OA n-gram | KLD model | KLD n-gram |',
           '| --- | ---: | ---: | ---: | ---: |']
  for feature, values in statistics['features'].items():
    label = f'{feature} (rhythm)' if feature in music_stats.RHYTHM_FEATURES else feature
    lines.append(f"| {label} | {values['model']['oa']:.3f} | {values['n-gram']['oa']:.3f} | "
                 f"{values['model']['kld']:.3f} | {values['n-gram']['kld']:.3f} |")
  lines.append(f"| **mean** | **{statistics['mean_oa']['model']:.3f}** | "
               f"**{statistics['mean_oa']['n-gram']:.3f}** | "
               f"{statistics['mean_kld']['model']:.3f} | {statistics['mean_kld']['n-gram']:.3f} |")
  return (
      '## Music statistics\n\n'
      f"{statistics['pieces']} primes (the first window of test chunks spread over the split); "
      f"after each, {statistics['notes']} notes of: the real piece (*real*), the model's "
      f"`generate` signature (temperature {statistics['temperature']}, no top-k/top-p, seed "
      f"{statistics['seed']}), and the {results['best_ngram']} (pitches sampled, timing drawn "
      'from training notes). Per feature, the Euclidean distances between per-piece feature '
      'vectors within the real set (intra-set) and between each generated piece and each real '
      'one (inter-set) are smoothed by Gaussian kernel density estimates and compared (Yang & '
      'Lerch 2018): overlapping area (OA, higher is closer to real) and KL(intra || inter) '
      '(KLD, nats, lower is closer).\n\n' + '\n'.join(lines) + '\n\n'
      f'![feature distributions]({FEATURES_PNG})\n\n'
      f'![distance densities]({DISTANCES_PNG})\n')


def _write_pieces(out_dir: str, sets: dict, primes: dict,
                  soundfont: str | None) -> list[listening_page.Entry]:
  """Writes the first pieces of every set into ``pieces/``; returns one page entry per prime.

  Each piece is written as MIDI, piano roll and WAV (with a soundfont); each entry holds its
  prime's sets side by side.
  """
  atomic.makedirs(os.path.join(out_dir, PIECES_DIR))
  entries = []
  for i in range(min(PIECES_PER_SET, len(next(iter(sets.values()))))):
    prime = {key: primes[key][i] for key in constants.NOTE_FEATURES}
    prime['step'] = np.concatenate([[0.0], prime['step'][1:]])
    clips = []
    for name, pieces in sets.items():
      stem = os.path.join(PIECES_DIR, f"{name.replace('-', '')}_{i:02d}")
      label = f'{SET_LABELS[name]} of prime {i}'
      midi = midi_io.midi_bytes(prime, pieces[i])
      atomic.write_bytes(os.path.join(out_dir, stem + '.mid'), midi)
      midi_io.write_piano_roll(os.path.join(out_dir, stem + '.png'), prime, pieces[i],
                               title=label, continuation_label=SET_LABELS[name])
      if soundfont:
        # From the bytes, not the file: FluidSynth reads and writes local files only.
        atomic.write_bytes(os.path.join(out_dir, stem + '.wav'), audio.wav_bytes(midi, soundfont))
      clips.append(listening_page.Clip(label, stem + '.mid', stem + '.png',
                                       stem + '.wav' if soundfont else None))
    entries.append(listening_page.Entry(
        f'prime {i}', (('prime', f'test prime {i} (grey on each piano roll)'),), tuple(clips)))
  return entries


def _pieces_section(entries: list[listening_page.Entry], results: dict) -> tuple[str, str]:
  """The Markdown of the pieces: its heading and text, and their piano rolls by prime."""
  if not entries:
    return '## Pieces\n\nNone: the music statistics were skipped.\n', ''
  images = [f'![{clip.label}]({clip.image})' for entry in entries for clip in entry.clips]
  return ('## Pieces\n\nThe same test primes (grey) continued by the real piece, the model and '
          f"the {results['best_ngram']} (red); their MIDI, piano rolls and WAV are in "
          f'`{PIECES_DIR}/`, to listen to in `{listening_page.PAGE_FILE}`.\n\n',
          '\n'.join(images) + '\n')


def _figure(panels: int, columns: int, size=(4.0, 3.0)) -> tuple[figure_lib.Figure, list]:
  rows = -(-panels // columns)
  figure = figure_lib.Figure(figsize=(size[0] * columns, size[1] * rows))
  backend_agg.FigureCanvasAgg(figure)
  axes = [figure.add_subplot(rows, columns, i + 1) for i in range(panels)]
  return figure, axes


def _save(figure: figure_lib.Figure, path: str) -> None:
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=80)
  atomic.write_bytes(path, buffer.getvalue())


def _curves_figure(curves: dict, results: dict) -> figure_lib.Figure:
  figure, axes = _figure(len(CURVE_PANELS), len(CURVE_PANELS))
  for ax, (title, tags) in zip(axes, CURVE_PANELS):
    for run, style in (('train', '-'), ('validation', 'o-')):
      for tag in tags:
        if tag in curves.get(run, {}):
          steps, values = curves[run][tag]
          ax.plot(steps, values, style, markersize=3, label=f'{run} {tag}')
    if 'pitch_nll' in tags:
      best = results['best_ngram']
      ax.axhline(results['likelihood'][best]['pitch_nll'], color='tab:blue', linestyle='--',
                 label=f'{best} (test)')
    ax.set_title(title)
    ax.set_xlabel('training step')
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize='small')
  return figure


def _features_figure(features: dict) -> figure_lib.Figure:
  """Per feature, each set's distribution.

  Scalar features as per-piece value histograms, vector features as the mean vector over pieces.
  """
  figure, axes = _figure(len(music_stats.FEATURES), 5)
  for ax, feature in zip(axes, music_stats.FEATURES):
    values = {name: set_values[feature] for name, set_values in features.items()}
    if next(iter(values.values())).shape[1] == 1:
      every = np.concatenate([v[:, 0] for v in values.values()])
      bins = np.linspace(every.min(), every.max() + 1e-9, 16)
      for name, v in values.items():
        ax.hist(v[:, 0], bins, histtype='step', color=SET_COLOURS[name], label=name)
      ax.set_ylabel('pieces')
    else:
      for name, v in values.items():
        ax.plot(v.mean(axis=0), color=SET_COLOURS[name], label=name)
      ax.set_xlabel('component')
      ax.set_ylabel('mean share')
    ax.set_title(feature.replace('_', ' '), fontsize='medium')
  axes[0].legend(fontsize='small')
  return figure


def _distances_figure(comparisons: dict) -> figure_lib.Figure:
  """Per feature, the densities of the distances that OA and KLD compare.

  The density of the real set's intra-set distances and of each generated set's inter-set
  distances.
  """
  figure, axes = _figure(len(music_stats.FEATURES), 5)
  for ax, feature in zip(axes, music_stats.FEATURES):
    drew_reference = False
    for name, comparison in comparisons.items():
      values = comparison[feature]
      if not drew_reference:
        ax.plot(values['grid'], values['reference_density'], color=SET_COLOURS['real'],
                label='real (intra)')
        drew_reference = True
      ax.plot(values['grid'], values['other_density'], color=SET_COLOURS[name],
              label=f"{name} (inter), OA {values['oa']:.2f}")
    ax.set_title(feature.replace('_', ' '), fontsize='medium')
    ax.set_xlabel('distance')
    ax.legend(fontsize='x-small')
  return figure
