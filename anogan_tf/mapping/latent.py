"""The latent mapping engine, shared by every mapper.

One engine: the in-process mapper (`mapper.LatentMapper`) and the exported
serving graphs both run `map_latents`, whose one loop `descend` carries z
and Adam's moments as `tf.while_loop` state (the Gamma Adam steps,
optionally XLA-compiled in chunks of `XLA_CHUNK_STEPS`) on BN-folded frozen
views of G and D (`freeze_models`), with `initial_latents`,
`mapping_objective`, `adam_update` and `final_outputs` from here. The
in-process mapper passes its trainable z variable (the design card's z) to
`map_latents`, which assigns it z* and scores the variable's value; the
exported graphs share no variable between calls. Both pick the best restart
with `keep_best`, in TF. Parity tests hold them together.

`MappingParams` is the one record of a mapping graph's constants: the
user's `config.MappingConfig` plus the model's latent_dim and prior. The
per-image losses are pure functions in `anogan_tf.losses`.

Initial z: each image draws its own z0 from the training prior with the
stateless philox generator, seeded by (fingerprint of the image's 8-bit
quantised content, global seed, restart index). A score therefore depends
only on the image and the seed: not on its batchmates, the batch size, its
position, or on whether XLA is used.

f-AnoGAN modes (Schlegl et al. 2019): `encode` gives z = E(x);
`encoder_outputs` scores it with the izi_f loss (`losses.izif_losses`, which
the encoder training uses too; same keys as `final_outputs`). The hybrid
mode is `map_latents` started from E(x).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import tensorflow as tf

from anogan_tf import losses
from anogan_tf.config import MappingConfig
from anogan_tf.models import frozen

__all__ = [
    "MappingParams",
    "image_seeds",
    "initial_latents",
    "residual_and_discrimination",
    "mapping_objective",
    "adam_update",
    "project_to_prior",
    "select_score",
    "final_outputs",
    "keep_best",
    "map_latents",
    "descend",
    "XLA_CHUNK_STEPS",
    "freeze_models",
    "encoder_pass",
    "encode",
    "encoder_outputs",
    "OUTPUT_KEYS",
]

OUTPUT_KEYS = losses.SCORE_KEYS + ("residual_map", "reconstruction", "latent")


@dataclasses.dataclass(frozen=True)
class MappingParams:
    """The constants of one mapping graph (fixed at trace / export time).

    One record: the user's mapping settings as they are (`mapping`, the
    `config.MappingConfig` of the flags and detector.json) plus the model's
    latent setup. The properties below read `mapping`; no setting is
    declared twice. batch_size, restarts, jit_compile and mode are in
    `mapping` too, but a mapper takes them as its own arguments (they shape
    the calls, not the graph).

    Attributes:
      mapping: The mapping settings.
      latent_dim: The model's latent size.
      prior: The model's prior ("normal" or "uniform").
    """

    mapping: MappingConfig
    latent_dim: int
    prior: str

    @classmethod
    def create(cls, model_config, mapping_config: MappingConfig
               ) -> "MappingParams":
        """The record for `mapping_config` on the model of `model_config`."""
        return cls(mapping=mapping_config, latent_dim=model_config.latent_dim,
                   prior=model_config.prior)

    @property
    def steps(self) -> int:
        return self.mapping.steps

    @property
    def lr(self) -> float:
        return self.mapping.lr

    @property
    def beta_1(self) -> float:
        return self.mapping.beta_1

    @property
    def beta_2(self) -> float:
        return self.mapping.beta_2

    @property
    def epsilon(self) -> float:
        return self.mapping.epsilon

    @property
    def lambda_weight(self) -> float:
        return self.mapping.lambda_weight

    @property
    def discrimination_loss(self) -> str:
        return self.mapping.discrimination_loss

    @property
    def score(self) -> str:
        return self.mapping.score

    @property
    def seed(self) -> int:
        return self.mapping.seed

    @property
    def kappa(self) -> float:
        return self.mapping.kappa

    @property
    def conv_impl(self) -> str:
        return self.mapping.conv_impl

    @property
    def compute_dtype(self) -> str:
        return self.mapping.compute_dtype


def image_seeds(x, seed: int, restart) -> tf.Tensor:
    """Per-image philox seeds [N, 2] (int64) from each image's content.

    The content is quantised to 8 bits first, so float32 inputs and uint8
    inputs of the same picture (scaled either way) get the same seed.
    """
    q = tf.cast(tf.round((tf.clip_by_value(x, -1.0, 1.0) + 1.0) * 127.5),
                tf.uint8)
    fp = tf.bitcast(tf.fingerprint(q), tf.int64)  # [N, 8] uint8 -> [N]
    stream = tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(restart, tf.int64)
    return tf.stack([fp, tf.fill(tf.shape(fp), stream)], axis=1)


def initial_latents(x, params: MappingParams, restart=0) -> tf.Tensor:
    """z0 [N, latent_dim] drawn from the prior with per-image seeds."""
    seeds = image_seeds(x, params.seed, restart)
    shape = [params.latent_dim]

    def draw(s):
        if params.prior == "uniform":
            return tf.random.stateless_uniform(shape, s, -1.0, 1.0, alg="philox")
        return tf.random.stateless_normal(shape, s, alg="philox")

    return tf.map_fn(draw, seeds, fn_output_signature=tf.float32)


def project_to_prior(z, prior: str):
    """Keeps z inside a bounded prior's support (uniform: [-1, 1])."""
    return tf.clip_by_value(z, -1.0, 1.0) if prior == "uniform" else z


