"""A loopback TF Serving stand-in for tests (the real model server can't be
installed here).

It serves one SavedModel version the way `tensorflow_model_server` does:
a TF1 graph and `tf.compat.v1.Session` (XLA off), loaded with
`tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)`, and runs a
signature by feeding and fetching the tensor names in its SignatureDef. That
path reports variables that a SavedModel forgot to initialise, which
`tf.saved_model.load` hides (tensorflow/serving#2250). `tf.compat.v1` is
used on purpose here: it is what the model server does, not library code.

gRPC: `PredictionService/Predict` and `GetModelMetadata` with the real
`tensorflow_serving.apis` protos, on 127.0.0.1 only, on a free port, with a
thread pool so requests run concurrently (one Session, as in the server).
TF errors map to gRPC status codes (InvalidArgumentError -> INVALID_ARGUMENT).

`start_rest_server` answers the REST API's `GET /v1/models/<name>[/versions/
<v>]/metadata` and `POST ...:predict` ("inputs" or "instances" JSON) by
running the SavedModel loaded with `tf.saved_model.load`.

`make_tiny_model_dir` writes the small random-weight model dir the export
and serving tests share.
"""

from __future__ import annotations

import concurrent.futures
import http.server
import json
import os
import re
import threading
from typing import Dict, Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, predict_pb2,
                                     prediction_service_pb2_grpc)

__all__ = ["LoopbackModel", "start_grpc_server", "start_rest_server",
           "latest_version_dir", "make_tiny_model_dir"]

_STATUS = {
    tf.errors.InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    tf.errors.FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    tf.errors.NotFoundError: grpc.StatusCode.NOT_FOUND,
    tf.errors.ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    tf.errors.DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    tf.errors.UnimplementedError: grpc.StatusCode.UNIMPLEMENTED,
}


def make_tiny_model_dir(model_dir: str, seed: int = 0, **model_kwargs):
    """Writes config.json, generator.keras, discriminator.keras; returns
    (model_config, generator, discriminator).

    Random weights, with BatchNorm statistics settled by 30 training-mode
    forward passes and G's output layer scaled up, so that G(z) varies with z
    (image range about +-0.2) and the mapping has real gradients.
    """
    import keras
    from anogan_tf.config import ModelConfig, save_model_config
    from anogan_tf.models import build_models

    kwargs = dict(image_size=32, channels=1, latent_dim=16, base_filters=4)
    kwargs.update(model_kwargs)
    config = ModelConfig(**kwargs)
    keras.utils.set_random_seed(seed)
    generator, discriminator = build_models(config)
    kernel = generator.to_image.kernel
    kernel.assign(kernel * 10.0)
    rng = np.random.default_rng(seed)
    for _ in range(30):
        z = rng.uniform(-1, 1, (16, config.latent_dim)).astype(np.float32)
        discriminator(generator(z, training=True), training=True)
        discriminator(rng.uniform(-1, 1, (16,) + config.image_shape)
                      .astype(np.float32), training=True)
    os.makedirs(model_dir, exist_ok=True)
    generator.save(os.path.join(model_dir, "generator.keras"))
    discriminator.save(os.path.join(model_dir, "discriminator.keras"))
    save_model_config(config, model_dir)
    return config, generator, discriminator


def latest_version_dir(base_path: str) -> Tuple[int, str]:
    """(version, path) of the highest integer folder, like the server's policy."""
    versions = [int(n) for n in os.listdir(base_path) if n.isdigit()]
    if not versions:
        raise FileNotFoundError(f"No version folder in {base_path}")
    return max(versions), os.path.join(base_path, str(max(versions)))


class _RequestError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


