"""The test session's setup: TensorFlow quiet and Hypothesis's fuzzing profiles."""

import os

# Keep TensorFlow quiet: set before any test module imports it.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from hypothesis import HealthCheck, settings  # noqa: E402 (after the environment)

# Fuzzing budgets (tests/test_fuzz.py): 'ci' is short and the same on every run; choose 'long'
# with `--hypothesis-profile=long` to search for hours.
settings.register_profile('ci', max_examples=300, derandomize=True, deadline=None,
                          database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile('long', max_examples=1_000_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile('ci')
