"""anogan-evaluate: scores a labelled test set and writes metrics and plots.

  anogan-evaluate --dataset=synthetic_oct --model_dir=M --output_dir=E \
      --mapping_steps=20 --num_test=32

Writes metrics.json, scores.csv, image_scores.csv, roc.png, pr.png,
score_hist.png and anomaly_maps.png into --output_dir, and prints a summary.
Scoring settings not given as flags come from <model_dir>/detector.json
(as in anogan-score); the settings used and the calibrated threshold are
then recorded there, for anogan-score.
"""


from absl import app, flags, logging

from anogan_tf import quiet

quiet.quiet_logs()  # before anything imports TensorFlow

from anogan_tf import common_flags as cf  # noqa: E402
from anogan_tf.config import ConfigError  # noqa: E402
from anogan_tf.data import DataError  # noqa: E402

FLAGS = flags.FLAGS

SUMMARY_KEYS = ("image_auroc", "image_auprc", "pixel_auroc", "pixel_auprc",
                "sensitivity", "specificity", "threshold", "threshold_rule",
                "target_fpr", "fpr_normal_test", "n_calibration",
                "n_normal", "n_anomalous", "n_patches", "mode", "score",
                "mapping_steps", "patches_per_second")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from anogan_tf.scoring import reports, run_evaluate
    try:
        _, data_config, mapping_config, eval_config, _ = (
            cf.detector_configs_from_flags())
        logging.info("MappingConfig: %s", mapping_config)
        metrics = run_evaluate(FLAGS.model_dir, data_config, mapping_config,
                               eval_config, write_detector=True)
    except (ConfigError, DataError, ValueError) as e:
        cf.report_error("anogan-evaluate", e)
        return 1
    print(f"\nEvaluation of {FLAGS.model_dir} on {data_config.dataset} "
          f"({mapping_config.steps} mapping steps"
          f"{'; the paper uses 500' if mapping_config.steps < 500 else ''}):")
    print(reports.summary_table(metrics, SUMMARY_KEYS))
    print(f"Files in {eval_config.output_dir}: metrics.json, scores.csv, "
          f"image_scores.csv, roc.png, pr.png, score_hist.png, anomaly_maps.png"
          f"; the settings and threshold for anogan-score in "
          f"{FLAGS.model_dir}/detector.json")
    return 0


def run():
    flags.mark_flags_as_required(["model_dir", "output_dir"])
    app.run(main)


if __name__ == "__main__":
    run()
