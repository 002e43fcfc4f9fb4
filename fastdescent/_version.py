"""The version of fastdescent: the one place it is written (pyproject.toml reads it, and the C
library's fd_version() is built from it by csrc/Makefile and csrc/cffi_build.py)."""

__version__ = "0.1.0"
