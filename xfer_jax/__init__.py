"""xfer_jax: move an English-centric LLaMA into new languages, from one CPU to a TPU pod."""

__version__ = "0.1.0"
