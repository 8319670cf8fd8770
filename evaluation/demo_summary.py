"""The lines the main command (``scripts/demo.sh``) ends with.

They say where each of its outputs lies, and give the validation metrics of the trained model,
the pieces in the style of each composer and the evaluation's headline lines
(:func:`evaluation.report.headline_lines`).

``OUT`` is the demo's output folder (``PARTITA_DEMO_OUT``) as ``scripts/demo.sh`` lays it out:
``data/`` (the dataset), ``model/`` (``metrics.json``, ``logs/``, ``export/`` and the
evaluation's ``report/``), ``generated/`` and ``composers/NAME/``.

Usage::

    python -m evaluation.demo_summary OUT
"""

from __future__ import annotations

import argparse
import json
import os

from evaluation import report
from partita import contract
from trainer import metrics as metrics_lib


def summary_lines(out: str) -> list[str]:
  """The summary of the demo run whose outputs are in ``out``."""
  info = read_json(out, 'data', contract.INFO_FILE)
  metrics = read_json(out, 'model', metrics_lib.METRICS_FILE)
  counts = info['counts']
  with_audio = os.path.exists(os.path.join(out, 'generated', 'sample_000.wav'))
  lines = [
      f"dataset      {out}/data: {counts['pieces_written']} pieces "
      f"({counts['duplicates']} duplicates, {counts['dead_letters']} dead letters), "
      f"{info['splits']['train']['windows']} training windows",
      f'model        {out}/model (TensorBoard: tensorboard --logdir {out}/model/logs)',
      f'export       {out}/model/export',
      f"generated    {out}/generated: MIDI + piano-roll PNG{' + WAV' if with_audio else ''} per "
      f'sample; open {out}/generated/index.html in a browser to look and listen',
      f"validation   pitch NLL {metrics['pitch_nll']:.3f} nats/note, "
      f"accuracy {metrics['pitch_accuracy']:.1%}, top-5 {metrics['pitch_top5_accuracy']:.1%} "
      f"after {metrics['steps']} steps",
      f'report       {out}/model/report/index.html (baselines, music statistics, plots, and '
      'real, model and n-gram pieces side by side; also as report.md)']
  composers_dir = os.path.join(out, 'composers')
  for composer in sorted(os.listdir(composers_dir)) if os.path.isdir(composers_dir) else []:
    lines.append(f'in the style of {composer:<12} {composers_dir}/{composer}/sample_000.mid '
                 f'(and .png; {composers_dir}/{composer}/index.html to listen)')
  return lines + report.headline_lines(read_json(out, 'model', 'report', report.RESULTS_FILE))


def read_json(*path: str) -> dict:
  """The JSON value in the file at ``path``, its parts joined."""
  with open(os.path.join(*path)) as f:
    return json.load(f)


def main() -> None:
  """Prints the summary lines of the demo output folder given on the command line."""
  parser = argparse.ArgumentParser(
      description='Print the summary scripts/demo.sh ends with: where its outputs are, the '
      "model's validation metrics and the evaluation's headline lines.")
  parser.add_argument('out', help="the demo's output folder (PARTITA_DEMO_OUT)")
  print('\n'.join(summary_lines(parser.parse_args().out)))


if __name__ == '__main__':
  main()
