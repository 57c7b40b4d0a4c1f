"""The fast 8-bit CPU backend: frozen linears in int8 run by torch's int8 matmul, peft-wrappable.

torch's `quantize_dynamic` is ~1.7x fp32 on CPU where bitsandbytes int8 is ~0.7x, but its modules are
not `nn.Linear`, have no backward, so cannot carry peft LoRA layers, and quantize activations with
one scale per tensor: one outlier token (SmolLM2 has them) wrecks every row of the batch and makes
a prompt's score depend on its batch-mates. `Int8Linear` is an `nn.Linear` whose frozen weight is
int8 with per-output-channel scales (as bitsandbytes stores it) and whose activations are quantized
per row (per token), then multiplied by `torch._int_mm` (int8 x int8 -> int32). Rows never affect
each other, the forward is differentiable with respect to its input (backward multiplies by the
dequantized weight), so peft wraps it like any linear and LoRA trains and serves on top.
CPU only: on CUDA bitsandbytes is the backend. Measured in bench/quant_backends.py.
"""

from __future__ import annotations

import torch
from torch import nn

KERNEL_VERSION = 1  # bump when a change here changes the numbers the kernel computes (score-cache keys hold it)

# The output embedding stays fp32 (as bitsandbytes leaves it): it runs on one position per prompt.
SKIP_MODULES: tuple[str, ...] = ("lm_head",)
MAX_FP32_SHARE = 0.1  # of the weight matrices: left outside linear layers, a model is refused as not 8-bit


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row (per token) of a 2-D fp32 tensor, and the (rows, 1) scales."""
    high, low = x.amax(dim=1, keepdim=True), x.amin(dim=1, keepdim=True)  # faster than abs() or aminmax on CPU
    scale = torch.maximum(high, low.neg_()).div_(127.0).clamp_(min=1e-12)
    return torch.div(x, scale).round_().to(torch.int8), scale


class _Int8Linear(torch.autograd.Function):
    """y = x W^T + b with W int8; dL/dx = dL/dy W (dequantized); W and b are frozen."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: "Int8Linear") -> torch.Tensor:
        ctx.layer = layer
        xq, scale = quantize_rows(x.float())
        y = torch._int_mm(xq, layer.weight.t()).float().mul_(scale).mul_(layer.weight_scale)
        if layer.bias is not None:
            y.add_(layer.bias)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad @ ctx.layer.dequantized_weight().to(grad.dtype), None


class Int8Linear(nn.Linear):
    """A frozen linear layer in int8 (per-output-channel symmetric scales); see the module docstring."""

    def __init__(self, linear: nn.Linear) -> None:
        nn.Module.__init__(self)  # no fp32 weight parameter: the int8 buffers below replace it
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        self.register_buffer("weight", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight.float() * self.weight_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise RuntimeError("Int8Linear runs on CPU only; load the backbone with the bitsandbytes backend on CUDA")
        rows = _Int8Linear.apply(x.reshape(-1, self.in_features), self)  # 2-D in and out: no views made inside
        return rows.reshape(*x.shape[:-1], self.out_features)


def quantize_linears(model: nn.Module, skip: tuple[str, ...] = SKIP_MODULES) -> int:
    """Replace every `nn.Linear` of `model` (except names ending in `skip`) by an `Int8Linear`; returns the count.

    ValueError, before any change, for a model with weight matrices outside `nn.Linear` and `nn.Embedding` layers
    (GPT-2-style `Conv1D` projections, the fused experts of a mixture-of-experts): the kernel would leave them in fp32
    while the model was labelled 8-bit."""
    from transformers.pytorch_utils import Conv1D

    conv = [name for name, m in model.named_modules() if isinstance(m, Conv1D)]
    if conv:
        raise ValueError(f"its {len(conv)} Conv1D projections (GPT-2 style, e.g. {conv[0]}) are not nn.Linear, so "
                         "adaptrec's int8 kernel cannot quantize them; load it with quantization none, or with "
                         "$ADAPTREC_INT8_BACKEND=bitsandbytes")
    other = [(f"{name}.{p_name}" if name else p_name, p.numel()) for name, m in model.named_modules()
             if not isinstance(m, (nn.Linear, nn.Embedding))
             for p_name, p in m.named_parameters(recurse=False) if p.is_floating_point() and p.dim() >= 2]
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    share = sum(n for _, n in other) / max(1, linear + sum(n for _, n in other))
    if share > MAX_FP32_SHARE:  # a patch embedding or a small projection may stay; fused experts are most weights
        raise ValueError(f"{share:.0%} of its weight matrices lie outside linear layers (e.g. {other[0][0]}: fused "
                         "experts?) and would stay in fp32 under adaptrec's int8 kernel; load it with quantization "
                         "none")
    targets = [(name, m) for name, m in model.named_modules()
               if type(m) is nn.Linear and name.split(".")[-1] not in skip]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, Int8Linear(module))
    return len(targets)
