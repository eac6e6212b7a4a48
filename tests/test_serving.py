"""Tests of anogan_tf.serving and anogan-client against loopback servers.

The gRPC stand-in (serving_server.py) loads the export the way the model
server does (TF1 Session + loader.load), so these tests also show that the
export has no uninitialised variables.
"""

import concurrent.futures
import csv
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from anogan_tf.config import MappingConfig
from anogan_tf.export import export_model
from anogan_tf.serving import (CSV_COLUMNS, GrpcPredictClient, InputError,
                               RestPredictClient, ServingError, connect,
                               score_files)

sys.path.insert(0, os.path.dirname(__file__))
import serving_server  # noqa: E402

SCORES = ("anomaly_score", "residual_score", "discrimination_score")
N_IMAGES = 7


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("model"))
    serving_server.make_tiny_model_dir(model_dir, seed=5)
    export_dir = str(tmp_path_factory.mktemp("export"))
    return export_model(model_dir, export_dir, MappingConfig(steps=5, seed=1))


@pytest.fixture(scope="module")
def loaded(version_dir):
    return tf.saved_model.load(version_dir)


@pytest.fixture(scope="module")
def grpc_server(version_dir):
    model = serving_server.LoopbackModel(version_dir, name="anogan")
    server, port = serving_server.start_grpc_server(model)
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture(scope="module")
def rest_server(version_dir):
    server, port = serving_server.start_rest_server(version_dir, name="anogan")
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """8-bit grayscale PNGs, one in a sub-folder; returns (folder, uint8)."""
    folder = tmp_path_factory.mktemp("images")
    (folder / "sub").mkdir()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (N_IMAGES, 32, 32), np.uint8)
    pixels[:3] = np.clip(pixels[:3] // 4 + 100, 0, 255)  # low-contrast ones
    for i, p in enumerate(pixels):
        path = folder / ("sub" if i == 3 else "") / f"img{i}.png"
        Image.fromarray(p).save(path)
    return str(folder), pixels[..., None]


def _ids():
    return tuple(f"sub/img{i}" if i == 3 else f"img{i}" for i in range(N_IMAGES))


def _direct(loaded, pixels, signature="serving_default"):
    """Scores computed by the loaded SavedModel in this process."""
    x = pixels if signature == "serving_uint8" else (
        pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0))
    out = loaded.signatures[signature](images=tf.constant(x))
    return {k: v.numpy() for k, v in out.items()}


def _read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    return rows[1:]


def _in_id_order(rows):
    order = {image_id: i for i, image_id in enumerate(_ids())}
    return sorted(rows, key=lambda r: order[r[0]])


# --- metadata -----------------------------------------------------------------

def test_grpc_metadata_gives_input_key_dtype_and_image_shape(grpc_server):
    with GrpcPredictClient(grpc_server, "anogan", "serving_default",
                           timeout=30) as client:
        sig = client.signature()
    assert (sig.input_key, sig.input_dtype, sig.image_shape) == (
        "images", np.dtype(np.float32), (32, 32, 1))
    assert set(SCORES) <= set(sig.output_keys)
    with GrpcPredictClient(grpc_server, "anogan", "serving_uint8",
                           timeout=30) as client:
        assert client.signature().input_dtype == np.dtype(np.uint8)


def test_rest_metadata_matches_grpc(grpc_server, rest_server):
    with connect(grpc_server, timeout=30) as g, connect(rest_server,
                                                        timeout=30) as r:
        assert isinstance(r, RestPredictClient)
        assert r.signature() == g.signature()


def test_unknown_signature_is_named(grpc_server):
    with connect(grpc_server, signature_name="nope", timeout=30) as client:
        with pytest.raises(ServingError, match="serving_uint8"):
            client.signature()


# --- scoring files ---------------------------------------------------------------

def test_grpc_client_writes_scores_csv_equal_to_direct_results(
        grpc_server, loaded, image_folder, tmp_path):
    folder, pixels = image_folder
    with connect(grpc_server, timeout=60) as client:
        result = score_files(client, [folder], str(tmp_path), batch_size=3)
    assert result.csv_path == str(tmp_path / "scores.csv")
    rows = _in_id_order(_read_csv(result.csv_path))
    assert [r[0] for r in rows] == list(_ids())
    assert all(r[1] == "" and r[2] == "" for r in rows)
    direct = _direct(loaded, pixels)
    for j, key in enumerate(SCORES):
        from_csv = np.array([float(r[3 + j]) for r in rows], np.float32)
        np.testing.assert_allclose(from_csv, direct[key], rtol=1e-6,
                                   err_msg=key)


