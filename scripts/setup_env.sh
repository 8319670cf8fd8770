# Sourced by scripts/demo.sh and scripts/test.sh: creates .venv and installs the project with the
# given extra (demo or dev) unless the installed copy is already up to date with setup.py.
set -euo pipefail
extra="$1"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PARTITA_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
stamp="$venv/.partita-installed-$extra"
wanted="$(sha256sum "$root/setup.py" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "installing partita[$extra] into $venv (first run: a few minutes)" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[$extra]"
  echo "$wanted" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
# TensorFlow's C++ start-up chatter hides the progress lines.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
