"""Predict clients for TF Serving: gRPC `PredictionService` and REST JSON.

Both read the signature (input key, dtype, image size) from the server's
metadata, never from constants, and pass a timeout on every call.

  client = connect("localhost:8500", "anogan", "serving_default", timeout=60)
  outputs = client.predict(images)          # {"anomaly_score": [N], ...}
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, Optional, Sequence

import numpy as np

from anogan_tf.serving.signature import ServingError, SignatureInfo, signature_info

__all__ = ["PredictClient", "GrpcPredictClient", "RestPredictClient", "connect"]

_MAX_MESSAGE = 256 << 20  # reconstructions of big batches exceed gRPC's 4 MB

# HTTP status -> the gRPC status name TF Serving's REST layer maps it from.
_HTTP_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND",
               408: "DEADLINE_EXCEEDED", 409: "ABORTED",
               412: "FAILED_PRECONDITION", 429: "RESOURCE_EXHAUSTED",
               500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
               504: "DEADLINE_EXCEEDED"}


class PredictClient:
    """The interface `score_files` uses; see the two implementations.

    Args:
      model_name: The served model's name (TF Serving's --model_name).
      signature_name: The signature to call.
      timeout: Seconds per call (metadata and each predict request).
      version: A specific model version, or 0 for the server's latest.
    """

    def __init__(self, model_name: str, signature_name: str, timeout: float,
                 version: int = 0):
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}.")
        self.model_name = model_name
        self.signature_name = signature_name
        self.timeout = float(timeout)
        self.version = int(version)
        self._signature: Optional[SignatureInfo] = None

    def signature(self) -> SignatureInfo:
        """The signature's input key, dtype and image shape (cached)."""
        if self._signature is None:
            self._signature = signature_info(self._signature_defs(),
                                             self.signature_name)
        return self._signature

    def predict(self, inputs: np.ndarray,
                output_keys: Sequence[str] = ()) -> Dict[str, np.ndarray]:
        """Sends one batch; returns {output key: array}.

        Args:
          inputs: The batch, in the signature's dtype (float32 or uint8).
          output_keys: Outputs to return (all when empty). gRPC asks the
            server for only these (`output_filter`).

        Raises:
          ServingError: the server refused or failed the request, or it
            timed out; INVALID_ARGUMENT before sending when `inputs` has
            another dtype (`SignatureInfo.check_dtype`).
        """
        sig = self.signature()
        inputs = np.asarray(inputs)
        sig.check_dtype(inputs.dtype)
        inputs = np.ascontiguousarray(inputs)
        outputs = self._predict(sig, inputs, tuple(output_keys))
        return ({k: outputs[k] for k in output_keys} if output_keys
                else outputs)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _signature_defs(self):
        raise NotImplementedError

    def _predict(self, sig: SignatureInfo, inputs: np.ndarray,
                 output_keys) -> Dict[str, np.ndarray]:
        raise NotImplementedError


class GrpcPredictClient(PredictClient):
    """TF Serving's gRPC API (`host:port`, usually port 8500)."""

    def __init__(self, target: str, model_name: str = "anogan",
                 signature_name: str = "serving_default", timeout: float = 60.0,
                 version: int = 0):
        super().__init__(model_name, signature_name, timeout, version)
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.target = target
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.max_send_message_length", _MAX_MESSAGE)])
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(
            self._channel)

    def _model_spec(self, spec) -> None:
        spec.name = self.model_name
        if self.version:
            spec.version.value = self.version

    def _call(self, method, request):
        import grpc
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            code = e.code().name if e.code() is not None else "UNKNOWN"
            detail = e.details() or ""
            if code == "UNAVAILABLE":
                detail += (f" (is a model server listening on {self.target}? "
                           f"Pass --server=host:port of its gRPC port)")
            elif code == "DEADLINE_EXCEEDED":
                detail += (f" (no answer within {self.timeout:g} s; raise "
                           f"--timeout or lower --client_batch_size)")
            raise ServingError(code, detail) from e

    def _signature_defs(self):
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._model_spec(request.model_spec)
        request.metadata_field.append("signature_def")
        response = self._call(self._stub.GetModelMetadata, request)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        if not response.metadata["signature_def"].Unpack(sig_map):
            raise ServingError("INTERNAL", "GetModelMetadata returned no "
                               "SignatureDefMap.")
        return dict(sig_map.signature_def)

    def _predict(self, sig, inputs, output_keys):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._model_spec(request.model_spec)
        request.model_spec.signature_name = sig.name
        request.inputs[sig.input_key].CopyFrom(tf.make_tensor_proto(inputs))
        request.output_filter.extend(output_keys)
        response = self._call(self._stub.Predict, request)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def close(self) -> None:
        self._channel.close()


class RestPredictClient(PredictClient):
    """TF Serving's REST API (`http://host:port`, usually port 8501)."""

    def __init__(self, base_url: str, model_name: str = "anogan",
                 signature_name: str = "serving_default", timeout: float = 60.0,
                 version: int = 0):
        super().__init__(model_name, signature_name, timeout, version)
        self.base_url = base_url.rstrip("/")
        path = f"/v1/models/{urllib.parse.quote(model_name)}"
        if version:
            path += f"/versions/{int(version)}"
        self._model_url = self.base_url + path

    def _request(self, url: str, body: Optional[dict] = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, method="GET" if data is None else "POST",
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                text = json.loads(text).get("error", text)
            except (ValueError, AttributeError):
                pass
            raise ServingError(_HTTP_CODES.get(e.code, f"HTTP_{e.code}"),
                               text) from e
        except urllib.error.URLError as e:
            raise ServingError(
                "UNAVAILABLE", f"{url}: {e.reason} (is a model server's REST "
                f"port at {self.base_url}?)") from e
        except TimeoutError as e:
            raise ServingError(
                "DEADLINE_EXCEEDED", f"{url}: no answer within "
                f"{self.timeout:g} s; raise --timeout or lower "
                f"--client_batch_size") from e

    def _signature_defs(self):
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        body = self._request(self._model_url + "/metadata")
        try:
            raw = body["metadata"]["signature_def"]
        except (KeyError, TypeError) as e:
            raise ServingError("INTERNAL", f"{self._model_url}/metadata has no "
                               f"metadata.signature_def") from e
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        json_format.ParseDict(raw, sig_map, ignore_unknown_fields=True)
        return dict(sig_map.signature_def)

    def _predict(self, sig, inputs, output_keys):
        body = self._request(self._model_url + ":predict", {
            "signature_name": sig.name,
            "inputs": {sig.input_key: inputs.tolist()}})
        outputs = body.get("outputs")
        if outputs is None:
            raise ServingError("INTERNAL", f"{self._model_url}:predict "
                               f"answered without 'outputs': {list(body)}")
        if not isinstance(outputs, dict):  # a single output comes bare
            outputs = {sig.output_keys[0]: outputs}
        return {k: np.asarray(v) for k, v in outputs.items()}


def connect(server: str, model_name: str = "anogan",
            signature_name: str = "serving_default", timeout: float = 60.0,
            version: int = 0) -> PredictClient:
    """A REST client for `http(s)://host:port`, else a gRPC client."""
    if server.startswith(("http://", "https://")):
        return RestPredictClient(server, model_name, signature_name, timeout,
                                 version)
    return GrpcPredictClient(server, model_name, signature_name, timeout,
                             version)