def test_uint8_signature_through_grpc_equals_float(grpc_server, image_folder):
    folder, _ = image_folder
    results = {}
    for sig in ("serving_default", "serving_uint8"):
        with connect(grpc_server, signature_name=sig, timeout=60) as client:
            results[sig] = score_files(client, [folder], None, batch_size=4)
    for key in SCORES:
        np.testing.assert_allclose(getattr(results["serving_uint8"], key),
                                   getattr(results["serving_default"], key),
                                   rtol=1e-6, err_msg=key)


def test_rest_client_writes_scores_csv_equal_to_direct_results(
        rest_server, loaded, image_folder, tmp_path):
    folder, pixels = image_folder
    files = [os.path.join(folder, "img0.png"), os.path.join(folder, "img1.png")]
    with connect(rest_server, timeout=60) as client:
        result = score_files(client, files, str(tmp_path), batch_size=2)
    rows = _read_csv(result.csv_path)
    assert [r[0] for r in rows] == ["img0", "img1"]
    direct = _direct(loaded, pixels[:2])
    for j, key in enumerate(SCORES):
        np.testing.assert_allclose([float(r[3 + j]) for r in rows],
                                   direct[key], rtol=1e-6, err_msg=key)


def test_wrong_size_image_suggests_anogan_score(grpc_server, tmp_path):
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(tmp_path / "big.png")
    with connect(grpc_server, timeout=30) as client:
        with pytest.raises(InputError, match="anogan-score") as e:
            score_files(client, [str(tmp_path / "big.png")], str(tmp_path))
    assert "64x48" in str(e.value) and "32x32" in str(e.value)
    assert not os.path.exists(tmp_path / "scores.csv")


def test_missing_input_is_an_input_error(grpc_server, tmp_path):
    with connect(grpc_server, timeout=30) as client:
        with pytest.raises(InputError, match="does not exist"):
            score_files(client, [str(tmp_path / "none.png")], str(tmp_path))


# --- concurrency --------------------------------------------------------------

def test_concurrent_requests_match_sequential_results(grpc_server, loaded):
    rng = np.random.default_rng(7)
    pool = rng.uniform(-1, 1, (12, 32, 32, 1)).astype(np.float32)
    requests = []
    for _ in range(8 * 25):
        size = int(rng.integers(1, 6))
        requests.append(rng.choice(len(pool), size, replace=False))
    client = GrpcPredictClient(grpc_server, timeout=60)

    def send(rows):
        return client.predict(pool[rows], output_keys=SCORES)

    sequential = [send(rows) for rows in requests]
    with concurrent.futures.ThreadPoolExecutor(8) as executor:
        # 8 threads x 25 requests each.
        def worker(t):
            return [send(requests[i]) for i in range(t * 25, (t + 1) * 25)]
        concurrent_results = [r for part in executor.map(worker, range(8))
                              for r in part]
    client.close()
    assert len(concurrent_results) == 200
    alone = _direct_float(loaded, pool)
    for rows, seq, conc in zip(requests, sequential, concurrent_results):
        for key in SCORES:
            np.testing.assert_array_equal(conc[key], seq[key], err_msg=key)
            # and each row's score is its own, whatever its batchmates
            np.testing.assert_allclose(conc[key], alone[key][rows], rtol=1e-5,
                                       err_msg=key)


def _direct_float(loaded, x):
    out = loaded.signatures["serving_default"](images=tf.constant(x))
    return {k: v.numpy() for k, v in out.items()}


# --- bad requests -----------------------------------------------------------------

BAD = {
    "rank": (np.zeros((2, 32, 32), np.float32), "got shape"),
    "size": (np.zeros((1, 16, 16, 1), np.float32), "got shape"),
    "channels": (np.zeros((1, 32, 32, 3), np.float32), "got shape"),
    "empty": (np.zeros((0, 32, 32, 1), np.float32), "got an empty batch"),
    "nan": (np.full((1, 32, 32, 1), np.nan, np.float32), "got NaN or Inf"),
    "range": (np.full((1, 32, 32, 1), 255.0, np.float32), "got values from"),
}


def _raw_predict_error(server, x) -> grpc.RpcError:
    """The RpcError of a raw serving_default request (no client library)."""
    channel = grpc.insecure_channel(server)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "anogan"
    request.model_spec.signature_name = "serving_default"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(x))
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(request, timeout=30)
    channel.close()
    return e.value


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inputs_give_invalid_argument_over_grpc(grpc_server, case):
    x, phrase = BAD[case]
    error = _raw_predict_error(grpc_server, x)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "images must be [N, 32, 32, 1] float32 in [-1, 1]" in error.details()
    assert phrase in error.details()


