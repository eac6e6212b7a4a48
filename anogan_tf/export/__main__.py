"""anogan-export: writes a trained model as a TF Serving SavedModel version.

  anogan-export --model_dir=runs/oct --export_dir=saved_models/oct

Writes <export_dir>/<N>/ (N: the next integer, or --version) with the
signatures serving_default, serving_uint8, generate, score_images and
score_images_uint8 (plus score_fast and score_hybrid when the model dir has
an encoder). The detector's settings come from <model_dir>/detector.json
(as for anogan-score); mapping, patching and image-score flags given on the
command line or in a flagfile override them, and they are fixed into the
graph together with the calibrated threshold. score_images takes images of
the training size (--resize, or the synthetic_oct size in flags.cfg); pass
--resize=H,W to fix another. See docs/serving.md.
"""


from absl import app, flags, logging

from anogan_tf import quiet

quiet.quiet_logs()  # before anything imports TensorFlow

from anogan_tf import common_flags as cf  # noqa: E402
from anogan_tf.config import ConfigError  # noqa: E402

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from anogan_tf.export import export_model
    try:
        _, data_config, mapping_config, eval_config, _ = (
            cf.detector_configs_from_flags())
        logging.info("MappingConfig: %s", mapping_config)
        # The configs are layered already; use them as they are.
        version_dir = export_model(
            FLAGS.model_dir, FLAGS.export_dir, mapping_config,
            version=FLAGS.version, export_xla=FLAGS.export_xla,
            data_config=data_config, eval_config=eval_config)
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
