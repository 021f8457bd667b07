"""Pickle whose bytes depend only on the values pickled: a Kedro ``PickleDataset`` backend.

Plain ``pickle`` stores a torch tensor through ``torch.save``'s legacy format, which names each
storage by its memory address (``storage._cdata``). Two runs that train bit-identical weights
therefore write different ``weights.pkl`` bytes, DVC sees a changed output, reruns every stage
downstream and the run-cache never matches. Here a plain CPU-representable tensor is pickled as
``torch.from_numpy(<its numpy array>)``: same values, same bytes. The files still load with
``pickle.load`` (``torch`` and ``numpy`` importable), so readers need not know about this module.

Use it as the catalog's ``backend: oquab_repro.lib.tensor_pickle`` of a ``pickle.PickleDataset``.
"""

from __future__ import annotations

import io
import pickle
from typing import IO, Any

import torch

# torch dtypes numpy represents exactly; others (bfloat16, quantised...) keep torch's own reduction
_NUMPY_DTYPES = {
    torch.float16, torch.float32, torch.float64, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.uint8, torch.bool, torch.complex64, torch.complex128,
}  # fmt: skip


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is torch.Tensor and not obj.requires_grad and obj.dtype in _NUMPY_DTYPES and obj.layout == torch.strided:
            return torch.from_numpy, (obj.detach().cpu().contiguous().numpy(),)
        return NotImplemented


def dump(obj: Any, file: IO[bytes], protocol: int = pickle.HIGHEST_PROTOCOL, **_: Any) -> None:
    """``pickle.dump`` with value-determined bytes for tensors (signature of the pickle module)."""
    _Pickler(file, protocol=protocol).dump(obj)


def dumps(obj: Any, protocol: int = pickle.HIGHEST_PROTOCOL) -> bytes:
    buffer = io.BytesIO()
    dump(obj, buffer, protocol)
    return buffer.getvalue()


def load(file: IO[bytes], **kwargs: Any) -> Any:
    """``pickle.load``: files written by :func:`dump` need nothing special to read."""
    return pickle.load(file, **kwargs)