def test_bad_input_through_client_library_is_a_serving_error(grpc_server):
    with connect(grpc_server, timeout=30) as client:
        with pytest.raises(ServingError) as e:
            client.predict(np.full((1, 32, 32, 1), 2.0, np.float32))
    assert e.value.code == "INVALID_ARGUMENT"
    assert "got values from" in e.value.message


@pytest.mark.parametrize("dtype", [np.float64, np.int32])
def test_wrong_dtype_is_named_by_the_server_and_refused_by_the_client(
        grpc_server, dtype):
    x = np.zeros((1, 32, 32, 1), dtype)
    # A raw request: the model server's own message names both dtypes
    # (tensorflow_model_server: "to be float but double is provided").
    error = _raw_predict_error(grpc_server, x)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    got = tf.dtypes.as_dtype(dtype).name
    assert f"Expects arg[images] to be float32 but {got} is provided" in \
        error.details()
    # The client library refuses it before sending and says what to send.
    with connect(grpc_server, timeout=30) as client:
        with pytest.raises(ServingError) as e:
            client.predict(x)
        assert e.value.code == "INVALID_ARGUMENT"
        assert (f"'serving_default' input 'images' takes float32 images in "
                f"[-1, 1]; got {np.dtype(dtype).name}. Not sent:"
                in e.value.message)
        assert ("astype(np.float32)" if dtype == np.float64 else
                "p / 127.5 - 1") in e.value.message
        assert "or send uint8 pixels to serving_uint8" in e.value.message
    with connect(grpc_server, signature_name="serving_uint8",
                 timeout=30) as client:
        with pytest.raises(ServingError) as e:
            client.predict(x.astype(np.float32))
    assert ("takes uint8 pixels in [0, 255]; got float32. Not sent: send "
            "float32 images in [-1, 1] to serving_default" in e.value.message)


@pytest.mark.parametrize("case", ["rank", "nan", "range"])
def test_bad_inputs_give_invalid_argument_over_rest(rest_server, case):
    # (Python's json writes NaN as the literal TF Serving's parser accepts.)
    x, phrase = BAD[case]
    with connect(rest_server, timeout=30) as client:
        with pytest.raises(ServingError) as e:
            client.predict(x)
    assert e.value.code == "INVALID_ARGUMENT"
    assert phrase in e.value.message


# --- connection errors and the binary -------------------------------------------------

def test_timeout_is_enforced(grpc_server):
    with connect(grpc_server, timeout=1e-4) as client:
        with pytest.raises(ServingError) as e:
            client.predict(np.zeros((1, 32, 32, 1), np.float32))
    assert e.value.code == "DEADLINE_EXCEEDED"


def test_no_server_is_unavailable():
    with connect("127.0.0.1:1", timeout=5) as client:
        with pytest.raises(ServingError) as e:
            client.signature()
    assert e.value.code == "UNAVAILABLE"


def test_client_binary_writes_scores_and_reports_errors(
        grpc_server, image_folder, tmp_path):
    folder, _ = image_folder
    with connect(grpc_server, timeout=60) as client:
        expected = score_files(client, [folder], None)
    base = [sys.executable, "-m", "anogan_tf.client",
            f"--server={grpc_server}", "--timeout=60", "--client_batch_size=4"]
    ok = subprocess.run(base + [f"--inputs={folder}",
                                f"--output_dir={tmp_path / 'out'}"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    rows = _read_csv(tmp_path / "out" / "scores.csv")
    assert [r[0] for r in rows] == list(expected.ids)
    np.testing.assert_allclose([float(r[3]) for r in rows],
                               expected.anomaly_score, rtol=1e-6)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "big.png")
    bad = subprocess.run(base + [f"--inputs={tmp_path / 'big.png'}",
                                 f"--output_dir={tmp_path / 'bad'}"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    errors = [l for l in bad.stderr.splitlines()
              if l.startswith("anogan-client: error:")]
    assert len(errors) == 1 and "anogan-score" in errors[0]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    bad = subprocess.run(base + [f"--inputs={tmp_path / 'broken.png'}",
                                 f"--output_dir={tmp_path / 'bad'}"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    errors = [l for l in bad.stderr.splitlines()
              if l.startswith("anogan-client: error:")]
    assert len(errors) == 1, bad.stderr
    assert "broken.png" in errors[0] and "re-export it or remove it" in errors[0]
