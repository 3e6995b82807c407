"""Build script for the LSTM's compiled pointwise part; metadata lives in pyproject.toml.

The extension cimports captionkit's captionkit/_ext/pointwise.pxd, so it is built against the installed captionkit:
``pip install --no-build-isolation plugins/captionkit-lstm`` (an isolated build environment has no captionkit).
"""
from setuptools import setup

try:
    from captionkit.pointwise import extension
except ImportError as exc:
    raise SystemExit("captionkit-lstm builds against captionkit: install captionkit first, then this plugin with "
                     "`pip install --no-build-isolation plugins/captionkit-lstm`") from exc

setup(ext_modules=extension("captionkit_lstm._pointwise", "captionkit_lstm/_pointwise.pyx"))
