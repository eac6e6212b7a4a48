"""The exported serving functions and the registry that names them.

Every endpoint is a `tf.function` with its own `input_signature` (so
autograph stays on and `ExportArchive` takes it as is) and returns a dict
whose keys become the SignatureDef's output names.

Mapping endpoints keep z and Adam's moments as `tf.while_loop` state
(`latent.map_latents`), never in a shared variable, so concurrent TF Serving
requests cannot interfere and any batch size works. Their inputs have an
unknown rank in the signature: the rank, the image size, the channels, the
batch size and the values are checked inside the graph, so a bad request
fails with INVALID_ARGUMENT and a message that says what was expected
(`images must be [N, 64, 64, 1] float32 in [-1, 1]; got shape ...`) instead
of a score for garbage. After the checks the tensors get their static shape,
so the outputs in the SignatureDef carry the model's [N, H, W, C].

The plain endpoints never use XLA (TF Serving runs without it, and XLA on GPU
fails there: tensorflow/serving#2214, #2217). `*_xla` twins are for
in-process reuse: their outer function validates and draws z0 (the seed
fingerprint cannot be compiled) and calls an inner `jit_compile=True`
function for the loop.

`ENDPOINTS` lists the builders. `score_fast` (f-AnoGAN: one pass z = E(x),
score image MSE + kappa * feature MSE, `latent.encoder_outputs`) and
`score_hybrid` (the AnoGAN mapping started at E(x); further restarts draw
from the prior) are available only when the model dir has an encoder. Both
take the same float32 `images` as serving_default, with the same checks, and
return the same output keys.

`score_images` (float32 in [-1, 1]) and `score_images_uint8` (uint8, scaled
p / 255 * 2 - 1 as anogan-score reads 8-bit files) take whole images of the
size fixed at export and run the detector end to end (`image_graph`): its
intensity norm, patching and ROI, the mapping of its mode (the same mapping
graph as the per-patch signatures), stitching, map and aggregate, and the
threshold baked in from detector.json.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from anogan_tf.config import ModelConfig
from anogan_tf.export import image_graph
from anogan_tf.mapping import latent
from anogan_tf.mapping.latent import MappingParams

__all__ = [
    "ExportContext",
    "EndpointSpec",
    "ENDPOINTS",
    "SCORE_OUTPUT_KEYS",
    "IMAGES_KEY",
    "LATENT_KEY",
    "validate_images",
    "validate_full_images",
    "validate_latents",
    "build_endpoints",
]

# The outputs of every scoring signature (DESIGN.md, SavedModel contract).
SCORE_OUTPUT_KEYS = latent.OUTPUT_KEYS
IMAGES_KEY = "images"
LATENT_KEY = "latent"


@dataclasses.dataclass(frozen=True)
class ExportContext:
    """What endpoint builders may use.

    Attributes:
      generator, discriminator: The trained models (called with
        training=False).
      model_config: The model's architecture (image shape, latent_dim).
      params: The mapping constants, fixed at export.
      restarts: Initialisations per image; the lowest mapping loss wins.
      encoder: The f-AnoGAN encoder when the model dir has one, else None.
      image_plan: The detector's whole-image settings (`score_images`), or
        None to export the per-patch signatures only.
      cache: Functions builders share (e.g. the mapping graph behind both
        serving_default and serving_uint8).
    """

    generator: Any
    discriminator: Any
    model_config: ModelConfig
    params: MappingParams
    restarts: int = 1
    encoder: Any = None
    image_plan: Optional[image_graph.ImagePlan] = None
    cache: Dict[Any, Any] = dataclasses.field(default_factory=dict,
                                              compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class EndpointSpec:
    """One exported signature.

    Attributes:
      build: `build(context, jit_compile) -> tf.function` with an
        input_signature.
      xla_twin: Whether `--export_xla` also exports `<name>_xla`.
      available: `available(context) -> bool`; e.g. encoder endpoints need
        `context.encoder`.
    """

    build: Callable[[ExportContext, bool], Any]
    xla_twin: bool = False
    available: Callable[[ExportContext], bool] = lambda context: True


def _checked(x, checks):
    """Runs the checks in order, then returns x.

    Each check is `(condition_fn, data_fn)`; both are built under a control
    dependency on the previous assertion, so a check only runs (and only
    computes its data) once the checks before it passed, and the first
    failing one is the one reported: a rank-3 input fails the shape check
    before any value check reduces it, and NaN fails the finiteness check
    before the range check.
    """
    deps = []
    for condition_fn, data_fn in checks:
        with tf.control_dependencies(deps):
            deps = [tf.debugging.Assert(condition_fn(), data_fn(), summarize=8)]
    with tf.control_dependencies(deps):
        return tf.identity(x)


def _shape_ok(x, expected: Tuple[int, ...]):
    """rank(x) == 1 + len(expected) and x.shape[1:] == expected, any x."""
    shape = tf.shape(x, out_type=tf.int64)
    # Padding lets the per-axis comparisons run on tensors of any rank.
    padded = tf.concat([shape, tf.zeros([len(expected) + 1], tf.int64)], 0)
    ok = tf.equal(tf.size(shape), len(expected) + 1)
    for i, size in enumerate(expected):
        ok = tf.logical_and(ok, tf.equal(padded[i + 1], size))
    return ok


def validate_images(images, model_config: ModelConfig) -> tf.Tensor:
    """Checks a request's images in the graph; returns float32 [N,H,W,C].

    float32 inputs must lie in [-1, 1]; uint8 inputs (in [0, 255]) are scaled
    by x / 127.5 - 1, exactly as numpy scales them, so both dtypes of the same
    picture give the same result.

    Raises (when run):
      tf.errors.InvalidArgumentError: wrong rank, size or channels, an empty
        batch, NaN/Inf, or values outside [-1, 1].
    """
    x = _validated(images, model_config.image_shape, "serving_uint8")
    if images.dtype == tf.uint8:
        x = tf.cast(x, tf.float32) / 127.5 - 1.0
    return tf.ensure_shape(x, (None,) + tuple(model_config.image_shape))


def validate_full_images(images, image_shape: Tuple[int, int, int]
                         ) -> tf.Tensor:
    """`validate_images` for `score_images`: whole images of `image_shape`.

    uint8 inputs are scaled p / 255 * 2 - 1, the arithmetic anogan-score
    applies to 8-bit files (the decoder's p / 255, then [0, 1] -> [-1, 1]),
    so a PNG sent as uint8 is scored on the pixels anogan-score scores.

    Raises (when run):
      tf.errors.InvalidArgumentError: as `validate_images`.
    """
    x = _validated(images, tuple(image_shape), "score_images_uint8")
    if images.dtype == tf.uint8:
        # A table computed as NumPy computes it: the graph optimiser may
        # fold a chain of / and * into another rounding.
        x = tf.gather(tf.constant(_UINT8_TO_FLOAT), tf.cast(x, tf.int32))
    return tf.ensure_shape(x, (None,) + tuple(image_shape))


# p / 255 * 2 - 1 in float32, the decoder's arithmetic (data/decode.py).
_UINT8_TO_FLOAT = (np.arange(256).astype(np.float32) / 255.0) * 2.0 - 1.0


def _validated(images, expected: Tuple[int, ...], uint8_signature: str):
    """The checks of `validate_images`; returns `images` after them."""
    is_uint8 = images.dtype == tf.uint8
    h, w, c = expected
    what = (f"images must be [N, {h}, {w}, {c}] "
            + ("uint8 in [0, 255]" if is_uint8 else "float32 in [-1, 1]"))

    def flat():
        return tf.reshape(images, [-1])

    checks = [
        (lambda: _shape_ok(images, expected),
         lambda: [f"{what}; got shape", tf.shape(images)]),
        (lambda: tf.greater(tf.size(images), 0),
         lambda: [f"{what}; got an empty batch, shape", tf.shape(images)]),
    ]
    if not is_uint8:
        checks += [
            (lambda: tf.reduce_all(tf.math.is_finite(flat())),
             lambda: [f"{what}; got NaN or Inf values"]),
            (lambda: tf.reduce_all(tf.abs(flat()) <= 1.0),
             lambda: [f"{what}; got values from", tf.reduce_min(flat()), "to",
                      tf.reduce_max(flat()), ". Scale 8-bit pixels by "
                      f"p / 127.5 - 1, or send uint8 to {uint8_signature}."]),
        ]
    return _checked(images, checks)


def validate_latents(z, model_config: ModelConfig) -> tf.Tensor:
    """Checks `generate`'s latent codes; returns float32 [N, latent_dim]."""
    what = f"latent must be [N, {model_config.latent_dim}] float32, finite"
    z = _checked(z, [
        (lambda: _shape_ok(z, (model_config.latent_dim,)),
         lambda: [f"{what}; got shape", tf.shape(z)]),
        (lambda: tf.greater(tf.size(z), 0),
         lambda: [f"{what}; got an empty batch, shape", tf.shape(z)]),
        (lambda: tf.reduce_all(tf.math.is_finite(tf.reshape(z, [-1]))),
         lambda: [f"{what}; got NaN or Inf values"]),
    ])
    return tf.ensure_shape(z, (None, model_config.latent_dim))


def _mapping_fn(context: ExportContext, jit_compile: bool):
    """Checked float32 images [N, H, W, C] -> the score outputs.

    Runs every restart and keeps each image's lowest mapping loss. Built
    once per `jit_compile` and shared by the float and uint8 endpoints, so
    the mapping graph is traced (and stored in the SavedModel) once.
    """
    return _restarts_fn(context, jit_compile, from_encoder=False)


def _mapping_loop(context: ExportContext, jit_compile: bool):
    """(x, z0) -> the mapping's final outputs; traced once per jit_compile."""
    key = ("mapping_loop", jit_compile)
    if key in context.cache:
        return context.cache[key]
    g, d, params = context.generator, context.discriminator, context.params
    x_spec = tf.TensorSpec((None,) + context.model_config.image_shape,
                           tf.float32)
    z_spec = tf.TensorSpec([None, params.latent_dim], tf.float32)

    # With XLA only the mapping steps are compiled, in chunks inside a TF
    # loop (`latent.descend`): z0's fingerprint seeds (which XLA cannot
    # compile) and the input checks stay in plain functions.
    @tf.function(input_signature=[x_spec, z_spec], jit_compile=False)
    def mapping_loop(x, z0):
        return latent.map_latents(g, d, x, z0, params, xla=jit_compile)

    context.cache[key] = mapping_loop
    return mapping_loop


def _restarts_fn(context: ExportContext, jit_compile: bool,
                 from_encoder: bool):
    """Checked float32 images -> outputs of the best of the restarts.

    Restart 0 starts at E(x) when `from_encoder` (the hybrid mode), else at a
    prior draw; the other restarts draw from the prior.
    """
    key = ("mapping", jit_compile, from_encoder)
    if key in context.cache:
        return context.cache[key]
    params = context.params
    mapping_loop = _mapping_loop(context, jit_compile)
    x_spec = tf.TensorSpec((None,) + context.model_config.image_shape,
                           tf.float32)

    @tf.function(input_signature=[x_spec], jit_compile=False)
    def map_images(x):
        best = None
        for restart in range(context.restarts):
            if from_encoder and restart == 0:
                z0 = latent.encode(context.encoder, x, params)
            else:
                z0 = latent.initial_latents(x, params, restart)
            best = latent.keep_best(best, mapping_loop(x, z0))
        return {k: best[k] for k in SCORE_OUTPUT_KEYS}

    context.cache[key] = map_images
    return map_images


def _scoring_fn(context: ExportContext, dtype: tf.DType, jit_compile: bool):
    """The AnoGAN score of `images` of `dtype` (see `validate_images`)."""
    map_images = _mapping_fn(context, jit_compile)

    @tf.function(input_signature=[tf.TensorSpec(None, dtype, name=IMAGES_KEY)],
                 jit_compile=False)
    def score(images):
        return map_images(validate_images(images, context.model_config))

    return score


def _build_serving_default(context: ExportContext, jit_compile: bool):
    return _scoring_fn(context, tf.float32, jit_compile)


def _build_serving_uint8(context: ExportContext, jit_compile: bool):
    return _scoring_fn(context, tf.uint8, jit_compile)


def _build_generate(context: ExportContext, jit_compile: bool):
    del jit_compile  # one forward pass; nothing to gain from XLA
    g = context.generator

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32,
                                                name=LATENT_KEY)],
                 jit_compile=False)
    def generate(latent):  # pylint: disable=redefined-outer-name
        z = validate_latents(latent, context.model_config)
        return {"images": g(z, training=False)}

    return generate


