"""Small helpers shared by the RPN and the heads."""
import torch


def normal_init(m, mean, stddev):
    """Weights from N(mean, stddev), biases zero."""
    m.weight.data.normal_(mean, stddev)
    m.bias.data.zero_()


def full_precision(*tensors):
    """float16 and bfloat16 tensors (outputs of layers under autocast) as
    float32; others as they are, so that float32 and float64 pass through
    untouched. Boxes, targets and losses are computed from these.
    """
    out = tuple(t.float() if t.dtype in (torch.float16, torch.bfloat16)
                else t for t in tensors)
    return out if len(out) > 1 else out[0]
