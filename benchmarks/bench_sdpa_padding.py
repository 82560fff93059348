"""Does scaled-dot-product attention give NaN for fully masked query rows on this GPU? (needs CUDA)

    python benchmarks/bench_sdpa_padding.py

RL batches are left-padded: a padding position attends to nothing, so its attention row is fully masked. The
loss never reads those rows, but their gradients flow into the weights all the same. For each SDPA kernel (math,
memory-efficient, cuDNN) and dtype, and for PyTorch's own choice under bf16 autocast, this runs one forward and
backward with such rows and records whether the padded rows' outputs are zero and the gradients finite. Writes
``results/sdpa_padding.json``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from common import write_result
from torch.nn.attention import SDPBackend, sdpa_kernel

BATCH, HEADS, LENGTH, HEAD_DIM, PADDING = 2, 9, 64, 64, 10  # SmolLM2-135M's heads and head size


def attend(backend: SDPBackend | None, dtype: torch.dtype) -> dict:
    mask = torch.ones(BATCH, 1, LENGTH, LENGTH, dtype=torch.bool, device="cuda").tril()
    mask[0, :, :, :PADDING] = False  # sequence 0 is left-padded: its first PADDING query rows see no key
    q, k, v = (torch.randn(BATCH, HEADS, LENGTH, HEAD_DIM, device="cuda", requires_grad=True) for _ in range(3))
    try:
        if backend is None:  # PyTorch's choice, as transformers gets it under autocast
            with torch.autocast("cuda", dtype=dtype):
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            with sdpa_kernel(backend):
                out = F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), attn_mask=mask)
    except RuntimeError as error:
        return {"available": False, "error": str(error).splitlines()[0][:200]}
    out[0, :, PADDING:].float().sum().add(out[1].float().sum()).backward()  # the loss ignores the padded rows
    return {
        "available": True,
        "padded_rows_max_abs": out[0, :, :PADDING].abs().max().item(),
        "gradients_finite": all(bool(t.grad.isfinite().all()) for t in (q, k, v)),
    }


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("This check needs a CUDA GPU.")
    torch.manual_seed(0)
    results = {}
    for backend in (SDPBackend.MATH, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION):
        for dtype in (torch.bfloat16, torch.float32):
            results[f"{backend.name.lower()}_{str(dtype).removeprefix('torch.')}"] = attend(backend, dtype)
    results["default_autocast_bfloat16"] = attend(None, torch.bfloat16)
    write_result("sdpa_padding", {"shape": [BATCH, HEADS, LENGTH, HEAD_DIM], "padding": PADDING, "kernels": results})


if __name__ == "__main__":
    main()