def _encoder_fn(context: ExportContext):
    """Checked float32 images -> the encoder mode's outputs (one pass)."""
    key = ("encoder",)
    if key in context.cache:
        return context.cache[key]
    g, d, params = context.generator, context.discriminator, context.params
    x_spec = tf.TensorSpec((None,) + context.model_config.image_shape,
                           tf.float32)

    @tf.function(input_signature=[x_spec], jit_compile=False)
    def encoder_images(x):
        fg, fd = latent.freeze_models(g, d, params, xla=False)
        out = latent.encoder_pass(fg, fd, context.encoder, x, params)
        return {k: out[k] for k in SCORE_OUTPUT_KEYS}

    context.cache[key] = encoder_images
    return encoder_images


def _build_score_fast(context: ExportContext, jit_compile: bool):
    del jit_compile  # one forward pass; exported without XLA
    encoder_images = _encoder_fn(context)

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32,
                                                name=IMAGES_KEY)],
                 jit_compile=False)
    def score_fast(images):
        return encoder_images(validate_images(images, context.model_config))

    return score_fast


def _build_score_hybrid(context: ExportContext, jit_compile: bool):
    map_images = _restarts_fn(context, jit_compile, from_encoder=True)

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32,
                                                name=IMAGES_KEY)],
                 jit_compile=False)
    def score_hybrid(images):
        return map_images(validate_images(images, context.model_config))

    return score_hybrid


