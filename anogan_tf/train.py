"""anogan-train: trains the DCGAN of AnoGAN on normal images.

  anogan-train --flagfile=flags/synthetic_oct.cfg --model_dir=runs/oct

Re-running the same command continues from the last finished epoch; a larger
--epochs trains further.

  anogan-train --stage=encoder --model_dir=runs/oct --flagfile=... --epochs=10

trains the f-AnoGAN encoder for the GAN in --model_dir (architecture from its
config.json; see docs/encoder.md), with the same data flags and resume.
--stage=all trains the GAN and then its encoder (for --encoder_epochs, or
--epochs when that is 0), as flags/digits.cfg does for its --mode=encoder.

A run holds <model_dir>/.lock (both stages): a second anogan-train on the
same --model_dir stops at once and names the pid that holds it.

Both stages record the scoring settings of their flags (mapping, patching,
aggregate, maps) in <model_dir>/detector.json for anogan-evaluate and
anogan-score. A threshold anogan-evaluate recorded there is kept only while
it still holds: no GAN epoch trained since, the same scoring settings, and
for --stage=encoder a mode that does not use the encoder.
"""

import dataclasses
import os

from absl import app, flags, logging

from anogan_tf import common_flags as cf
from anogan_tf.config import ConfigError
from anogan_tf.data import DataError
from anogan_tf.model_dir import ModelDir

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from anogan_tf.training import (TrainingDivergedError, train_encoder,
                                     train_gan)
    try:
        if FLAGS.stage == "encoder":
            return _train_encoder(train_encoder)
        model_config = cf.model_config_from_flags()
        data_config = cf.data_config_from_flags()
        train_config = cf.train_config_from_flags()
        # Built before training, so bad mapping flags fail before it.
        old = _current_detector(FLAGS.model_dir)
        detector = cf.detector_from_flags("anogan-train", old)
        logging.info("ModelConfig: %s", model_config)
        logging.info("DataConfig: %s", data_config)
        logging.info("TrainConfig: %s", train_config)
        # One lock over both stages of --stage=all.
        with ModelDir(FLAGS.model_dir).lock():
            result = train_gan(model_config, data_config, train_config,
                               flags_text=cf.resolved_flags_text())
            _record_detector(detector, old, result.model_dir,
                             keep_threshold=result.epochs_done ==
                             result.initial_epoch)
            logging.info("Done: %d epochs in %s (resumed from %d). Samples: "
                         "%s", result.epochs_done, result.model_dir,
                         result.initial_epoch, result.sample_path)
            if FLAGS.stage == "all":
                logging.info("--stage=all: training the encoder for this "
                             "GAN.")
                return _train_encoder(train_encoder)
    except (ConfigError, DataError, TrainingDivergedError, RuntimeError) as e:
        cf.report_error("anogan-train", e)
        return 1
    return 0


def _train_encoder(train_encoder) -> int:
    """--stage=encoder: the architecture comes from the model dir."""
    if os.path.isfile(ModelDir(FLAGS.model_dir).config_path):
        model_config = cf.model_config_for_scoring(FLAGS.model_dir)
        data_config = cf.data_config_from_flags(model_config.image_size,
                                                model_config.channels)
        logging.info("ModelConfig (from %s): %s", FLAGS.model_dir,
                     model_config)
    else:  # train_encoder reports the missing GAN and how to train it
        data_config = cf.data_config_from_flags()
    train_config = cf.train_config_from_flags()
    if FLAGS.encoder_epochs:
        train_config = dataclasses.replace(train_config,
                                           epochs=FLAGS.encoder_epochs)
    old = _current_detector(FLAGS.model_dir)
    detector = cf.detector_from_flags("anogan-train", old)
    logging.info("DataConfig: %s", data_config)
    logging.info("TrainConfig: %s", train_config)
    with ModelDir(FLAGS.model_dir).lock(create=False):
        result = train_encoder(FLAGS.model_dir, data_config, train_config,
                               flags_text=cf.resolved_flags_text())
        # G and D are unchanged: an iterative threshold still holds.
        _record_detector(detector, old, result.model_dir, keep_threshold=(
            result.epochs_done == result.initial_epoch or
            detector.mapping.mode == "iterative"))
    logging.info("Done: encoder trained for %d epochs in %s (resumed from "
                 "%d).", result.epochs_done, result.model_dir,
                 result.initial_epoch)
    return 0


def _current_detector(model_dir: str):
    """The model dir's Detector, or None (none yet, or unreadable: it is
    replaced after training, with a warning now)."""
    from anogan_tf.scoring import detector as detector_lib
    try:
        return detector_lib.load_detector(model_dir)
    except ConfigError as e:
        logging.warning("Will replace an unreadable detector file after "
                        "training: %s", e)
        return None


def _record_detector(detector, old, model_dir: str,
                     keep_threshold: bool) -> None:
    """Writes the scoring settings to <model_dir>/detector.json.

    Args:
      detector: The settings (`common_flags.detector_from_flags`: the flags
        given over the model dir's current settings).
      old: The model dir's Detector before training, or None.
      model_dir: The trained model dir.
      keep_threshold: Whether a recorded threshold can still hold (the
        models it was calibrated on are unchanged); it is kept only if the
        scoring settings are also the same (`detector.carry_threshold`).
    """
    from anogan_tf.scoring import detector as detector_lib
    detector, note = detector_lib.carry_threshold(old, detector,
                                                  keep_threshold)
    if note:
        logging.info("%s", note)
    path = detector_lib.save_detector(detector, model_dir)
    logging.info("Recorded the scoring settings in %s.", path)


def run():
    flags.mark_flags_as_required(["model_dir"])
    app.run(main)


if __name__ == "__main__":
    run()
