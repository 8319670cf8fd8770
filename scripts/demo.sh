#!/usr/bin/env bash
# The main job, end to end on one machine:
#   corpus -> preprocess (Beam DirectRunner; composers from the folders) -> train
#   (configs/small.yaml) -> export -> fit the critic -> generate (4 pieces, then one per
#   composer, each the critic's best of 4 candidates) -> evaluate
#   (test split vs n-gram baselines, music statistics, conditioning on the composer, report).
# Usage: scripts/demo.sh [CORPUS_FOLDER_OR_GLOB]   (default: music21's bundled corpus as MIDI)
# Each stage's command is printed first and its time after it. Settings (environment):
#   PARTITA_DEMO_OUT     where outputs go (default: outputs/demo)
#   PARTITA_DEMO_CONFIG  training preset (default: configs/small.yaml; configs/tiny.yaml is the
#                        fast one CI uses: a few steps, so the music is noise)
#   PARTITA_VENV         the virtualenv to create or reuse (default: .venv)
#   PARTITA_CACHE_DIR    where the demo corpus is cached (default: ~/.cache/partita)
#   PARTITA_DEMO_MIN_LABEL_PIECES  training pieces a composer needs for its own label id
#                        (default: 8, which gives bach, monteverdi, mozart and beethoven theirs)
# It fails unless the run wrote its MIDI files and its evaluation report.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
source scripts/setup_env.sh demo
out="${PARTITA_DEMO_OUT:-outputs/demo}"
config="${PARTITA_DEMO_CONFIG:-configs/small.yaml}"
timings="install $((SECONDS - start)) s"

# TensorFlow's native start-up lines carry no information for this run.
quiet() {
  "$@" 2>&1 | { grep --line-buffered -vE \
    '^(I0000|E0000|W0000|WARNING: All log messages before absl|To enable the following instructions)' \
    || true; }
}
stage() {
  local name="$1" began=$SECONDS
  shift
  echo; echo "== $name"; echo "\$ $*"
  quiet "$@"
  echo "-- $((SECONDS - began)) s"
  timings="$timings, ${name%% (*} $((SECONDS - began)) s"
}

if [ $# -ge 1 ]; then
  corpus="$1"
else
  stage "demo corpus (music21's bundled scores as MIDI; cached after the first run)" \
    python -m partita.demo_corpus
  corpus="$(python -c 'from partita import demo_corpus; print(demo_corpus.ensure_demo_corpus(progress=False))')"
fi
# The demo corpus is laid out by composer (bach/..., mozart/...): the folders label the pieces.
stage "preprocess" python -m beam_pipelines.preprocess --input "$corpus" --output "$out/data" \
  --label-from-folder --min-label-pieces "${PARTITA_DEMO_MIN_LABEL_PIECES:-8}"
stage "train + export" python -m trainer.task --data "$out/data" --model-dir "$out/model" \
  --config "$config"
# Temperature 0.8 for every piece, and for the evaluation's: on this corpus it keeps the key and
# the variety of pitch classes of real music where 1.0 strays out of key and 0.7 settles on too
# few classes (docs/experiments.md, "The key in three features, and the notes still sounding").
temperature=0.8
# The critic that picks the best of several candidates per piece, fitted on the model's own
# continuations against real music (training and validation splits), into the export. It is
# fitted at the temperature it will judge: one fitted at 1.0 chooses worse pieces at 0.8
# (docs/experiments.md, "The critic at the temperature it judges").
stage "fit the critic" python -m evaluation.critic --data "$out/data" --model "$out/model/export" \
  --temperature $temperature
stage "generate" python -m serving.generate --model "$out/model/export" --out "$out/generated" \
  --num-samples 4 --num-notes 256 --seed 0 --temperature $temperature --candidates 4
# One piece in the style of each composer the model has an id for (at most four), with label
# guidance 3: on this corpus it raises how often a style classifier names the composer of such
# pieces (docs/experiments.md, "Label guidance").
composers=($(python -m partita.demo_composers "$out/model/export"))
for composer in "${composers[@]}"; do
  stage "generate in the style of $composer" python -m serving.generate \
    --model "$out/model/export" --out "$out/composers/$composer" --composer "$composer" \
    --num-samples 1 --num-notes 256 --seed 0 --temperature $temperature --no-prime \
    --label-guidance 3 --candidates 4
done
stage "evaluate" python -m evaluation.evaluate --data "$out/data" --model "$out/model/export" \
  --out "$out/model/report" --label-guidance 3 --temperature $temperature

samples=("$out"/generated/sample_*.mid)
if [ ! -s "${samples[0]}" ] || [ ! -s "$out/model/report/report.md" ]; then
  echo "error: the run did not write its MIDI files and report ($out/generated, $out/model/report)" >&2
  exit 1
fi
for composer in "${composers[@]}"; do
  if [ ! -s "$out/composers/$composer/sample_000.mid" ]; then
    echo "error: the run did not write its piece in the style of $composer" >&2
    exit 1
  fi
done

echo
echo "== done in $((SECONDS - start)) s: $timings"
python -m evaluation.demo_summary "$out"