def _mode_fn(context: ExportContext):
    """The detector mode's patch mapping (what anogan-score runs)."""
    mode = context.image_plan.mode
    if mode == "encoder":
        return _encoder_fn(context)
    return _restarts_fn(context, False, from_encoder=mode == "hybrid")


def _image_scores_fn(context: ExportContext):
    """Checked float32 whole images -> the score_images outputs; traced once
    and shared by the float and uint8 signatures."""
    key = ("image_scores",)
    if key in context.cache:
        return context.cache[key]
    plan = context.image_plan
    map_patches = _mode_fn(context)

    # Autograph off: image_graph builds its loops as explicit while_loops,
    # and converting its many small functions only slows the trace.
    @tf.function(input_signature=[tf.TensorSpec(
        (None,) + tuple(plan.image_shape), tf.float32)], jit_compile=False,
                 autograph=False)
    def image_scores(x):
        return image_graph.image_scores(x, plan, map_patches)

    context.cache[key] = image_scores
    return image_scores


def _images_fn(context: ExportContext, dtype: tf.DType):
    """score_images of `dtype` inputs (see `image_graph.image_scores`)."""
    plan = context.image_plan
    image_scores = _image_scores_fn(context)

    @tf.function(input_signature=[tf.TensorSpec(None, dtype, name=IMAGES_KEY)],
                 jit_compile=False)
    def score_images(images):
        return image_scores(validate_full_images(images, plan.image_shape))

    return score_images


