"""kseg: transformer semantic segmentation in TensorFlow / Keras 3."""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def requirements():
    with open(os.path.join(HERE, "requirements.txt")) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


setup(
    name="kseg",
    version="0.1.0",
    description="Transformer semantic segmentation (SegFormer, Segmenter, SETR, SegViT, MaskFormer) "
    "in TensorFlow / Keras 3",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["kseg", "kseg.*"]),
    python_requires=">=3.10",
    install_requires=requirements(),
    extras_require={
        # Tests, and keras-hub as the peer of tools/benchmark.py.
        "dev": ["pytest==9.0.3", "keras-hub==0.32.0", "ruff==0.17.6"],
        # Reference models for the weight-conversion parity tests (CPU torch).
        "parity": ["torch==2.13.0", "transformers==5.23.0"],
    },
    entry_points={
        "console_scripts": [
            "kseg-train=kseg.train:main",
            "kseg-evaluate=kseg.evaluate:main",
            "kseg-predict=kseg.predict:main",
            "kseg-export=kseg.export.__main__:main",
        ]
    },
)
