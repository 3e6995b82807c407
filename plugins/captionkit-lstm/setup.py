"""Build script for the compiled LSTM loops; metadata lives in pyproject.toml.

The extension uses typed memoryviews and scipy's BLAS (``scipy.linalg.cython_blas``), not numpy's C API.
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [Extension("captionkit_lstm._loops", ["captionkit_lstm/_loops.pyx"], extra_compile_args=["-O3"])]

setup(ext_modules=cythonize(extensions, language_level=3))
