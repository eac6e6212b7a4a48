"""anogan-client: scores image files with a model behind TF Serving.

  anogan-client --server=localhost:8500 --inputs=images/ --output_dir=out
  anogan-client --server=http://localhost:8501 --inputs=a.png,b.png \
      --output_dir=out --signature_name=serving_uint8

gRPC for host:port, REST for http://host:port. The input key, dtype and
image size come from the server's signature metadata. Writes
<output_dir>/scores.csv. Images must have the model's size; anogan-score
patches bigger images. See docs/serving.md.
"""


from absl import app, flags, logging

from anogan_tf import common_flags as cf  # noqa: F401  (defines the flags)

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from anogan_tf.serving import InputError, ServingError, connect, score_files
    try:
        with connect(FLAGS.server, FLAGS.model_name, FLAGS.signature_name,
                     timeout=FLAGS.timeout, version=FLAGS.model_version) as client:
            scores = score_files(
                client, FLAGS.inputs, FLAGS.output_dir,
                batch_size=FLAGS.client_batch_size,
                progress=lambda done, total: logging.info(
                    "scored %d/%d images", done, total))
    except (InputError, ServingError, ValueError, OSError) as e:
        cf.report_error("anogan-client", e)
        return 1
    print(scores.csv_path, flush=True)
    return 0


def run():
    flags.mark_flags_as_required(["server", "inputs", "output_dir"])
    app.run(main)


if __name__ == "__main__":
    run()