def _build_score_images(context: ExportContext, jit_compile: bool):
    del jit_compile  # TF Serving runs without XLA
    return _images_fn(context, tf.float32)


def _build_score_images_uint8(context: ExportContext, jit_compile: bool):
    del jit_compile
    return _images_fn(context, tf.uint8)


def _has_encoder(context: ExportContext) -> bool:
    return context.encoder is not None


def _has_image_plan(context: ExportContext) -> bool:
    return context.image_plan is not None and (
        context.image_plan.mode == "iterative" or context.encoder is not None)


# Signature name -> builder. serving_default comes first: TF Serving needs it.
ENDPOINTS: Dict[str, EndpointSpec] = {
    "serving_default": EndpointSpec(_build_serving_default, xla_twin=True),
    "serving_uint8": EndpointSpec(_build_serving_uint8, xla_twin=True),
    "generate": EndpointSpec(_build_generate),
    "score_fast": EndpointSpec(_build_score_fast, available=_has_encoder),
    "score_hybrid": EndpointSpec(_build_score_hybrid, xla_twin=True,
                                 available=_has_encoder),
    "score_images": EndpointSpec(_build_score_images,
                                 available=_has_image_plan),
    "score_images_uint8": EndpointSpec(_build_score_images_uint8,
                                       available=_has_image_plan),
}


def build_endpoints(context: ExportContext,
                    export_xla: bool = False) -> Dict[str, Any]:
    """Builds every available endpoint (and, with export_xla, the twins).

    Returns:
      {signature name: tf.function}, serving_default first.
    """
    functions = {}
    for name, spec in ENDPOINTS.items():
        if not spec.available(context):
            continue
        functions[name] = spec.build(context, False)
    if export_xla:
        for name, spec in ENDPOINTS.items():
            if spec.xla_twin and spec.available(context):
                functions[f"{name}_xla"] = spec.build(context, True)
    return functions
