"""Stand-ins that let peft run everywhere the project's checks run (imported by
gen_fixtures.py and peft_check.py).

BOFT with more than one butterfly factor needs peft's `fbd_cuda` extension, a CUDA kernel
for one op (a batch of block-diagonal matrices) that peft compiles with nvcc at run time.
Without it (any CPU, or a GPU machine without nvcc and ninja) peft quietly trains a single
factor whatever the config says, and cannot load an adapter saved with more. `install()`
gives peft that op written in PyTorch, so the reference computes what the config asks for.
"""
import peft.tuners.boft.layer as boft_layer
import torch


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


def install():
    boft_layer._FBD_CUDA = BlockDiag
