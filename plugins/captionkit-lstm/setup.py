"""Build script for the compiled LSTM loops; metadata lives in pyproject.toml.

The extension uses typed memoryviews, scipy's BLAS (``scipy.linalg.cython_blas``) until captionkit's kernels are
bound at import, and one C header of its own (_gates.h); not numpy's C API.
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension("captionkit_lstm._loops", ["captionkit_lstm/_loops.pyx"], depends=["captionkit_lstm/_gates.h"],
              extra_compile_args=["-O3"])
]

setup(ext_modules=cythonize(extensions, language_level=3))
