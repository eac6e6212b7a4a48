"""anogan-train: trains the DCGAN of AnoGAN on normal images.

  anogan-train --flagfile=flags/synthetic_oct.cfg --model_dir=runs/oct

Re-running the same command continues from the last finished epoch; a larger
--epochs trains further.
"""

import sys

from absl import app, flags, logging

from anogan_tf import common_flags as cf
from anogan_tf.config import ConfigError
from anogan_tf.data import DataError

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from anogan_tf.training import TrainingDivergedError, train_gan
    try:
        model_config = cf.model_config_from_flags()
        data_config = cf.data_config_from_flags()
        train_config = cf.train_config_from_flags()
        logging.info("ModelConfig: %s", model_config)
        logging.info("DataConfig: %s", data_config)
        logging.info("TrainConfig: %s", train_config)
        if FLAGS.stage == "encoder":
            raise ConfigError("--stage=encoder is not available yet in this "
                              "version; train the GAN with --stage=gan.")
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


def run():
    flags.mark_flags_as_required(["model_dir"])
    app.run(main)


if __name__ == "__main__":
    run()