class LoopbackModel:
    """One SavedModel version in a TF1 Session, as the model server holds it."""

    def __init__(self, version_dir: str, name: str = "anogan",
                 version: Optional[int] = None):
        self.name = name
        self.version = version if version is not None else int(
            os.path.basename(os.path.normpath(version_dir)))
        self.graph = tf.Graph()
        config = tf.compat.v1.ConfigProto()
        config.graph_options.optimizer_options.global_jit_level = (
            tf.compat.v1.OptimizerOptions.OFF)
        with self.graph.as_default():
            self.session = tf.compat.v1.Session(graph=self.graph, config=config)
            meta_graph = tf.compat.v1.saved_model.loader.load(
                self.session, ["serve"], version_dir)
        self.signatures = dict(meta_graph.signature_def)
        self.graph.finalize()

    def metadata(self) -> get_model_metadata_pb2.SignatureDefMap:
        out = get_model_metadata_pb2.SignatureDefMap()
        for key, value in self.signatures.items():
            out.signature_def[key].CopyFrom(value)
        return out

    def run(self, signature_name: str, inputs: Dict[str, np.ndarray],
            output_filter=()) -> Dict[str, np.ndarray]:
        """Runs a signature; raises _RequestError like the server would."""
        name = signature_name or "serving_default"
        if name not in self.signatures:
            raise _RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                f"Serving signature name: \"{name}\" not found "
                                f"in signature def")
        sig = self.signatures[name]
        if set(inputs) != set(sig.inputs):
            raise _RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input keys {sorted(inputs)} do not match the signature's "
                f"{sorted(sig.inputs)}")
        feed = {}
        for key, value in inputs.items():
            want = tf.dtypes.as_dtype(sig.inputs[key].dtype)
            if value.dtype != want.as_numpy_dtype:
                raise _RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Expects arg[{key}] to be {want.name} but "
                    f"{tf.dtypes.as_dtype(value.dtype).name} is provided")
            feed[sig.inputs[key].name] = value
        keys = list(output_filter) or list(sig.outputs)
        for key in keys:
            if key not in sig.outputs:
                raise _RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"output tensor alias not found: {key}")
        fetches = [sig.outputs[k].name for k in keys]
        try:
            values = self.session.run(fetches, feed_dict=feed)
        except tf.errors.OpError as e:
            code = _STATUS.get(type(e), grpc.StatusCode.INTERNAL)
            raise _RequestError(code, e.message) from e
        return dict(zip(keys, values))


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

    def __init__(self, model: LoopbackModel):
        self.model = model

    def _check_spec(self, spec, context):
        if spec.name != self.model.name:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"Servable not found for request: Latest({spec.name})")
        if spec.HasField("version") and spec.version.value != self.model.version:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"Servable not found for request: "
                          f"Specific({spec.name}, {spec.version.value})")

    def Predict(self, request, context):
        self._check_spec(request.model_spec, context)
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        try:
            outputs = self.model.run(request.model_spec.signature_name, inputs,
                                     request.output_filter)
        except _RequestError as e:
            context.abort(e.code, str(e))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.model.name
        response.model_spec.version.value = self.model.version
        response.model_spec.signature_name = (
            request.model_spec.signature_name or "serving_default")
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):
        self._check_spec(request.model_spec, context)
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "Metadata field signature_def is the only one "
                          "supported")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.model.name
        response.model_spec.version.value = self.model.version
        response.metadata["signature_def"].Pack(self.model.metadata())
        return response


def start_grpc_server(model: LoopbackModel, max_workers: int = 8):
    """Serves `model` on 127.0.0.1:<free port>; returns (server, port)."""
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=max_workers),
        options=[("grpc.max_receive_message_length", 64 << 20),
                 ("grpc.max_send_message_length", 64 << 20)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _PredictionService(model), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


_REST_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(/versions/(?P<version>\d+))?"
    r"(?P<verb>/metadata|:predict)$")


def start_rest_server(version_dir: str, name: str = "anogan"):
    """A REST stand-in on 127.0.0.1:<free port>; returns (server, port).

    Metadata is the SavedModel's SignatureDefs as the model server prints
    them (proto field names); predict runs `tf.saved_model.load(...)`.
    """
    loaded = tf.saved_model.load(version_dir)
    version = int(os.path.basename(os.path.normpath(version_dir)))
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, value in saved.meta_graphs[0].signature_def.items():
        sig_map.signature_def[key].CopyFrom(value)
    metadata = {
        "model_spec": {"name": name, "signature_name": "",
                       "version": str(version)},
        "metadata": {"signature_def": json_format.MessageToDict(
            sig_map, preserving_proto_field_name=True)},
    }

    class Handler(http.server.BaseHTTPRequestHandler):

        def log_message(self, *args):  # keep test output quiet
            pass

        def _reply(self, code: int, body) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, verb: str):
            m = _REST_PATH.match(self.path)
            if not m or m.group("verb") != verb:
                self._reply(404, {"error": f"Malformed request: {self.path}"})
                return None
            if m.group("name") != name or (
                    m.group("version") and int(m.group("version")) != version):
                self._reply(404, {"error": f"Servable not found for request: "
                                           f"{self.path}"})
                return None
            return m

        def do_GET(self):
            if self._route("/metadata"):
                self._reply(200, metadata)

        def do_POST(self):
            if not self._route(":predict"):
                return
            body = json.loads(self.rfile.read(
                int(self.headers["Content-Length"])))
            sig_name = body.get("signature_name", "serving_default")
            if sig_name not in sig_map.signature_def:
                self._reply(400, {"error": f"Serving signature name: "
                                           f"\"{sig_name}\" not found"})
                return
            sig = sig_map.signature_def[sig_name]
            if "inputs" in body:
                raw = body["inputs"]
                row_format = False
            else:
                raw = body["instances"]
                row_format = True
            if not isinstance(raw, dict):
                (key,) = sig.inputs
                raw = {key: raw}
            try:
                inputs = {k: tf.constant(np.asarray(
                    v, tf.dtypes.as_dtype(sig.inputs[k].dtype).as_numpy_dtype))
                          for k, v in raw.items()}
                outputs = loaded.signatures[sig_name](**inputs)
            except tf.errors.OpError as e:
                self._reply(400, {"error": e.message})
                return
            except (KeyError, TypeError, ValueError) as e:
                self._reply(400, {"error": str(e)})
                return
            outputs = {k: v.numpy().tolist() for k, v in outputs.items()}
            if row_format:
                n = len(next(iter(outputs.values())))
                self._reply(200, {"predictions": [
                    {k: v[i] for k, v in outputs.items()} for i in range(n)]})
            else:
                self._reply(200, {"outputs": outputs})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]
