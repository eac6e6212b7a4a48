"""Shared test isolation.

Tests that run a binary's `main` in process parse absl's flags and then
`FLAGS.unparse_flags()`. Unparsing resets absl's --verbosity to its
pre-parse default, which sets the "absl" logger to WARNING, so a later
test in the same worker that checks an INFO log line (`caplog`) saw none
(tests/test_calibration_honesty.py failed after tests/test_beam_score.py).
Every test gets the logger level it started with back.
"""

import logging

import pytest


@pytest.fixture(autouse=True)
def _restore_absl_logger_level():
    logger = logging.getLogger("absl")
    level = logger.level
    yield
    logger.setLevel(level)
