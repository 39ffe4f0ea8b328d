"""Which operations would make the host wait for an accelerator: a CPU-side stand-in for
``torch.cuda.set_sync_debug_mode("error")`` (the tests run without a GPU).

``SyncSpy`` is a dispatch mode that records every aten op whose result size or value the host
must read back from the device: ``.item()`` / ``int()`` / ``bool()`` (``_local_scalar_dense``),
``nonzero``, ``masked_select``, boolean-mask indexing, ``unique`` and ``repeat_interleave``
without ``output_size``. On the CPU these are cheap; on a GPU each is a synchronisation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNCING = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::is_nonzero",
           "aten::equal", "aten::_unique2", "aten::unique_consecutive", "aten::unique_dim"}


class SyncSpy(TorchDispatchMode):
    """Record the host-synchronising ops run inside ``with SyncSpy() as spy:`` in ``spy.ops``."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = func._schema.name
        bool_index = name == "aten::index" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or []))
        unsized = name == "aten::repeat_interleave" and kwargs.get("output_size") is None
        if name in SYNCING or bool_index or unsized:
            self.ops.append(name)
        return func(*args, **kwargs)