def residual_and_discrimination(generator, discriminator, x, fx, z,
                                params: MappingParams):
    """G(z), R = L_R(z) and D = L_D(z) with G and D frozen (eqs. 3 and 4).

    Returns:
      (G(z) [N, H, W, C], R [N], D [N]).
    """
    gz = generator(z, training=False)
    logits, fgz = discriminator.logits_and_features(gz, training=False)
    r = losses.residual_loss(x, gz)
    if params.discrimination_loss == "bce":
        d = losses.bce_discrimination_loss(logits)
    else:
        d = losses.feature_matching_loss(fx, fgz)
    return gz, r, d


def mapping_objective(generator, discriminator, x, fx, z,
                      params: MappingParams):
    """Per-image mapping loss L(z) (eq. 5) with G and D frozen. Returns [N]."""
    _, r, d = residual_and_discrimination(generator, discriminator, x, fx, z,
                                          params)
    return losses.weighted_score(r, d, params.lambda_weight)


def adam_update(z, grad, m, v, t, params: MappingParams):
    """One Adam step on z (Kingma & Ba 2015), elementwise, t starting at 1.

    Returns:
      (z, m, v) after the step, z projected to the prior's support.
    """
    t = tf.cast(t, z.dtype)
    m = params.beta_1 * m + (1.0 - params.beta_1) * grad
    v = params.beta_2 * v + (1.0 - params.beta_2) * tf.square(grad)
    m_hat = m / (1.0 - tf.pow(params.beta_1, t))
    v_hat = v / (1.0 - tf.pow(params.beta_2, t))
    z = z - params.lr * m_hat / (tf.sqrt(v_hat) + params.epsilon)
    return project_to_prior(z, params.prior), m, v


def select_score(score: str, residual, discrimination, combined, x_logits,
                 squared_residual=None):
    """The value `anomaly_score` holds for MappingConfig.score.

    "residual" and "feature" pick one term, "residual_sq" the squared
    residual, "d_output" is 1 - D(x) on the query, anything else ("anogan",
    "bce") the combined score.
    """
    if score == "residual":
        return residual
    if score == "residual_sq":
        return squared_residual
    if score == "feature":
        return discrimination
    if score == "d_output":
        return losses.d_output_score(x_logits)
    return combined


