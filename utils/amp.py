"""Mixed precision for training and prediction: which dtype autocast uses,
and the gradient scaler fp16 needs.

Autocast covers the networks' layers only (the extractor, the RPN's
convolutions, the head's layers); anchors, RoIs, box decoding, IoU, the
targets and the losses stay float32 (see
:func:`model.utils.layers.full_precision`).
"""
import torch

AMP_DTYPES = {None: None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def check_amp(amp):
    """Raises ValueError unless ``amp`` is None, 'bf16' or 'fp16'."""
    if amp not in AMP_DTYPES:
        raise ValueError("amp must be None, 'bf16' or 'fp16', got "
                         '{!r}'.format(amp))


def autocast(device, amp):
    """The autocast context for ``amp`` on ``device``; a no-op for None."""
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[amp],
                          enabled=amp is not None)


def grad_scaler(device, amp):
    """A gradient scaler for fp16 (whose gradients underflow without one);
    None for fp32 and bf16."""
    if amp != 'fp16':
        return None
    return torch.amp.GradScaler(torch.device(device).type)
