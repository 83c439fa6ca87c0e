"""Packaging glue pyproject.toml cannot say: the top-level ``kernels/`` folder (GPU kernels, shared
by the GPU backend and TensorRT plugins) is installed as the subpackage ``trtdsl.kernels``."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["trtdsl", "trtdsl.*"]) + ["trtdsl.kernels"],
    package_dir={"trtdsl.kernels": "kernels"},
)
