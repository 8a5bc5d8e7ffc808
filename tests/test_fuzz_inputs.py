"""Fuzz the loader: mutated safetensors headers (bytes and JSON structure), shard indexes and
configs. initcheck must either check the input or raise InputError (exit 2) with a one-line
message naming a file: no other exception, no hang.

Runs in-process against ``initcheck.api.run`` for speed, with a fixed seed and a bounded number
of examples (``INITCHECK_FUZZ_EXAMPLES`` scales it; ``INITCHECK_FUZZ_RANDOM=1`` draws new ones).
"""

import itertools
import json
import os
import signal
import struct
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_process
from initcheck.api import run
from initcheck.config import Settings
from initcheck.errors import InputError

N = int(os.environ.get("INITCHECK_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=N, deadline=5000, database=None, derandomize=not os.environ.get("INITCHECK_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
HANG_SECONDS = 20  # one example on a tiny file takes ~50 ms; this only catches real hangs

DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2"]
SIZES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
CONFIG = {"model_type": "bert", "hidden_size": 4, "initializer_range": 0.02, "vocab_size": 8}

json_leaf = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12)
json_any = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                        max_leaves=12)
names = st.sampled_from(["w", "b", "bert.pooler.dense.weight", "", "../x", "a\x00b", "\u00e9", "\ud800", "x" * 2000]) | st.text(max_size=20)
ints = st.integers(0, 64) | st.integers(-2**64, 2**65) | st.sampled_from([2**20, 2**31, 2**40, 2**63, 2**64 - 1])


def _valid_header(tensors):
    """A consistent header plus its data bytes for ``[(name, dtype, shape)]``."""
    header, off = {}, 0
    for name, dtype, shape in tensors:
        n = SIZES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    return header, bytes(range(256)) * (off // 256) + bytes(off % 256)


BASE_HEADER, BASE_DATA = _valid_header([("w", "F32", (4, 4)), ("b", "F16", (4,)), ("z", "BF16", (0, 4))])


def _file(header: dict, data: bytes, meta=None) -> bytes:
    h = dict(header)
    if meta is not None:
        h["__metadata__"] = meta
    raw = json.dumps(h).encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(raw)) + raw + data


@st.composite
def mutated_headers(draw):
    """The JSON structure of a header, each field replaced, dropped or made extreme."""
    header = json.loads(json.dumps(BASE_HEADER))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(sorted(header) or ["w"]))
        entry = header.get(name)
        if not isinstance(entry, dict):
            entry = header[name] = {}
        kind = draw(st.sampled_from(["dtype", "shape", "offsets", "drop", "any", "rename", "add", "zero", "swap"]))
        if kind == "dtype":
            entry["dtype"] = draw(st.sampled_from(DTYPES) | st.text(max_size=6) | json_leaf)
        elif kind == "shape":
            entry["shape"] = draw(st.lists(ints, max_size=4) | json_any)
        elif kind == "offsets":
            entry["data_offsets"] = draw(st.lists(ints, min_size=0, max_size=3) | json_any)
        elif kind == "drop" and isinstance(entry, dict) and entry:
            entry.pop(draw(st.sampled_from(sorted(entry))))
        elif kind == "any":
            header[name] = draw(json_any)
        elif kind == "rename":
            header[draw(names)] = header.pop(name)
        elif kind == "zero":  # a harmless look-alike: an extra zero-size tensor
            header[draw(names)] = {"dtype": draw(st.sampled_from(DTYPES)), "shape": [0, draw(st.integers(0, 9))],
                                   "data_offsets": [0, 0]}
        elif kind == "swap":  # same bytes, other dtype of the same width
            width = {SIZES[t] for t in DTYPES if t == entry.get("dtype")}
            entry["dtype"] = draw(st.sampled_from([t for t in DTYPES if SIZES[t] in width] or DTYPES))
        else:
            header[draw(names)] = {"dtype": draw(st.sampled_from(DTYPES)), "shape": draw(st.lists(ints, max_size=3)),
                                   "data_offsets": draw(st.lists(ints, min_size=2, max_size=2))}
    meta = draw(st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=9), max_size=3)
                | st.dictionaries(st.text(max_size=5), json_leaf, max_size=3))
    cut = draw(st.just(len(BASE_DATA)) | st.integers(0, len(BASE_DATA) + 8))
    return _file(header, BASE_DATA[:cut], meta)


