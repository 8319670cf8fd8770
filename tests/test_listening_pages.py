"""The index.html pages in a real headless browser.

The browser is Debian's chromium, driven by selenium through its chromedriver.

Each page that generation and evaluation write (``serving.generate``, ``serving.beam_generate``,
``evaluation.evaluate``) is opened from disk as a user opens it; every image must have loaded and
every audio element must load its WAV and play. A screenshot of each page is kept in
``$PARTITA_TEST_ARTIFACTS`` (default ``test-artifacts/`` in the repository, ignored by git).
``.ci/run`` installs chromium, chromium-driver, fluidsynth and fluid-soundfont-gm when missing.
"""

import os
import shutil

import pytest
import trainer_fixtures

from evaluation import evaluate
from partita import audio, listening_page
from serving import beam_generate
from serving import generate as generate_lib

CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
ARTIFACTS = os.environ.get('PARTITA_TEST_ARTIFACTS',
                           os.path.join(trainer_fixtures.REPO, 'test-artifacts'))
MISSING = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
AUDIO_UNAVAILABLE = audio.unavailable_reason(audio.default_soundfont())

pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f'needs {MISSING} (apt-get install chromium '
                       'chromium-driver; .ci/run installs them)'),
    pytest.mark.skipif(bool(AUDIO_UNAVAILABLE), reason=f'needs audio: {AUDIO_UNAVAILABLE}'),
]

# Waits for every image and audio element, then plays each audio element for a moment.
PAGE_CHECK = """
const done = arguments[arguments.length - 1];
const images = [...document.images].map(image => ({
  src: image.src, alt: image.alt, loaded: image.complete && image.naturalWidth > 0}));
const players = [...document.querySelectorAll('audio')];
const loaded = players.map(player => new Promise(resolve => {
  const report = ok => resolve({src: player.currentSrc, label: player.getAttribute('aria-label'),
                                ok: ok, duration: player.duration,
                                error: player.error ? player.error.code : null});
  if (player.readyState >= 3) { report(true); return; }
  player.addEventListener('canplay', () => report(true), {once: true});
  player.addEventListener('error', () => report(false), {once: true});
  player.preload = 'auto';
  player.load();
}));
Promise.all(loaded).then(audios => Promise.all(players.map(player => player.play().then(
    () => { player.pause(); return true; }, error => String(error))))
  .then(played => done({images: images, audios: audios, played: played})));
"""


@pytest.fixture(scope='module')
def browser(tmp_path_factory):
  from selenium import webdriver  # noqa: PLC0415 (only where chromium is installed)
  from selenium.webdriver.chrome import service as chrome_service  # noqa: PLC0415
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  # As root in a container, without a display, a GPU or the network: no sandbox, no GPU, no
  # background connections (refused here, and slow to fail).
  for flag in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
               '--no-first-run', '--disable-background-networking', '--disable-component-update',
               '--disable-sync', '--disable-quic', '--autoplay-policy=no-user-gesture-required',
               '--window-size=1400,2400',
               f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
    options.add_argument(flag)
  driver = webdriver.Chrome(options=options,
                            service=chrome_service.Service(executable_path=CHROMEDRIVER))
  driver.set_script_timeout(60)
  yield driver
  driver.quit()


@pytest.fixture(scope='module')
def outputs(tiny_model, tmp_path_factory):
  """The session's tiny model's pieces from the command and the Beam job, and its evaluation.

  Each in its own folder here.
  """
  root = tmp_path_factory.mktemp('pages')
  assert generate_lib.main(['--model', tiny_model.export_dir, '--out', str(root / 'generated'),
                            '--num-samples', '2', '--num-notes', '16']) == 0
  manifest = root / 'requests.jsonl'
  manifest.write_text('{"name": "from-nothing", "prime": null, "num_notes": 12}\n'
                      '{"name": "ten-seconds", "prime": null, "seconds": 10, "seed": 4}\n')
  assert beam_generate.main(['--model', tiny_model.export_dir, '--out', str(root / 'batch'),
                             '--manifest', str(manifest)]) == 0
  assert evaluate.main(['--data', tiny_model.data_dir, '--model', tiny_model.export_dir,
                        '--out', str(root / 'report'), '--num-pieces', '4',
                        '--num-notes', '8']) == 0
  return root


@pytest.mark.parametrize('folder,pieces,players', [
    ('generated', 2, 2), ('batch', 2, 2), ('report', 3, 9)])
def test_every_picture_loads_and_every_piece_plays_in_a_browser(browser, outputs, folder, pieces,
                                                                players):
  page = outputs / folder / listening_page.PAGE_FILE
  browser.get(page.as_uri())
  result = browser.execute_async_script(PAGE_CHECK)
  os.makedirs(ARTIFACTS, exist_ok=True)
  browser.save_screenshot(os.path.join(ARTIFACTS, f'index-{folder}.png'))
  assert len(browser.find_elements('css selector', 'section.piece')) == pieces
  assert result['images'] and all(image['loaded'] for image in result['images']), result['images']
  assert len(result['audios']) == players
  for player, played in zip(result['audios'], result['played'], strict=True):
    assert player['ok'] and player['duration'] > 0, player
    assert played is True, (player, played)
    assert player['label'].startswith('audio: ')
  if folder == 'report':
    labels = {image['alt'] for image in result['images']}
    assert {'piano roll: real continuation of prime 0', 'piano roll: model continuation of prime 0',
            'piano roll: n-gram continuation of prime 0'} <= labels


def test_a_page_opens_from_a_copy_of_its_folder(browser, outputs, tmp_path):
  """Nothing on the page points outside its folder: a copy elsewhere shows the same."""
  copy = tmp_path / 'copy'
  shutil.copytree(outputs / 'batch', copy)
  browser.get((copy / listening_page.PAGE_FILE).as_uri())
  result = browser.execute_async_script(PAGE_CHECK)
  assert all(image['src'].startswith(copy.as_uri()) for image in result['images'])
  assert all(player['ok'] and player['src'].startswith(copy.as_uri())
             for player in result['audios'])
