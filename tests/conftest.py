"""Shared test isolation.

Tests and fixtures that run a binary's `main` in process parse absl's
flags and then `FLAGS.unparse_flags()`. Unparsing resets absl's --verbosity
to its pre-parse default, which sets the "absl" logger to WARNING, so a
later test in the same worker that checks an INFO log line (`caplog`) saw
none (tests/test_calibration_honesty.py failed after tests/test_beam_score.py
in CI). Restoring the level after each test was not enough: a module-scoped
fixture unparses before the first test of its module starts. So every test
starts from the level the session started with.
"""

import logging

import pytest

_ABSL_LEVEL_AT_START = logging.getLogger("absl").level


@pytest.fixture(autouse=True)
def _absl_logger_level_of_the_session_start():
    logging.getLogger("absl").setLevel(_ABSL_LEVEL_AT_START)
    yield
