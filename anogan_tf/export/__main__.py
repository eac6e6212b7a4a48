"""anogan-export: writes a trained model as a TF Serving SavedModel version.

  anogan-export --model_dir=runs/oct --export_dir=saved_models/oct \
      --mapping_steps=500 --lambda_weight=0.1

Writes <export_dir>/<N>/ (N: the next integer, or --version) with the
signatures serving_default, serving_uint8 and generate; the mapping flags
are fixed into the graph. See docs/serving.md.
"""


from absl import app, flags, logging

from anogan_tf import common_flags as cf
from anogan_tf.config import ConfigError

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from anogan_tf.export import export_model
    try:
        mapping_config = cf.mapping_config_from_flags()
        logging.info("MappingConfig: %s", mapping_config)
        version_dir = export_model(FLAGS.model_dir, FLAGS.export_dir,
                                   mapping_config, version=FLAGS.version,
                                   export_xla=FLAGS.export_xla)
    except (ConfigError, OSError) as e:
        cf.report_error("anogan-export", e)
        return 1
    print(version_dir, flush=True)
    return 0


def run():
    flags.mark_flags_as_required(["model_dir", "export_dir"])
    app.run(main)


if __name__ == "__main__":
    run()
