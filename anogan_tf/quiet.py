"""Quiet logs for the binaries: TensorFlow's start-up noise off by default.

Where each noisy line comes from (TensorFlow 2.21, Keras 3.15, no GPU):

- `WARNING: All log messages before absl::InitializeLog() is called are
  written to STDERR`, `I0000 ... cudart_stub.cc:31] Could not find cuda
  drivers on your machine` and, on CPUs where oneDNN is on (AVX-512 machines
  or TF_ENABLE_ONEDNN_OPTS=1), `I0000 ... port.cc:153] oneDNN custom
  operations are on ...`: C++ static initialisers of
  `libtensorflow_framework.so.2` and again of
  `python/profiler/internal/_pywrap_profiler_plugin.so` (it embeds its own
  copy), both loaded by `import tensorflow`. They are written straight to
  file descriptor 2 before absl logging is initialised, so no environment
  variable hides them (TF_CPP_MIN_LOG_LEVEL=3 does not either).
- `E0000 ... cuda_platform.cc:52] failed call to cuInit: ... (303)`: XLA's
  CUDA platform, the first time devices are listed (the first op, or
  `tf.config.list_physical_devices`). An ERROR, so TF_CPP_MIN_LOG_LEVEL=2
  keeps it.
- `cpu_feature_guard.cc] This TensorFlow binary is optimized ...` and its
  `To enable the following instructions` line: TensorFlow's INFO log at
  import; TF_CPP_MIN_LOG_LEVEL >= 1 hides it.
- "Function `score` contains input name(s) 3422, 3424, ... with unsupported
  characters": an absl `logging.info` in
  `tensorflow/python/saved_model/signature_serialization.py` (line 156),
  once per exported function, listing every captured variable. The
  "Sharding callback duration", "Assets written to" (twice: TF's own handler
  and absl's) and "Writing fingerprint to" lines of an export are TF's
  Python INFO logs too.
- "`shuffle=True` was passed, but will be ignored since the data `x` was
  provided as a tf.data.Dataset": a `warnings.warn` in
  `keras/src/trainers/data_adapters/__init__.py` when `fit` gets a Dataset
  with the default shuffle=True. training/run.py now passes shuffle=False;
  the filter here only covers other callers.

`quiet_logs()` hides exactly these by default. It changes no numerics: it
never sets TF_ENABLE_ONEDNN_OPTS, only hides the line saying oneDNN is on.
With absl's `--verbosity=1` (or `-v 1`, also from a flagfile) everything is
shown as before.

Call it in a binary before anything imports TensorFlow (in the anogan_tf
binaries: before `from anogan_tf.data import ...`, `anogan_tf.training`,
`anogan_tf.scoring`, `anogan_tf.export` or `anogan_tf.serving`):

  from absl import app, flags, logging
  from anogan_tf import quiet
  quiet.quiet_logs()
  from anogan_tf import common_flags as cf
  ...

The library never calls it: importing anogan_tf leaves a user's logging
alone.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging as std_logging
import os
import re
import sys
import tempfile
import warnings
from typing import List, Optional, Sequence

__all__ = ["NOISE_PATTERNS", "quiet_logs", "verbose_requested", "is_noise"]

# C++ lines written to stderr while TensorFlow loads and lists its devices.
# Each names its source file, so no other line can match by accident.
NOISE_PATTERNS = (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called "
    r"are written to STDERR$",
    r"\bcudart_stub\.cc:\d+\] Could not find cuda drivers on your machine",
    r"\bport\.cc:\d+\] oneDNN custom operations are on",
    r"\bcpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
    r"^To enable the following instructions: .* rebuild TensorFlow with the "
    r"appropriate compiler flags\.$",
    r"\bcuda_platform\.cc:\d+\] failed call to cuInit",
    r"\bcuda_(dnn|fft|blas)\.cc:\d+\] Unable to register cu(DNN|FFT|BLAS) "
    r"factory",
    r"\bcomputation_placer\.cc:\d+\] computation placer already registered",
)
_NOISE = [re.compile(p) for p in NOISE_PATTERNS]

# Keras' warning when fit() gets a tf.data.Dataset with shuffle=True.
_KERAS_SHUFFLE = r"`shuffle=True` was passed, but will be ignored"

_installed = False
_verbose = False


def is_noise(line: str) -> bool:
    """Whether one stderr line is a known TensorFlow start-up line.

    Args:
      line: One line, without its newline.

    Returns:
      True when `line` matches one of `NOISE_PATTERNS`.
    """
    return any(p.search(line) for p in _NOISE)


def _flag_value(args: Sequence[str], depth: int = 0) -> Optional[str]:
    """The last --verbosity/-v value in `args` (and their flagfiles)."""
    value = None
    i = 0
    while i < len(args):
        arg = args[i]
        match = re.fullmatch(r"--?(verbosity|v)(?:=(.*))?", arg)
        if match:
            if match.group(2) is not None:
                value = match.group(2)
            elif i + 1 < len(args):
                value = args[i + 1]
                i += 1
        else:
            match = re.fullmatch(r"--?flagfile=(.+)", arg)
            if match and depth < 8:
                for path in match.group(1).split(","):
                    try:
                        with open(os.path.expanduser(path)) as f:
                            lines = [l.strip() for l in f]
                    except OSError:
                        continue  # absl reports a missing flagfile itself.
                    inner = _flag_value([l for l in lines
                                         if l and not l.startswith("#")],
                                        depth + 1)
                    value = inner if inner is not None else value
        i += 1
    return value


def verbose_requested(argv: Optional[Sequence[str]] = None) -> bool:
    """Whether the command line asks for absl verbosity >= 1.

    Reads `--verbosity=N`, `--verbosity N`, `-v N`, `-v=N` and `--v=N`,
    also inside `--flagfile` files, before absl parses the flags (the C++
    side must be set up before TensorFlow loads).

    Args:
      argv: The command line; defaults to sys.argv.

    Returns:
      True when the last such value is an integer >= 1, or a name absl reads
      as that ("debug").
    """
    value = _flag_value(list(sys.argv if argv is None else argv)[1:])
    if value is None:
        return False
    value = value.strip().lower()
    if value == "debug":
        return True
    try:
        return int(value) >= 1
    except ValueError:
        return False  # absl rejects it when it parses the flags.


def _package_dirs(names: Sequence[str]) -> List[str]:
    """Install folders of packages, found without importing them."""
    dirs = []
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            dirs.append(os.path.join(os.path.realpath(location), ""))
    return dirs


class _LibraryInfoFilter(std_logging.Filter):
    """Drops INFO and DEBUG records logged from TensorFlow/Keras code.

    The check is made per record, so absl's --verbosity, once parsed, still
    decides: at verbosity >= 1 nothing is dropped.
    """

    def __init__(self, dirs: Sequence[str], everything: bool):
        super().__init__()
        self._dirs = tuple(dirs)
        self._everything = everything  # for the 'tensorflow' logger

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.levelno >= std_logging.WARNING or _verbose_now():
            return True
        if self._everything:
            return False
        path = os.path.realpath(record.pathname or "")
        return not path.startswith(self._dirs)


def _verbose_now() -> bool:
    if _verbose:
        return True
    from absl import flags as absl_flags
    from absl import logging as absl_logging
    if absl_flags.FLAGS.is_parsed():
        return absl_logging.get_verbosity() >= 1
    return False


class _CaptureStderr:
    """Points fd 2 at a temporary file; on exit forwards its non-noise lines."""

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile(mode="w+b")
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc_info):
        try:
            sys.stderr.flush()
        finally:
            os.dup2(self._saved, 2)
            os.close(self._saved)
        self._file.seek(0)
        text = self._file.read().decode("utf-8", "replace")
        self._file.close()
        # If the import failed, show everything: the noise may explain why.
        keep = [l for l in text.splitlines(keepends=True)
                if exc_info[0] is not None or not is_noise(l.rstrip("\r\n"))]
        if keep:
            sys.stderr.write("".join(keep))
            sys.stderr.flush()
        return False


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Wraps the first `import tensorflow` in `_CaptureStderr`."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # one use; find the real spec below
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        original = spec.loader

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec_):
                return original.create_module(spec_)

            def exec_module(self, module):
                # The real loader from here on, for anything that asks.
                module.__spec__.loader = original
                module.__loader__ = original
                with _CaptureStderr():
                    original.exec_module(module)
                    try:  # Lists devices now, so cuInit's line is caught.
                        module.config.list_physical_devices("GPU")
                    except Exception:  # pylint: disable=broad-except
                        pass  # TensorFlow reports it again when it matters.

        spec.loader = _Loader()
        return spec


def quiet_logs(argv: Optional[Sequence[str]] = None) -> bool:
    """Hides TensorFlow's and Keras' known noise unless verbosity >= 1.

    Sets TF_CPP_MIN_LOG_LEVEL=2 unless the environment sets it (TensorFlow's
    C++ INFO and WARNING lines), hides the C++ start-up lines of
    `NOISE_PATTERNS` by pointing fd 2 at a temporary file while TensorFlow
    loads (every other line is passed on), drops INFO records of the
    `tensorflow` logger and INFO records that TensorFlow/Keras code logs
    through absl, and ignores Keras' `shuffle=True` warning. Warnings and
    errors of any library still show. Call it once, before TensorFlow is
    imported; later calls do nothing.

    Args:
      argv: The command line, to read --verbosity from; defaults to
        sys.argv.

    Returns:
      True when the logs are quieted, False when verbosity >= 1 was asked
      for (then nothing is changed).
    """
    global _installed, _verbose
    if _installed:
        return not _verbose
    _installed = True
    _verbose = verbose_requested(argv)
    if _verbose:
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    std_logging.getLogger("tensorflow").addFilter(
        _LibraryInfoFilter((), everything=True))
    # Before the finder goes in: find_spec would consume it.
    std_logging.getLogger("absl").addFilter(_LibraryInfoFilter(
        _package_dirs(("tensorflow", "keras", "tf_keras")), everything=False))
    warnings.filterwarnings("ignore", message=_KERAS_SHUFFLE)
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _QuietTensorFlowFinder())
    return True
