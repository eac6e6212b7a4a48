"""GAN training: losses, the GAN keras.Model, callbacks and the run loop;
f-AnoGAN encoder training."""

from anogan_tf.training import losses
from anogan_tf.training.callbacks import TrainingDivergedError
from anogan_tf.training.encoder import EncoderTrainer, train_encoder
from anogan_tf.training.gan import GAN, sample_prior
from anogan_tf.training.run import TrainResult, train_gan

__all__ = ["losses", "GAN", "sample_prior", "TrainResult", "train_gan",
           "TrainingDivergedError", "EncoderTrainer", "train_encoder"]