def final_outputs(generator, discriminator, x, fx, x_logits, z,
                  params: MappingParams) -> Dict[str, tf.Tensor]:
    """Scores and maps at z* (eq. 6) plus the mapping loss used by restarts."""
    gz, r, d = residual_and_discrimination(generator, discriminator, x, fx, z,
                                           params)
    mapping_loss = losses.weighted_score(r, d, params.lambda_weight)
    # "anogan" and "bce" (bce sets the discrimination loss) use A(x).
    a = select_score(params.score, r, d, mapping_loss, x_logits,
                     losses.squared_residual(x, gz))
    return {
        "anomaly_score": a,
        "residual_score": r,
        "discrimination_score": d,
        "residual_map": losses.residual_map(x, gz),
        "reconstruction": gz,
        "latent": z,
        "mapping_loss": mapping_loss,
    }


def keep_best(best: Optional[Dict[str, tf.Tensor]],
              out: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Per image, the restart with the lower final mapping loss.

    The one restart selection (in-process and exported): `best` and `out`
    are dicts of `final_outputs` (or `encoder_outputs`) for the same images;
    each image keeps the values of every key from the restart whose
    "mapping_loss" is lower. Ties keep `best`, the earlier restart. `best`
    None (the first restart) returns `out`.
    """
    if best is None:
        return out
    better = out["mapping_loss"] < best["mapping_loss"]
    merged = {}
    for key, value in best.items():
        mask = tf.reshape(better, [-1] + [1] * (value.shape.rank - 1))
        merged[key] = tf.where(mask, out[key], value)
    return merged


def freeze_models(generator, discriminator, params: MappingParams,
                  xla: bool):
    """BN-folded frozen views of G and D for one traced mapping function.

    Call inside the traced function, once, before any loop (see
    `models.frozen`); `xla` says whether that function is XLA-compiled.
    """
    return frozen.freeze(generator, discriminator, params.conv_impl, xla=xla,
                         compute_dtype=params.compute_dtype)


# Steps per XLA-compiled call. XLA:CPU runs convolutions inside a compiled
# while loop several times slower than the same ops outside one (measured
# 325 vs 57 ms per step at base 16, batch 64; jax-ml/jax#12868), so with XLA
# the loop itself stays in TF and each iteration calls an XLA function of a
# few unrolled steps. 5 amortises the per-call overhead (2.3 vs 5.0 ms per
# step at batch 1 against 1 step per call) with ~8 s of compile time.
XLA_CHUNK_STEPS = 5


def _adam_steps(generator, discriminator, x, fx, z, m, v, t, n: int,
                params: MappingParams):
    """`n` unrolled mapping steps from step count t (a Python loop).

    Only z is recorded on the tape: G's and D's weights are frozen constants
    here.

    Returns:
      (z, m, v, t) after the steps.
    """
    for _ in range(n):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(z)
            total = tf.reduce_sum(
                mapping_objective(generator, discriminator, x, fx, z, params))
        grad = tape.gradient(total, z)
        t = t + 1
        z, m, v = adam_update(z, grad, m, v, t, params)
    return z, m, v, t


def _xla_chunk(generator, discriminator, params: MappingParams, n: int):
    """An XLA-compiled function running `n` steps (G and D frozen inside)."""

    @tf.function(jit_compile=True)
    def chunk(x, fx, z, m, v, t):
        g, d = freeze_models(generator, discriminator, params, xla=True)
        return _adam_steps(g, d, x, fx, z, m, v, t, n, params)

    return chunk


def descend(generator, discriminator, views, x, fx, z, params: MappingParams,
            xla: bool):
    """Gamma = params.steps Adam steps on z with G and D frozen (eq. 5).

    Args:
      generator, discriminator: The Keras models; with xla, each compiled
        chunk makes its own frozen views from them.
      views: The caller's non-XLA frozen views (G, D) (`freeze_models`,
        xla=False), used for the steps when xla is False.
      x: Query images [N, H, W, C]; fx: f(x), computed once by the caller.
      z: z0 [N, latent_dim]; z and Adam's moments are the loop's state.
      xla: Run the steps as XLA-compiled chunks of `XLA_CHUNK_STEPS` inside a
        TF while loop; else the whole loop in TF.

    Returns:
      z* [N, latent_dim].
    """
    if xla:
        n_per_call = min(XLA_CHUNK_STEPS, max(params.steps, 1))
        full, rest = divmod(params.steps, n_per_call)
        phases = [(_xla_chunk(generator, discriminator, params, n_per_call),
                   full)]
        if rest:
            phases.append((_xla_chunk(generator, discriminator, params, rest),
                           1))
    else:
        g, d = views

        def one_step(x, fx, z, m, v, t):
            return _adam_steps(g, d, x, fx, z, m, v, t, 1, params)

        phases = [(one_step, params.steps)]
    z = tf.convert_to_tensor(z)
    m = v = tf.zeros_like(z)
    t = tf.constant(0, tf.int32)
    # Explicit while_loops (not autograph), so the loops stay graph loops
    # where autograph is off, e.g. in functions Keras wraps for export.
    for step_fn, n_calls in phases:
        if n_calls == 0:
            continue

        def body(c, z, m, v, t, step_fn=step_fn):
            z, m, v, t = step_fn(x, fx, z, m, v, t)
            return c + 1, z, m, v, t

        _, z, m, v, t = tf.while_loop(lambda c, *_: c < n_calls, body,
                                      (tf.constant(0), z, m, v, t))
    return tf.identity(z)


def map_latents(generator, discriminator, x, z0, params: MappingParams,
                xla: bool = False, z_variable: Optional[tf.Variable] = None):
    """The mapping of images x from z0: `descend`, then `final_outputs`.

    z and Adam's moments are loop state, so without `z_variable` no variable
    is shared between calls: concurrent calls (TF Serving requests) cannot
    interfere, and any batch size works (the exported signatures). G and D
    are the Keras models; the graph runs on their BN-folded frozen views
    (`freeze_models`).

    Args:
      xla: Compile the steps with XLA (see `descend`); call from a function
        with jit_compile=False.
      z_variable: A trainable z [N, latent_dim] (`LatentMapper.z`): it is
        assigned z* after the loop and the outputs are computed at its value.

    Returns:
      The dict of `final_outputs`.
    """
    g, d = freeze_models(generator, discriminator, params, xla=False)
    x_logits, fx = d.logits_and_features(x, training=False)
    z = descend(generator, discriminator, (g, d), x, fx, z0, params, xla)
    if z_variable is not None:
        z_variable.assign(z)
        z = z_variable.read_value()
    return final_outputs(g, d, x, fx, x_logits, z, params)


def encode(encoder, x, params: MappingParams) -> tf.Tensor:
    """z = E(x) [N, latent_dim] with E frozen, kept in the prior's support."""
    return project_to_prior(encoder(x, training=False), params.prior)


