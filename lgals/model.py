"""The protocol's MLP, and S of them stacked in one flat buffer to train together.

Each member starts from ``make_mlp(seed, sizes)`` (PyTorch's default initialisation) and can be
turned back into that same ``nn.Sequential`` with :meth:`StackedMLP.module`, which is what
gets saved, logged and reloaded. The stack computes its backward pass in closed form: for a
ReLU MLP it is a handful of batched matmuls, and skipping autograd's bookkeeping makes a
training step ~25% cheaper on CPU (tests check it against autograd).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector

HIDDEN = (256, 256)  # the note's hidden layers, whatever the dataset
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}  # of the matrix products


def bf16_supported(device: str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX on a
    CPU): without that, oneDNN emulates them and bf16 is slower than fp32, not faster."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


@dataclass(frozen=True)
class Compute:
    """Where the engine trains, and the precision of its matrix products.

    ``bf16``: the stack's products take bfloat16 operands (each GEMM accumulates in float32
    and rounds its result to bfloat16), and the hidden layers add their bias and apply ReLU
    in bfloat16 (their outputs are the next products' operands); the logits, the master
    weights, their gradients, the optimizer, softmax, losses, epsilon and every metric stay
    float32, and held-out sets are scored in float32, so a logged model reloaded in float32
    re-scores its logged accuracy exactly.
    """

    device: str = "cpu"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"unknown device {self.device!r} (allowed: auto, cpu, cuda)")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("CUDA is not available here (torch.cuda.is_available() is False)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                             f"{self.precision!r}")
        if self.precision == "bf16" and not bf16_supported(self.device):
            raise ValueError(f"bf16 needs bfloat16 matrix units ({_BF16_UNITS[self.device]}), "
                             f"which this {self.device} lacks: bf16 would be slower than fp32 "
                             "here; use fp32")

    @classmethod
    def of(cls, device: str = "auto", precision: str = "fp32") -> Compute:
        """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``."""
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(device, precision)

    @property
    def matmul_dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    def params(self) -> dict[str, str]:
        """As run params (and tags): ``device`` and ``precision``."""
        return {"device": self.device, "precision": self.precision}


_BF16_UNITS = {"cpu": "AVX512-BF16 or AMX", "cuda": "compute capability 8.0 or newer"}


def layer_sizes(n_features: int, n_classes: int) -> tuple[int, ...]:
    """The protocol's MLP for a dataset: its features in, the note's hidden layers, its
    classes out (mnist1d: 40 -> 256 -> 256 -> 10)."""
    return (n_features, *HIDDEN, n_classes)


def batched_matmul(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    """``torch.bmm(a, b, out=out)``, with the batch split so every thread stays busy.

    On CPU, ``torch.bmm`` hands each thread whole single-threaded GEMMs, so S members on T
    threads take ``ceil(S / T)`` rounds: 5 seeds on 2 threads pay for 6. The largest multiple
    of T goes through one ``bmm``; each member left over gets a GEMM that uses all threads.
    ``out`` may be a strided view (a slice of the gradient buffer): it is written in place.
    """
    n_threads = torch.get_num_threads()
    n_members = a.shape[0]
    if a.is_cuda:  # the GPU's batched kernel already fills the device
        return torch.bmm(a, b, out=out)
    head = n_members - n_members % n_threads
    if head in (0, n_members):
        return torch.bmm(a, b, out=out)
    if out is None:
        out = a.new_empty(n_members, a.shape[1], b.shape[2])
    torch.bmm(a[:head], b[:head], out=out[:head])
    for member in range(head, n_members):
        torch.bmm(a[member:member + 1], b[member:member + 1], out=out[member:member + 1])
    return out


def _product_into(a: Tensor, b: Tensor, out: Tensor) -> None:
    """``out = a @ b`` (batched), written in place even when ``out`` is wider than ``a``
    (a float32 gradient of bfloat16 operands: the product is rounded, then widened)."""
    if out.dtype == a.dtype:
        batched_matmul(a, b, out=out)
    else:
        out.copy_(batched_matmul(a, b))


def _batch_sum_into(delta: Tensor, out: Tensor) -> None:
    """``out = delta.sum(1)``, in place; a bfloat16 ``delta`` is summed in its own dtype
    (accumulated in float32, rounded once, as a product is) and then widened, rather than
    widened whole first."""
    if out.dtype == delta.dtype:
        torch.sum(delta, 1, out=out)
    else:
        out.copy_(delta.sum(1))


def make_mlp(seed: int, sizes: tuple[int, ...]) -> nn.Sequential:
    """MLP of layer ``sizes`` (:func:`layer_sizes`) with ReLU and PyTorch's default
    initialisation, seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        return nn.Sequential(*layers[:-1])


class StackedMLP:
    """S MLPs as one ``[S, P]`` parameter buffer (``flat``) with its gradient buffer (``grad``).

    Layer weights ``[S, out, in]`` and biases ``[S, out]`` are views into ``flat``, laid out
    in ``nn.Sequential.parameters()`` order, so a member's row is exactly
    ``parameters_to_vector(make_mlp(seed, sizes).parameters())``.
    """

    def __init__(self, seeds: list[int], device: str | torch.device, sizes: tuple[int, ...],
                 flat: Tensor | None = None, matmul_dtype: torch.dtype = torch.float32):
        self.seeds = list(seeds)
        self.sizes = tuple(sizes)
        if flat is None:
            with torch.no_grad():
                flat = torch.stack([parameters_to_vector(make_mlp(s, self.sizes).parameters())
                                    for s in self.seeds]).to(device)
        self.flat = flat
        self.grad = torch.zeros_like(self.flat)
        self.weights, self.biases = self._views(self.flat)
        self.weight_grads, self.bias_grads = self._views(self.grad)
        self.matmul_dtype = matmul_dtype
        # The products' copy of the weights, refreshed from the float32 master each forward:
        # one contiguous tensor per layer (oneDNN copies a bfloat16 operand whose members lie
        # a whole parameter row apart before each product; MKL takes float32 views as they are).
        self.matmul_weights, self.matmul_biases = (
            ([torch.empty(w.shape, dtype=matmul_dtype, device=w.device) for w in tensors]
             for tensors in (self.weights, self.biases))
            if self.low_precision else (self.weights, self.biases))

    @property
    def low_precision(self) -> bool:
        """Whether the products take a narrower dtype than the float32 master weights."""
        return self.matmul_dtype != self.flat.dtype

    def _views(self, buffer: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        weights, biases, offset = [], [], 0
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            weights.append(buffer[:, offset:offset + fan_out * fan_in].view(-1, fan_out, fan_in))
            offset += fan_out * fan_in
            biases.append(buffer[:, offset:offset + fan_out])
            offset += fan_out
        return weights, biases

    @torch.no_grad()
    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits ``[S, B, K]`` for ``x [S, B, F]`` (per-member batches) or ``[B, F]`` (shared).

        Also returns the layer inputs (in the products' dtype), which :meth:`backward` needs.
        """
        if self.low_precision:
            for low, master in zip(self.matmul_weights + self.matmul_biases,
                                   self.weights + self.biases):
                low.copy_(master)
        inputs = []
        h = x.to(self.matmul_dtype)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.matmul_weights, self.matmul_biases)):
            inputs.append(h)
            if h.dim() == 2:
                h = h.expand(len(self.seeds), *h.shape)
            product = batched_matmul(h, weight.transpose(1, 2))
            if i < last:  # in place, in the products' dtype: the next product's operand
                h = product.add_(bias.unsqueeze(1)).clamp_min_(0.0)
            else:  # the logits, float32: the master bias added in the widening pass
                h = torch.add(product, self.biases[i].unsqueeze(1))
        return h, inputs

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Logits ``[S, N, K]`` for shared inputs ``x [N, F]``, member by member.

        Uses ``F.linear`` exactly as ``nn.Linear`` does, so a saved and reloaded member gives
        bit-identical logits (and the logged test accuracy is reproducible to the last digit).
        """
        logits = []
        for member in range(len(self.seeds)):
            h = x
            for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
                h = F.linear(h, weight[member], bias[member])
                if i < len(self.weights) - 1:
                    h = torch.relu(h)
            logits.append(h)
        return torch.stack(logits)

    @torch.no_grad()
    def backward(self, inputs: list[Tensor], logit_grad: Tensor) -> None:
        """Write d(loss)/d(params) into ``grad`` from d(loss)/d(logits) ``[S, B, K]``.

        ``loss`` is the sum over members, so each member's gradient is that of its own loss.
        The products, and the sums of a bias gradient over the batch, run in the forward's
        dtype (the last layer's bias gradient sums the float32 logit gradient).
        """
        delta = logit_grad
        for i in reversed(range(len(self.weights))):
            h = inputs[i]
            if h.dim() == 2:
                h = h.expand(delta.shape[0], *h.shape)
            operand = delta.to(self.matmul_dtype)
            _product_into(operand.transpose(1, 2), h, self.weight_grads[i])
            _batch_sum_into(delta, self.bias_grads[i])
            if i > 0:  # inputs[i] is relu(z) of the layer below: pass where inputs[i] > 0
                delta = torch.ops.aten.threshold_backward(
                    batched_matmul(operand, self.matmul_weights[i]), inputs[i], 0.0)

    def select(self, rows: list[int]) -> StackedMLP:
        """The members at ``rows`` as a new, smaller stack: a copy, with a fresh gradient buffer."""
        return StackedMLP([self.seeds[row] for row in rows], self.flat.device, self.sizes,
                          flat=self.flat[rows], matmul_dtype=self.matmul_dtype)

    def module(self, member: int) -> nn.Sequential:
        """Member ``member`` as a plain ``nn.Sequential`` in eval mode, on the CPU."""
        model = make_mlp(self.seeds[member], self.sizes)
        with torch.no_grad():  # copy, not view: each parameter owns its storage when saved
            for param, weight_or_bias in zip(model.parameters(), self._member_tensors(member)):
                param.copy_(weight_or_bias)
        return model.eval()

    def _member_tensors(self, member: int) -> list[Tensor]:
        """One member's tensors in ``nn.Sequential.parameters()`` order."""
        return [t[member] for pair in zip(self.weights, self.biases) for t in pair]
