"""Only what pyproject.toml cannot say: the C part of the forwarding path, built by cffi."""

from setuptools import setup

setup(cffi_modules=["media/fanout_build.py:ffibuilder"])
