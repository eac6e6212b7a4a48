"""anogan-beam-score: anogan-score's image scores as an Apache Beam job.

  anogan-beam-score --model_dir=M --inputs='DIR/*.png' --output_dir=O \
      --runner=DirectRunner [Beam pipeline options...]
  anogan-beam-score --saved_model=EXPORT --inputs='gs://b/scans/*.png' \
      --output_dir=gs://b/scored --runner=DataflowRunner --project=... \
      --region=... --temp_location=gs://b/tmp

Writes O/image_scores-SSSSS-of-NNNNN.csv and O/scores-*.csv with exactly
anogan-score's columns, O/dead_letter-00000-of-00001.csv (input, stage,
reason: every file that could not be read, decoded, had the wrong size or
failed in the model; they never fail the job), and with --save_maps
O/maps/<id>.npy and .png. With --model_dir the model is first exported to
O/saved_model/<version> (anogan-export); --saved_model uses an export.

The model is the export's whole-image signature score_images (or
score_images_uint8): it patches, maps in the detector's mode, aggregates
and applies detector.json's threshold in the graph. Flags this binary does
not know are Beam pipeline options (--direct_num_workers=2
--direct_running_mode=multi_processing, --project, --temp_location, ...).
--runner=DirectRunner runs on Beam's in-process FnApiRunner (DirectRunner
would first try the Prism runner, which downloads a binary at run time).
Needs the beam extra: pip install -e ".[beam]".
"""

import logging as py_logging
import os
import sys

from absl import app, flags

from anogan_tf import quiet

quiet.quiet_logs()  # before anything imports TensorFlow

from anogan_tf import common_flags as cf  # noqa: E402
from anogan_tf.config import ConfigError  # noqa: E402
from anogan_tf.data import DataError  # noqa: E402

FLAGS = flags.FLAGS
PROGRAM = "anogan-beam-score"

flags.DEFINE_string("saved_model", None,
                    "An anogan-export SavedModel (<export_dir> or "
                    "<export_dir>/<version>); instead of --model_dir.")
flags.DEFINE_string("runner", "DirectRunner",
                    "Beam runner: DirectRunner (runs as FnApiRunner, offline),"
                    " FnApiRunner, DataflowRunner, FlinkRunner, SparkRunner, "
                    "PortableRunner, ...")
flags.DEFINE_enum("signature", "score_images",
                  ["score_images", "score_images_uint8"],
                  "The export's whole-image signature to call (float32 "
                  "inputs are anogan-score's pixels bit for bit).")
flags.DEFINE_integer("num_shards", 0,
                     "Shards of each CSV (0: one per 5000 images).")
flags.DEFINE_integer("min_batch_size", 1, "RunInference's smallest batch.")
flags.DEFINE_integer("max_batch_size", 8,
                     "RunInference's largest batch (images per model call).")
flags.DEFINE_boolean("large_model", False,
                     "Load one model per machine, shared by its processes "
                     "(Beam's large_model).")
flags.DEFINE_integer("model_copies", 0,
                     "Model copies per machine, shared by its processes "
                     "(0: Beam's default, one per process).")

# Runners that need nothing downloaded; DirectRunner would try Prism first.
_RUNNER_ALIASES = {"directrunner": "FnApiRunner", "direct": "FnApiRunner"}


def _parse(argv):
    """absl's flags; the rest (unknown --flags) are Beam's options."""
    try:
        return FLAGS(argv, known_only=True)
    except flags.Error as e:
        sys.stderr.write(f"{PROGRAM}: error: {e}\n")
        sys.exit(1)


def _export(model_dir: str, output_dir: str) -> str:
    from anogan_tf.export import export_model
    if "://" in output_dir:
        raise ConfigError(
            f"--model_dir exports to <output_dir>/saved_model, which must be "
            f"local; --output_dir={output_dir!r} is not. Run anogan-export "
            f"first and pass --saved_model (copied where the workers can "
            f"read it).")
    return export_model(model_dir, os.path.join(output_dir, "saved_model"))


def main(argv):
    beam_args = [a for a in argv[1:]]
    positional = [a for a in beam_args if not a.startswith("-")]
    if positional:
        raise app.UsageError(f"Unexpected arguments: {positional}")
    if bool(FLAGS.model_dir) == bool(FLAGS.saved_model):
        sys.stderr.write(f"{PROGRAM}: error: pass exactly one of --model_dir "
                         f"(exported first) and --saved_model (an "
                         f"anogan-export SavedModel).\n")
        return 1
    # Beam logs every bundle and worker channel at INFO; keep its warnings.
    py_logging.getLogger("apache_beam").setLevel(py_logging.WARNING)
    try:
        from anogan_tf.beam import ScoreJob, expand_inputs, run_beam_score
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError as e:
        cf.report_error(PROGRAM, e)
        return 1
    try:
        expand_inputs(FLAGS.inputs or ())  # fail fast, before any export
        saved_model = FLAGS.saved_model or _export(FLAGS.model_dir,
                                                   FLAGS.output_dir)
        runner = _RUNNER_ALIASES.get(FLAGS.runner.lower(), FLAGS.runner)
        if runner != FLAGS.runner:
            print(f"--runner={FLAGS.runner}: running on Beam's in-process "
                  f"{runner} (no Prism download).")
        job = ScoreJob(
            saved_model=saved_model, inputs=tuple(FLAGS.inputs or ()),
            output_dir=FLAGS.output_dir, signature=FLAGS.signature,
            save_maps=FLAGS.save_maps, num_shards=FLAGS.num_shards,
            min_batch_size=FLAGS.min_batch_size,
            max_batch_size=FLAGS.max_batch_size,
            large_model=FLAGS.large_model,
            model_copies=FLAGS.model_copies or None,
            model_dir=FLAGS.model_dir)
        summary = run_beam_score(job, PipelineOptions(
            beam_args, runner=runner))
    except (ConfigError, DataError, ValueError) as e:
        cf.report_error(PROGRAM, e)
        return 1
    n_dead = summary["num_dead_letters"]
    calls = sum(b[0] for b in summary["batch_sizes"])
    print(f"Scored {summary['num_images']} images in {calls} model calls "
          f"({summary['signature']} of {summary['saved_model']}); wrote "
          f"{len(summary['image_scores'])} image_scores-*.csv shard(s) and "
          f"scores-*.csv in {summary['output_dir']}.")
    print(f"{n_dead} input(s) could not be scored"
          + (f"; see {summary['dead_letters']} for each one's reason."
             if n_dead else f" ({summary['dead_letters']})."))
    return 0


def run():
    flags.mark_flags_as_required(["inputs", "output_dir"])
    app.run(main, flags_parser=_parse)


if __name__ == "__main__":
    run()
