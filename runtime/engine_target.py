"""This machine's TensorRT version and GPU, without torch and without CUDA Python bindings.

- TensorRT: the ``tensorrt`` Python module's version when it imports (JetPack's python3-libnvinfer in a
  ``--system-site-packages`` venv, or NVIDIA's wheels on a desktop; importing it also loads its
  libnvinfer, the one ONNX Runtime's TensorRT provider then binds to), else ``getInferLibVersion()``
  from ``libnvinfer.so.10`` through ctypes: the library the dynamic loader gives ONNX Runtime.
- GPU: the CUDA driver API through ctypes (``libcuda.so.1``, installed with the driver on desktops
  and with L4T on Jetsons): ``cuInit``, ``cuDeviceGet``, ``cuDeviceGetAttribute`` (compute capability
  major = attribute 75, minor = 76) and ``cuDeviceGetName``.

Called only when TensorRT is asked for (runtime) or engines are built.
"""
from __future__ import annotations

import ctypes

from .engine_layout import EngineTarget

_CC_MAJOR, _CC_MINOR = 75, 76        # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR


class TargetUnavailable(RuntimeError):
    """No TensorRT library or no CUDA GPU could be found; the message says which."""


def local_target(device: int = 0) -> EngineTarget:
    version = tensorrt_version()
    major, minor, name = cuda_device(device)
    return EngineTarget(version, f"{major}.{minor}", name)


def tensorrt_version() -> str:
    """"10.3.0": the TensorRT this process uses (major.minor.patch)."""
    try:
        import tensorrt
        return ".".join(str(tensorrt.__version__).split(".")[:3])
    except ImportError:
        pass
    for soname in ("libnvinfer.so.10", "libnvinfer.so"):
        try:
            lib = ctypes.CDLL(soname)
        except OSError:
            continue
        lib.getInferLibVersion.restype = ctypes.c_int32
        return _decode_trt_version(int(lib.getInferLibVersion()))
    raise TargetUnavailable("no TensorRT found: neither the `tensorrt` Python module nor libnvinfer.so.10 "
                            "(on a Jetson: the system TensorRT of JetPack in a --system-site-packages venv; "
                            "see the README, 'Install on a Jetson / desktop GPU')")


def _decode_trt_version(v: int) -> str:
    # NV_TENSORRT_VERSION: major*10000 + minor*100 + patch from TensorRT 10 on, major*1000 + minor*100 + patch before
    if v >= 100000:
        return f"{v // 10000}.{v // 100 % 100}.{v % 100}"
    return f"{v // 1000}.{v // 100 % 10}.{v % 100}"


def cuda_device(device: int = 0) -> tuple[int, int, str]:
    """(compute capability major, minor, name) of CUDA device ``device``."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        raise TargetUnavailable("no CUDA driver (libcuda.so.1) on this machine: TensorRT engines need an NVIDIA GPU") from None

    def check(status: int, what: str) -> None:
        if status != 0:
            raise TargetUnavailable(f"the CUDA driver failed in {what} (CUresult {status}): no usable GPU {device}")

    check(cuda.cuInit(0), "cuInit")
    handle = ctypes.c_int()
    check(cuda.cuDeviceGet(ctypes.byref(handle), device), "cuDeviceGet")
    major, minor = ctypes.c_int(), ctypes.c_int()
    check(cuda.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, handle), "cuDeviceGetAttribute")
    check(cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, handle), "cuDeviceGetAttribute")
    name = ctypes.create_string_buffer(256)
    check(cuda.cuDeviceGetName(name, 256, handle), "cuDeviceGetName")
    return major.value, minor.value, name.value.decode(errors="replace")
