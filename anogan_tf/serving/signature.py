"""What a client needs to know about a served signature, read from the server.

Clients never hard-code tensor names: the input key and dtype come from the
SignatureDef that `GetModelMetadata` (gRPC) or `/metadata` (REST) returns.
The anogan_tf signatures accept any rank and check the image size in the
graph, so the model's [H, W, C] is read from the input's shape when it is
static and otherwise from a rank-4 output (`reconstruction`) whose shape the
graph fixes after its checks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Tuple

import numpy as np

__all__ = ["SignatureInfo", "ServingError", "signature_info"]


class ServingError(RuntimeError):
    """The server refused or failed a request.

    Attributes:
      code: The gRPC status name ("INVALID_ARGUMENT", "UNAVAILABLE", ...), or
        for REST the name matching the HTTP status.
    """

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
    """One signature of the served model.

    Attributes:
      name: The signature name (e.g. "serving_default").
      input_key: The one input's key (e.g. "images").
      input_dtype: numpy dtype the input expects (float32 or uint8).
      image_shape: The model's (H, W, C), or None if the server does not say.
      output_keys: The signature's output names.
      counterpart: The served signature that takes the same images in the
        other dtype (serving_default <-> serving_uint8, score_images <->
        score_images_uint8), or None.
    """

    name: str
    input_key: str
    input_dtype: np.dtype
    image_shape: Optional[Tuple[int, int, int]]
    output_keys: Tuple[str, ...]
    counterpart: Optional[str] = None

    def check_dtype(self, dtype) -> None:
        """Raises ServingError (INVALID_ARGUMENT) unless `dtype` is the
        input dtype, naming what to send instead (no silent casts: a cast
        of 0..255 integers to float32 would be refused later as out of
        range, and a float64 -> float32 cast may hide a scaling slip)."""
        dtype = np.dtype(dtype)
        if dtype == self.input_dtype:
            return
        if self.input_dtype == np.uint8:
            wanted = "uint8 pixels in [0, 255]"
            other = (f"send float32 images in [-1, 1] to {self.counterpart}"
                     if self.counterpart else "convert them")
        else:
            wanted = "float32 images in [-1, 1]"
            other = ("cast with x.astype(np.float32)" if dtype.kind == "f"
                     else "scale 8-bit pixels by p / 127.5 - 1")
            if self.counterpart:
                other += f", or send uint8 pixels to {self.counterpart}"
        raise ServingError(
            "INVALID_ARGUMENT",
            f"Signature {self.name!r} input {self.input_key!r} takes "
            f"{wanted}; got {dtype.name}. Not sent: {other}.")


def _static_dims(tensor_info) -> Optional[Tuple[int, ...]]:
    shape = tensor_info.tensor_shape
    if shape.unknown_rank:
        return None
    return tuple(int(d.size) for d in shape.dim)


def _image_shape(signature_def) -> Optional[Tuple[int, int, int]]:
    candidates = list(signature_def.inputs.values())
    outputs = signature_def.outputs
    if "reconstruction" in outputs:
        candidates.append(outputs["reconstruction"])
    candidates += [outputs[k] for k in sorted(outputs)]
    for info in candidates:
        dims = _static_dims(info)
        if dims is not None and len(dims) == 4 and min(dims[1:]) > 0:
            return dims[1:]
    return None


def signature_info(signature_defs: Mapping[str, Any],
                   name: str) -> SignatureInfo:
    """Reads `name` from a {name: SignatureDef proto} map.

    Raises:
      ServingError: no such signature, or it does not take exactly one input.
    """
    from tensorflow.core.framework import types_pb2

    if name not in signature_defs:
        raise ServingError(
            "NOT_FOUND",
            f"The served model has no signature {name!r}; it has "
            f"{sorted(signature_defs)}. Pass one of them as --signature_name.")
    sig = signature_defs[name]
    if len(sig.inputs) != 1:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"Signature {name!r} takes inputs {sorted(sig.inputs)}; "
            f"anogan-client sends images to a signature with exactly one "
            f"input (serving_default or serving_uint8).")
    (key, info), = sig.inputs.items()
    dtypes = {types_pb2.DT_FLOAT: np.dtype(np.float32),
              types_pb2.DT_UINT8: np.dtype(np.uint8)}
    if info.dtype not in dtypes:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"Signature {name!r} input {key!r} has dtype "
            f"{types_pb2.DataType.Name(info.dtype)}; anogan-client sends "
            f"float32 or uint8 images.")
    if name.endswith("_uint8"):
        partner = ("serving_default" if name == "serving_uint8"
                   else name[:-len("_uint8")])
    else:
        partner = ("serving_uint8" if name == "serving_default"
                   else f"{name}_uint8")
    return SignatureInfo(name=name, input_key=key,
                         input_dtype=dtypes[info.dtype],
                         image_shape=_image_shape(sig),
                         output_keys=tuple(sorted(sig.outputs)),
                         counterpart=(partner if partner in signature_defs
                                      else None))
