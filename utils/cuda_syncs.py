"""Counting where a block of code waits for a CUDA device."""
import contextlib
import warnings

import torch


@contextlib.contextmanager
def cuda_syncs():
    """Records each synchronizing CUDA call made inside the block (torch's
    sync debug mode), as ``file:line`` of the Python line that made it.

    Yields:
        list of str: filled in when the block ends.
    """
    syncs = []
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            yield syncs
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs += ['{}:{}'.format(w.filename, w.lineno) for w in caught
              if 'synchroniz' in str(w.message)]
