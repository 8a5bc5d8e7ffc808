"""Dtype names and decoding of raw tensor bytes into float32 numpy arrays.

The static scan works on numpy views of mmap'd files so that it never imports torch
(importing torch alone costs more than scanning a 100 MB checkpoint).
"""

import numpy as np

# safetensors dtype code -> (our dtype name, numpy storage dtype)
SAFETENSORS = {
    "F64": ("float64", np.float64),
    "F32": ("float32", np.float32),
    "F16": ("float16", np.float16),
    "BF16": ("bfloat16", np.uint16),
    "F8_E4M3": ("float8_e4m3fn", np.uint8),
    "F8_E5M2": ("float8_e5m2", np.uint8),
    "I64": ("int64", np.int64),
    "I32": ("int32", np.int32),
    "I16": ("int16", np.int16),
    "I8": ("int8", np.int8),
    "U64": ("uint64", np.uint64),
    "U32": ("uint32", np.uint32),
    "U16": ("uint16", np.uint16),
    "U8": ("uint8", np.uint8),
    "BOOL": ("bool", np.bool_),
}

FLOAT_DTYPES = {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"}


def is_float(dtype: str) -> bool:
    return dtype in FLOAT_DTYPES


def _fp8_table(exp_bits: int, man_bits: int, bias: int, ieee: bool) -> np.ndarray:
    """float32 value of each of the 256 fp8 bit patterns."""
    codes = np.arange(256, dtype=np.int64)
    sign = np.where(codes >> 7, -1.0, 1.0)
    exp = (codes >> man_bits) & ((1 << exp_bits) - 1)
    man = codes & ((1 << man_bits) - 1)
    normal = (1 + man / (1 << man_bits)) * np.exp2(exp.astype(np.float64) - bias)
    subnormal = (man / (1 << man_bits)) * np.exp2(1.0 - bias)
    vals = sign * np.where(exp == 0, subnormal, normal)
    top = (1 << exp_bits) - 1
    if ieee:  # e5m2: all-ones exponent is inf / nan
        vals = np.where((exp == top) & (man == 0), sign * np.inf, vals)
        vals = np.where((exp == top) & (man != 0), np.nan, vals)
    else:  # e4m3fn: no infinities, only S.1111.111 is nan
        vals = np.where((exp == top) & (man == (1 << man_bits) - 1), np.nan, vals)
    return vals.astype(np.float32)


_FP8 = {
    "float8_e4m3fn": _fp8_table(4, 3, 7, ieee=False),
    "float8_e5m2": _fp8_table(5, 2, 15, ieee=True),
}


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Decode a chunk of raw storage (as held in the file) into float32 values."""
    if dtype == "bfloat16":
        # bf16 is the top half of a float32: shift the bits into place
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if dtype in _FP8:
        return _FP8[dtype][raw]
    if dtype == "float32":
        return raw
    return raw.astype(np.float32)


def itemsize(dtype: str) -> int:
    return {"float64": 8, "int64": 8, "uint64": 8, "float32": 4, "int32": 4, "uint32": 4,
            "float16": 2, "bfloat16": 2, "int16": 2, "uint16": 2}.get(dtype, 1)


# torch dtype name -> our name (torch.float8_e4m3fn prints as "torch.float8_e4m3fn")
def from_torch(torch_dtype) -> str:
    return str(torch_dtype).replace("torch.", "")


def torch_to_numpy(t):
    """A numpy view (or copy, for bf16/fp8 bit patterns) of a CPU torch tensor, plus our dtype name."""
    import torch

    name = from_torch(t.dtype)
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    if name == "bfloat16":
        return t.view(torch.int16).numpy().view(np.uint16), name
    if name in _FP8:
        return t.view(torch.uint8).numpy(), name
    if name.startswith("float8") or name.startswith("complex"):
        # fp8 variants numpy can't hold: decode through torch
        return t.to(torch.float32).numpy(), "float32"
    return t.numpy(), name


def numpy_to_torch(raw: np.ndarray, dtype: str):
    """A torch tensor (a copy: mmap'd views are read-only) of stored values, the inverse of ``torch_to_numpy``."""
    import torch

    arr = np.array(raw)  # copy
    if dtype == "bfloat16":
        return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    if dtype in _FP8:
        return torch.from_numpy(arr.view(np.uint8)).view(getattr(torch, dtype))
    return torch.from_numpy(arr)
