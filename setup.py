"""Build script: declares the compiled extension modules in captionkit/_ext.

Metadata lives in pyproject.toml; this file exists only because extension modules need code to describe them.
"""
from pathlib import Path

from setuptools import setup

EXT_DIR = Path("captionkit") / "_ext"


def extension_modules():
    """Cythonize every .pyx in captionkit/_ext (none yet is fine: the numpy reference still works)."""
    sources = sorted(EXT_DIR.glob("*.pyx"))
    if not sources:
        return []
    import numpy
    from Cython.Build import cythonize
    from setuptools import Extension

    extensions = [
        Extension(
            f"captionkit._ext.{src.stem}",
            [str(src)],
            include_dirs=[numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=["-O3", "-fopenmp-simd", "-fno-trapping-math", "-fno-math-errno"],
        )
        for src in sources
    ]
    return cythonize(extensions, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False})


setup(ext_modules=extension_modules())
