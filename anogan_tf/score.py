"""anogan-score: scores images with a trained model.

  anogan-score --model_dir=M --inputs=path/to/folder,img.png --output_dir=S

Writes scores.csv (one row per scored patch), image_scores.csv, and per-image
maps (maps/<id>.npy and maps/<id>.png: input | G(z*) | residual heatmap).
Without --inputs it scores the test split of --dataset/--data_path.

The scoring settings (mapping, patching, aggregate, maps) and the threshold
come from <model_dir>/detector.json, which anogan-train and anogan-evaluate
write; flags given on the command line or in a flagfile override them, and
the log says which value came from where. With the recorded threshold,
image_scores.csv has "threshold" and "is_anomalous" (and "p_value").
"""


from absl import app, flags, logging

from anogan_tf import quiet

quiet.quiet_logs()  # before anything imports TensorFlow

from anogan_tf import common_flags as cf  # noqa: E402
from anogan_tf.config import ConfigError  # noqa: E402
from anogan_tf.data import DataError  # noqa: E402

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from anogan_tf.scoring import run_score
    try:
        _, data_config, mapping_config, eval_config, detector = (
            cf.detector_configs_from_flags())
        logging.info("MappingConfig: %s", mapping_config)
        summary = run_score(FLAGS.model_dir, data_config, mapping_config,
                            eval_config, inputs=FLAGS.inputs,
                            save_maps=FLAGS.save_maps, detector=detector)
    except (ConfigError, DataError, ValueError) as e:
        cf.report_error("anogan-score", e)
        return 1
    print(f"Scored {summary['num_images']} images ({summary['num_patches']} "
          f"model inputs, {summary['inputs_per_second']:.1f} inputs/s); wrote "
          f"{summary['output_dir']}/scores.csv, image_scores.csv and "
          f"{summary['maps_written']} maps.")
    if summary.get("n_calibration"):
        print(f"p-values from {summary['n_calibration']} calibration images"
              + (f"; threshold {summary['threshold']:.4g} "
                 f"({summary['threshold_rule']})" if "threshold" in summary
                 else "") + ".")
    if "threshold" in summary:
        print(f"Threshold {summary['threshold']:.4g} "
              f"({summary.get('threshold_source', 'this run')}): "
              f"image_scores.csv is_anomalous = image score >= threshold.")
    return 0


def run():
    flags.mark_flags_as_required(["model_dir", "output_dir"])
    app.run(main)


if __name__ == "__main__":
    run()
