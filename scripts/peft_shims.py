"""Stand-ins that let peft run everywhere the project's checks run (imported by
gen_fixtures.py and peft_check.py).

BOFT with more than one butterfly factor needs peft's `fbd_cuda` extension, a CUDA kernel
for one op (a batch of block-diagonal matrices) that peft compiles with nvcc at run time.
Without it (any CPU, or a GPU machine without nvcc and ninja) peft quietly trains a single
factor whatever the config says, and cannot load an adapter saved with more. `install()`
gives peft that op written in PyTorch, so the reference computes what the config asks for.

C3A's `BlockCircularConvolution` (peft 0.21) has a hand-written backward whose gradient with
respect to the input is wrong (`torch.autograd.gradcheck` fails; the kernel's gradient is
right), so gradients reaching layers before a C3A layer differ from the true ones.
`install()` replaces it with the same forward left to autograd (which passes gradcheck).
"""
import peft.tuners.boft.layer as boft_layer
import peft.tuners.c3a.layer as c3a_layer
import torch
from torch.fft import fft, ifft


class BlockDiag:
    """fbd_cuda's interface: forward [N, D, H, H] -> [N, D*H, D*H], and its backward."""

    @staticmethod
    def forward(x):
        return [torch.stack([torch.block_diag(*blocks) for blocks in x])]

    @staticmethod
    def backward(grad, x):
        h = x.shape[-1]
        return [torch.stack([torch.stack([g[d * h:(d + 1) * h, d * h:(d + 1) * h] for d in range(x.shape[1])])
                             for g in grad])]


class BlockCircularConvolution:
    """peft's C3A op, `apply(x, w)`, with autograd's (correct) gradients."""

    @staticmethod
    def apply(x, w):
        _, n, b = w.shape
        x = x.reshape(*x.shape[:-1], n, b)
        x = fft(torch.einsum("...nb,mnb->...mb", ifft(x), fft(w))).real
        return x.reshape(*x.shape[:-2], -1)


def install():
    boft_layer._FBD_CUDA = BlockDiag
    c3a_layer.BlockCircularConvolution = BlockCircularConvolution
