"""The C extension of posesuite; the package's metadata is in pyproject.toml.

``posesuite.data._jpeg_region`` decodes the part of a JPEG a crop needs, against the system's
libjpeg-turbo (headers and ``libjpeg.so``). It is optional: where it cannot be built (no
compiler, no libjpeg headers) the package installs without it and frames are decoded in full.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "posesuite.data._jpeg_region",
            sources=["src/posesuite/data/_jpeg_region.c"],
            libraries=["jpeg"],
            optional=True,
        )
    ]
)
