"""anogan-discover: groups anomalous regions into candidate markers.

  anogan-discover --flagfile=flags/synthetic_oct.cfg --model_dir=M --output_dir=O

scores the images (--inputs, or the test split of --dataset) with the model
in --model_dir, finds the anomalous regions (threshold from the normal
calibration images: --calibration_data or the dataset's calibration split),
describes and clusters them, and writes O/regions.csv, O/images.csv,
O/markers.json, the contact sheets and O/report/index.html (open it in a
browser straight from disk). With known types (synthetic_oct, textures,
--known_types) O/evaluation.json holds ARI, NMI and per-type recall.

  anogan-discover --maps_dir=O --output_dir=O2 --cluster_method=hdbscan ...

re-clusters the maps an earlier run wrote, without mapping again. The scoring
settings come from <model_dir>/detector.json under the flags, as in
anogan-score. docs/markers.md explains every output.
"""

from absl import app, flags, logging

from anogan_tf import common_flags as cf
from anogan_tf.config import ConfigError
from anogan_tf.data import DataError

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from anogan_tf.markers import load_discovery_inputs, run_discovery
    from anogan_tf.scoring.scorer import Scorer
    try:
        config = cf.discovery_config_from_flags()
        if not FLAGS.model_dir and not FLAGS.maps_dir:
            raise ConfigError("anogan-discover needs --model_dir (a trained "
                              "model to score the images with) or --maps_dir"
                              " (the output dir of an earlier run).")
        scorer = None
        if FLAGS.model_dir:
            _, data_config, mapping_config, eval_config, _ = (
                cf.detector_configs_from_flags())
            scorer = Scorer.from_model_dir(
                FLAGS.model_dir, data_config, mapping_config, eval_config,
                overrides=tuple(cf.DETECTOR_FLAGS))
            data_config = scorer.data_config
            logging.info("MappingConfig: %s", scorer.mapping_config)
        else:
            data_config = cf.data_config_from_flags()
        logging.info("DiscoveryConfig: %s", config)
        images, calibration, known = load_discovery_inputs(
            data_config, FLAGS.inputs, FLAGS.calibration_data or (),
            FLAGS.num_test, FLAGS.known_types)
        summary = run_discovery(config, images, scorer, calibration,
                                maps_dir=FLAGS.maps_dir, known=known,
                                data_config=data_config)
    except (ConfigError, DataError, ValueError) as e:
        cf.report_error("anogan-discover", e)
        return 1
    print(f"Found {summary['n_regions']} regions in "
          f"{summary['n_images_with_regions']} of {summary['n_images']} "
          f"images ({summary['threshold_text']}); {summary['k']} candidate "
          f"marker(s). Wrote {FLAGS.output_dir}/regions.csv, images.csv, "
          f"markers.json and {summary['paths']['report']} in "
          f"{summary['timings']['total_seconds']:.1f} s.")
    evaluation = summary.get("evaluation")
    if evaluation and evaluation.get("ari") is not None:
        recalls = ", ".join(
            f"{t} {e['recall']:.2f}" for t, e in
            evaluation["per_type"].items() if e["recall"] is not None)
        print(f"Against {evaluation['type_source']}: ARI "
              f"{evaluation['ari']:.3f}, NMI {evaluation['nmi']:.3f}; "
              f"recall {recalls}.")
    return 0


def run():
    flags.mark_flags_as_required(["output_dir"])
    app.run(main)


if __name__ == "__main__":
    run()
