# media._fanout is built by cffi from media/fanout.c (media/fanout_build.py); its objects are
# cffi's, typed by the C declarations there, not by Python annotations.
from typing import Any

ffi: Any
lib: Any
