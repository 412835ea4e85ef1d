"""ctypes access to the ggml libraries that llama-cpp-python installs (devices and the RPC backend)."""
from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

from ..errors import EdgeError, require


@lru_cache(maxsize=1)
def ggml_libs():
    """libggml (devices) and libggml-rpc from llama-cpp-python's install, with the signatures edge uses."""
    llama_cpp = require("llama_cpp", "base", "splitting a model across devices")
    folder = Path(llama_cpp.__file__).parent / "lib"
    ggml = ctypes.CDLL(str(folder / "libggml.so"), mode=ctypes.RTLD_GLOBAL)
    rpc_path = folder / "libggml-rpc.so"
    if not rpc_path.is_file():
        raise EdgeError("This llama-cpp-python was built without the RPC backend.",
                        "Reinstall it with CMAKE_ARGS=-DGGML_RPC=ON (make install does).")
    rpc = ctypes.CDLL(str(rpc_path), mode=ctypes.RTLD_GLOBAL)
    ggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    ggml.ggml_backend_reg_dev_count.restype = ctypes.c_size_t
    ggml.ggml_backend_reg_dev_count.argtypes = [ctypes.c_void_p]
    ggml.ggml_backend_reg_dev_get.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_dev_get.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    ggml.ggml_backend_dev_name.restype = ctypes.c_char_p
    ggml.ggml_backend_dev_name.argtypes = [ctypes.c_void_p]
    rpc.ggml_backend_rpc_add_server.restype = ctypes.c_void_p
    rpc.ggml_backend_rpc_add_server.argtypes = [ctypes.c_char_p]
    rpc.ggml_backend_rpc_start_server.restype = None
    rpc.ggml_backend_rpc_start_server.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                                                  ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)]
    return ggml, rpc
