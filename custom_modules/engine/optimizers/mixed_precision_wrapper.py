"""Mixed precision with the dtype chosen for the device: bfloat16 where it has it.

fp16 MAE pretraining is known to go NaN late in training (mmpretrain issue 1632; EVA and ConvMAE
report the same), bfloat16 does not: its exponent range is fp32's. mmengine's AmpOptimWrapper
autocasts to fp16 unless told otherwise and refuses a machine without a GPU.
"""
import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from ...errors import UserError

DTYPES = {'auto': None, 'bf16': 'bfloat16', 'bfloat16': 'bfloat16', 'fp16': 'float16',
          'float16': 'float16'}


def resolve_dtype(dtype) -> str:
    """'bfloat16' or 'float16' for ``dtype`` ('auto': bfloat16 where the device has it, i.e. a
    GPU with bf16 support or the CPU, else float16)."""
    if dtype not in DTYPES:
        raise UserError(f'mixed precision dtype {dtype!r}: expected auto, bf16 or fp16')
    if DTYPES[dtype] is not None:
        return DTYPES[dtype]
    cuda = torch.cuda.is_available()
    return 'bfloat16' if not cuda or torch.cuda.is_bf16_supported() else 'float16'


@OPTIM_WRAPPERS.register_module()
class MixedPrecisionOptimWrapper(AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` with ``dtype='auto'`` (the default) resolved for the device,
    and on a machine without a GPU in bfloat16 (torch's CPU autocast), without loss scaling,
    which bfloat16 does not need; fp16 there is one error line."""

    def __init__(self, loss_scale='dynamic', dtype='auto', **kwargs) -> None:
        dtype = resolve_dtype(dtype)
        if torch.cuda.is_available():
            super().__init__(loss_scale=loss_scale, dtype=dtype, **kwargs)
            return
        if dtype != 'bfloat16':
            raise UserError('mixed precision in float16 needs a CUDA GPU: on CPU use bfloat16 '
                            '(--amp bf16)')
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        self.loss_scaler = torch.amp.GradScaler('cpu', enabled=False)
        self.cast_dtype = torch.bfloat16
