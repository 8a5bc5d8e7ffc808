"""Everything that describes one tensor: what it is, where it came from, what it measures.

- ``record``: ``TensorRecord`` (name, shape, role, block, origin) and roles from names and structure;
- ``heads``, ``topology``: task heads found by structure, and which head layer feeds which;
- ``backbone``: the transformers model inside a wrapper's keys (``vlm.``), matched against meta-device skeletons;
- ``addedrows``, ``basediff``: vocabulary rows added without ``--base``; the diff against ``--base``;
- ``init_conventions``: the init std each tensor's own sub-model declares;
- ``stats``, ``rowdups``, ``native``: one pass per tensor for every statistic the rules read
  (duplicate rows; the compiled kernel when the install built it).

``from initcheck import tensors as T`` gives the record's names (``T.LINEAR``, ``T.make_record``).
"""

from .record import (  # noqa: F401 - the package's public names
    LINEAR,
    CONV,
    EMBEDDING,
    BIAS,
    NORM_GAIN,
    NORM_BIAS,
    SCALAR,
    LORA_A,
    LORA_B,
    RNN,
    QUANTIZED,
    BUFFER,
    OTHER,
    WEIGHT_ROLES,
    PRETRAINED,
    NEW,
    HEAD,
    RESIZED,
    ADAPTER,
    ORIGINS,
    TensorRecord,
    make_record,
    classify,
    structural_roles,
    locate,
    sibling_groups,
    sub_config,
    sub_model_type,
    mark_offset_norms,
    ModuleFacts,
    module_facts,
)
