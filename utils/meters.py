"""A confusion matrix that counts on the device of its inputs."""
import torch


class ConfusionMatrix:
    """Counts (true class, predicted class) pairs, as torchnet's
    ConfusionMeter, but on the device of the scores: :meth:`add` reads
    nothing on the host, so a training step does not wait for it; only
    :meth:`value` moves the counts.

    Args:
        k (int): The number of classes.
    """

    def __init__(self, k):
        self.k = k
        self.counts = None  # (k * k,) int64, on the device of the first add

    def add(self, scores, target, ignore_index=None):
        """Counts each row's argmax (the first one on ties) against its
        target.

        Args:
            scores (torch.Tensor): :math:`(N, K)` scores.
            target (torch.Tensor): :math:`(N,)` classes in :math:`[0, K-1]`.
            ignore_index (int): A target whose rows are not counted (the
                rows stay: leaving them out would read the host).
        """
        if self.counts is None:
            self.counts = torch.zeros(self.k * self.k, dtype=torch.long,
                                      device=scores.device)
        target = target.long()
        if ignore_index is None:
            weight = torch.ones_like(target)
        else:
            weight = (target != ignore_index).long()
            target = target.masked_fill(target == ignore_index, 0)
        pair = target * self.k + scores.argmax(dim=1)
        self.counts.index_add_(0, pair, weight)

    def reset(self):
        self.counts = None

    def value(self):
        """numpy.ndarray: :math:`(K, K)` int64, rows the true classes,
        columns the predicted ones."""
        if self.counts is None:
            return torch.zeros((self.k, self.k), dtype=torch.long).numpy()
        return self.counts.view(self.k, self.k).cpu().numpy()
