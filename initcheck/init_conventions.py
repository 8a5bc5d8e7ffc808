"""The init a fresh layer is expected to have, from the model's own conventions.

- transformers models: normal(0, initializer_range) for Linear and Embedding weights.
- otherwise, the band spanned by the common fan-based inits:
  PyTorch's default Linear init U(±1/sqrt(fan_in)) has std 1/sqrt(3·fan_in);
  Xavier/Glorot (tanh, sigmoid) has var 2/(fan_in+fan_out);
  He/Kaiming (ReLU) has std sqrt(2/fan_in).
  A custom head may use any of them, so only a std outside the whole band is suspicious.
"""

import math

from . import tensors as T


def expected_std(rec, config: dict | None, strict: bool):
    """Return ``(low, high, label)``: the std band a freshly initialised ``rec`` should sit in.

    Args:
        rec: the tensor.
        config: config.json, when the model has one.
        strict: True when the layer was initialised by the model's own ``_init_weights``
            (a transformers task head), so initializer_range alone is expected.
    """
    ir = (config or {}).get("initializer_range")
    if isinstance(ir, (int, float)) and not isinstance(ir, bool) and ir > 0 and strict:
        return ir, ir, f"normal(0, initializer_range={ir:g})"
    if rec.role == T.EMBEDDING and not (isinstance(ir, (int, float)) and ir > 0):
        return 1.0, 1.0, "nn.Embedding default normal(0, 1)"
    fi, fo = max(rec.fan_in, 1), max(rec.fan_out, 1)
    conventions = {
        "PyTorch default U(±1/sqrt(fan_in))": 1 / math.sqrt(3 * fi),
        "Xavier": math.sqrt(2 / (fi + fo)),
        "Kaiming": math.sqrt(2 / fi),
    }
    if isinstance(ir, (int, float)) and not isinstance(ir, bool) and ir > 0:
        conventions[f"initializer_range={ir:g}"] = float(ir)
    lo, hi = min(conventions.values()), max(conventions.values())
    return lo, hi, f"{lo:.3g}..{hi:.3g} (" + ", ".join(conventions) + f"; fan_in={fi}, fan_out={fo})"
