"""Packaging for megatron-redi. CPU installs never pull GPU-only packages (see PLATFORM notes in README)."""

from setuptools import find_packages, setup

setup(
    name="megatron-redi",
    version="0.1.0",
    description="Reinforcement Distillation (REDI) post-training on Megatron-Core",
    python_requires=">=3.11",
    packages=find_packages(include=["megatron_redi", "megatron_redi.*"]),
    package_data={"megatron_redi": ["assets/*/*", "evaluation/benchmarks/*"]},
    include_package_data=True,
    py_modules=["pretrain_redi"],
    install_requires=[
        "torch>=2.11",
        "megatron-core==0.16.1",
        "psutil",
        "transformers>=4.51",
        "datasets>=3.0",
        "math-verify>=0.7",
        "sentencepiece",
        "safetensors",
        "tqdm",
        "tensorboard",
        "matplotlib",
        "numpy",
        "pyarrow",
    ],
    extras_require={
        # GPU-only: never installed on CPU machines (TE metapackage breaks `import megatron.core`,
        # vLLM pins a CUDA torch). NVIDIA apex is not on PyPI; build it from source on GPU hosts.
        # liger-kernel: Triton kernels (CUDA only) for --liger-kernels and the benchmark's paper baseline
        "gpu": ["transformer-engine[pytorch]>=2.4", "vllm>=0.8", "liger-kernel==0.8.5"],
        "dev": ["pytest", "pytest-xdist", "ruff", "trl==1.16.0", "dashscope==2.0.2"],
    },
)
