"""anogan-train: trains the DCGAN of AnoGAN on normal images.

  anogan-train --flagfile=flags/synthetic_oct.cfg --model_dir=runs/oct

Re-running the same command continues from the last finished epoch; a larger
--epochs trains further.

  anogan-train --stage=encoder --model_dir=runs/oct --flagfile=... --epochs=10

trains the f-AnoGAN encoder for the GAN in --model_dir (architecture from its
config.json; see docs/encoder.md), with the same data flags and resume.
"""

import os
import sys

from absl import app, flags, logging

from anogan_tf import common_flags as cf
from anogan_tf.config import MODEL_CONFIG_FILE, ConfigError
from anogan_tf.data import DataError

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
        logging.info("ModelConfig: %s", model_config)
        logging.info("DataConfig: %s", data_config)
        logging.info("TrainConfig: %s", train_config)
        result = train_gan(model_config, data_config, train_config,
                           flags_text=cf.resolved_flags_text())
    except (ConfigError, DataError, TrainingDivergedError, RuntimeError) as e:
        logging.error("%s", e)
        sys.stderr.write(f"anogan-train: error: {e}\n")
        return 1
    logging.info("Done: %d epochs in %s (resumed from %d). Samples: %s",
                 result.epochs_done, result.model_dir, result.initial_epoch,
                 result.sample_path)
    return 0


def _train_encoder(train_encoder) -> int:
    """--stage=encoder: the architecture comes from the model dir."""
    if os.path.isfile(os.path.join(FLAGS.model_dir, MODEL_CONFIG_FILE)):
        model_config = cf.model_config_for_scoring(FLAGS.model_dir)
        data_config = cf.data_config_from_flags(model_config.image_size,
                                                model_config.channels)
        logging.info("ModelConfig (from %s): %s", FLAGS.model_dir,
                     model_config)
    else:  # train_encoder reports the missing GAN and how to train it
        data_config = cf.data_config_from_flags()
    train_config = cf.train_config_from_flags()
    logging.info("DataConfig: %s", data_config)
    logging.info("TrainConfig: %s", train_config)
    result = train_encoder(FLAGS.model_dir, data_config, train_config,
                           flags_text=cf.resolved_flags_text())
    logging.info("Done: encoder trained for %d epochs in %s (resumed from "
                 "%d).", result.epochs_done, result.model_dir,
                 result.initial_epoch)
    return 0


def run():
    flags.mark_flags_as_required(["model_dir"])
    app.run(main)


if __name__ == "__main__":
    run()
