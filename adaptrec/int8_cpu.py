"""The fast 8-bit CPU backend: frozen linears in int8 run by fbgemm's dynamic-int8 matmul, peft-wrappable.

torch's `quantize_dynamic` is 1.6x fp32 on CPU where bitsandbytes int8 is 0.6x, but its modules are not
`nn.Linear`, have no backward and so cannot carry peft LoRA layers. `Int8Linear` is an `nn.Linear` whose
frozen weight is stored as per-output-channel int8 (the same op `quantize_dynamic` runs), whose forward
is differentiable with respect to its input (backward multiplies by the dequantized weight), so peft
wraps it like any linear and LoRA trains and serves on top. CPU only: on CUDA bitsandbytes is the backend.
"""

from __future__ import annotations

import torch
from torch import nn

# The output embedding stays fp32 (as bitsandbytes leaves it): it runs on one position per prompt.
SKIP_MODULES: tuple[str, ...] = ("lm_head",)


def _int8_matmul(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """x (rows, in) fp32 @ weight.T (int8, per-output-channel scales), activations quantized per row (per token)."""
    scale = x.abs().amax(dim=1, keepdim=True).div_(127.0).clamp_(min=1e-12)
    xq = torch.div(x, scale).round_().to(torch.int8)
    return torch._int_mm(xq, weight.t()).float().mul_(scale).mul_(weight_scale)


class _Int8Linear(torch.autograd.Function):
    """y = x W^T + b with W int8; dL/dx = dL/dy W (dequantized); W and b are frozen."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: "Int8Linear") -> torch.Tensor:
        ctx.layer = layer
        y = _int8_matmul(x.float(), layer.weight, layer.weight_scale)
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
    """Replace every `nn.Linear` of `model` (except names ending in `skip`) by an `Int8Linear`; returns the count."""
    targets = [(name, m) for name, m in model.named_modules()
               if type(m) is nn.Linear and not name.split(".")[-1] in skip]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, Int8Linear(module))
    return len(targets)