@st.composite
def mutated_bytes(draw):
    """Byte-level damage to a valid file: flips, inserts, deletes, truncation, a lying length."""
    b = bytearray(_file(BASE_HEADER, BASE_DATA))
    hlen = struct.unpack("<Q", b[:8])[0] + 8
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "length"]))
        pos = draw(st.integers(0, max(hlen, 1) - 1)) if b else 0
        if op == "flip" and pos < len(b):
            b[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and pos < len(b):
            b[pos] = draw(st.sampled_from(b'{}[]",:0123456789-e.\\\x00\xff'))
        elif op == "insert":
            b[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del b[pos:pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del b[draw(st.integers(0, len(b))):]
        else:
            b[:8] = struct.pack("<Q", draw(ints.filter(lambda x: 0 <= x < 2**64)))
    return bytes(b)


_counter = itertools.count()


@contextmanager
def _no_hang(seconds=HANG_SECONDS):
    def boom(*_):
        raise TimeoutError(f"initcheck ran over {seconds} s on one fuzz input")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def check_or_input_error(folder, target=None):
    """The fuzz oracle: a Report, or an InputError with one line naming a file; nothing else."""
    with _no_hang():
        try:
            report = run(str(target or folder), Settings(probe=False))
        except InputError as e:
            msg = str(e)
            assert "\n" not in msg and msg.strip(), repr(msg)
            assert e.path, f"message names no file: {msg!r}"
            return None
    assert report.exit_code in (0, 1)
    return report


def _fresh(tmp_path):
    d = tmp_path / f"case{next(_counter)}"
    d.mkdir()
    return d


@FUZZ
@given(data=mutated_headers())
def test_fuzz_safetensors_header_structure(tmp_path, data):
    d = _fresh(tmp_path)
    (d / "model.safetensors").write_bytes(data)
    (d / "config.json").write_text(json.dumps(CONFIG))
    check_or_input_error(d)


@FUZZ
@given(data=mutated_bytes())
def test_fuzz_safetensors_bytes(tmp_path, data):
    d = _fresh(tmp_path)
    (d / "model.safetensors").write_bytes(data)
    check_or_input_error(d, d / "model.safetensors")


@FUZZ
@given(weight_map=st.dictionaries(names, names | st.sampled_from(["model-00001-of-00002.safetensors",
                                                                   "model-00002-of-00002.safetensors"]) | json_leaf, max_size=5)
       | json_any,
       top=st.none() | st.dictionaries(st.text(max_size=8), json_any, max_size=3))
def test_fuzz_shard_index(tmp_path, weight_map, top):
    d = _fresh(tmp_path)
    (d / "model-00001-of-00002.safetensors").write_bytes(_file({"w": BASE_HEADER["w"]}, BASE_DATA[:64]))
    (d / "model-00002-of-00002.safetensors").write_bytes(_file({"b": {**BASE_HEADER["b"], "data_offsets": [0, 8]}}, BASE_DATA[:8]))
    index = dict(top or {})
    index["weight_map"] = weight_map
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    check_or_input_error(d)


@FUZZ
@given(config=st.dictionaries(st.sampled_from(sorted(CONFIG) + ["architectures", "tie_word_embeddings", "pad_token_id",
                                                                  "hidden_act", "auto_map", "num_labels", "torch_dtype"]),
                              json_any, max_size=6) | json_any,
       raw=st.none() | st.binary(max_size=64))
def test_fuzz_config_json(tmp_path, config, raw):
    d = _fresh(tmp_path)
    (d / "model.safetensors").write_bytes(_file(BASE_HEADER, BASE_DATA))
    text = raw if raw is not None else json.dumps(config).encode("utf-8", "surrogatepass")
    (d / "config.json").write_bytes(text)
    check_or_input_error(d)


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzzed_files_in_a_real_process_print_no_traceback(tmp_path, seed):
    import random

    rnd = random.Random(seed)
    b = bytearray(_file(BASE_HEADER, BASE_DATA))
    for _ in range(8):
        b[rnd.randrange(8, 120)] = rnd.randrange(256)
    (tmp_path / "model.safetensors").write_bytes(bytes(b))
    (tmp_path / "config.json").write_bytes(b'{"vocab_size": "' + bytes([rnd.randrange(128, 256)]) + b'"}')
    r = run_process(tmp_path, "--no-probe")
    assert r.returncode in (0, 1, 2) and "Traceback" not in r.stderr
    if r.returncode == 2:
        assert len(r.stderr.strip().splitlines()) == 1 and "--debug" not in r.stderr, r.stderr


# --- DCP checkpoints: the .metadata pickle and the .distcp records --------------------------------------------

@pytest.fixture(scope="module")
def dcp_files(tmp_path_factory):
    """A real DCP checkpoint's files (``dcp.save`` in one process): a matrix, a bf16 vector at an odd byte, a 0-d
    tensor (BatchNorm's num_batches_tracked) and an empty one, under the ``model`` key accelerate uses."""
    import warnings

    import torch
    import torch.distributed.checkpoint as dcp

    folder = tmp_path_factory.mktemp("dcp")
    torch.manual_seed(0)
    state = {"model": {"w": torch.randn(4, 6), "b": torch.randn(5).to(torch.bfloat16), "n": torch.tensor(3),
                       "e": torch.zeros(0, 4), "v": torch.randn(6)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=str(folder), no_dist=True)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@st.composite
def damaged(draw, size: int):
    """Byte-level damage anywhere in a file of ``size`` bytes: ``[(op, position, argument)]``."""
    ops = []
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        ops.append((op, draw(st.integers(0, max(size - 1, 0))), draw(st.integers(0, 255))))
    return ops


def _apply(blob: bytes, ops) -> bytes:
    b = bytearray(blob)
    for op, pos, arg in ops:
        pos = min(pos, len(b))
        if op == "flip" and pos < len(b):
            b[pos] ^= 1 << (arg % 8)
        elif op == "set" and pos < len(b):
            b[pos] = arg
        elif op == "insert":
            b[pos:pos] = bytes([arg])
        elif op == "delete":
            del b[pos:pos + 1 + arg % 8]
        elif op == "truncate":
            del b[pos:]
    return bytes(b)


@FUZZ
@given(data=st.data())
def test_fuzz_dcp_metadata_and_records(tmp_path, dcp_files, data):
    """Damage to ``.metadata`` (read by the restricted pickle reader) or to a record of ``__0_0.distcp`` (each a
    torch.save zip parsed by the strict reader): a report, or one line naming the file."""
    name = data.draw(st.sampled_from([".metadata", "__0_0.distcp"]))
    d = _fresh(tmp_path)
    for n, blob in dcp_files.items():
        (d / n).write_bytes(_apply(blob, data.draw(damaged(len(blob)))) if n == name else blob)
    check_or_input_error(d)