def encoder_pass(generator, discriminator, encoder, x,
                 params: MappingParams) -> Dict[str, tf.Tensor]:
    """The encoder mode end to end: z = E(x), then `encoder_outputs`."""
    x_logits, fx = discriminator.logits_and_features(x, training=False)
    z = encode(encoder, x, params)
    return encoder_outputs(generator, discriminator, x, fx, x_logits, z,
                           params)


def encoder_outputs(generator, discriminator, x, fx, x_logits, z,
                    params: MappingParams) -> Dict[str, tf.Tensor]:
    """Encoder-mode scores and maps at z = E(x); the keys of `final_outputs`.

    residual_score and discrimination_score hold the image and feature MSE,
    and `anomaly_score` (for score "anogan") their sum
    image MSE + kappa * feature MSE. score "residual"/"feature" select one
    term, "residual_sq" the squared residual and "d_output" the
    discriminator's verdict, as in the iterative mode.
    """
    gz, image_mse, feature_mse = losses.izif_losses(generator, discriminator,
                                                    x, fx, z)
    izif = losses.izif_loss(image_mse, feature_mse, params.kappa)
    a = select_score(params.score, image_mse, feature_mse, izif, x_logits,
                     losses.squared_residual(x, gz))
    return {
        "anomaly_score": a,
        "residual_score": image_mse,
        "discrimination_score": feature_mse,
        "residual_map": losses.residual_map(x, gz),
        "reconstruction": gz,
        "latent": z,
        "mapping_loss": izif,
    }
