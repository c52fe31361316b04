"""Batches for training and evaluation: padding collate functions, batches
of one orientation, and each process's share of a test set.

Shape shorthand: N images in a batch, R boxes of one image.
"""
import torch
from torch.utils.data import Sampler


def collate_detection(batch, size_divisible=1):
    """Stacks training examples into one zero-padded batch.

    Each image is padded with zeros at the bottom and right to the largest
    height and width of the batch (rounded up to a multiple of
    ``size_divisible``); its boxes stay in its own pixels, and its own size
    and scale come along, so that the model proposes and labels anchors
    for each image as if it were alone.

    Args:
        batch (list): N examples ``(img, bbox, label, scale)`` as
            :class:`data.dataset.Dataset` gives them: ``img``
            :math:`(3, H, W)`, ``bbox`` :math:`(R, 4)`, each ``(y_min,
            x_min, y_max, x_max)``, ``label`` :math:`(R,)`; R may be 0.
        size_divisible (int): Pad height and width up to a multiple of
            this; 1 (default) pads to the largest image exactly, so that a
            batch of one is not padded.

    Returns:
        (torch.Tensor, list, list, torch.Tensor, torch.Tensor):
        * **imgs**: :math:`(N, 3, H, W)` float32.
        * **bboxes**: N float32 tensors :math:`(R, 4)`.
        * **labels**: N int32 tensors :math:`(R,)`.
        * **scales**: :math:`(N,)` float64, each image's preprocessing
          scale.
        * **img_sizes**: :math:`(N, 2)` int64, each image's ``(H, W)``
          before padding.
    """
    imgs, bboxes, labels, scales = zip(*batch)
    img_sizes = torch.tensor([img.shape[1:] for img in imgs])
    H, W = (-(-int(v) // size_divisible) * size_divisible
            for v in img_sizes.max(dim=0).values)
    out = torch.zeros((len(imgs), 3, H, W), dtype=torch.float32)
    for i, img in enumerate(imgs):
        out[i, :, :img.shape[1], :img.shape[2]] = torch.as_tensor(img)
    bboxes = [torch.as_tensor(bbox, dtype=torch.float32) for bbox in bboxes]
    labels = [torch.as_tensor(label, dtype=torch.int32) for label in labels]
    return (out, bboxes, labels, torch.tensor(scales, dtype=torch.float64),
            img_sizes)


def collate_test(batch):
    """Gathers test examples into lists, unpadded (predict takes images
    of different sizes).

    Args:
        batch (list): N examples ``(img, size, bbox, label, difficult)`` as
            :class:`data.dataset.TestDataset` gives them; N may be 0.

    Returns:
        tuple of five lists of N: images :math:`(3, H, W)`, original
        ``(H, W)`` sizes, boxes :math:`(R, 4)`, labels :math:`(R,)` and
        difficult flags :math:`(R,)`.
    """
    if not batch:
        return [], [], [], [], []
    imgs, sizes, bboxes, labels, difficults = zip(*batch)
    return (list(imgs), [tuple(int(v) for v in size) for size in sizes],
            list(bboxes), list(labels), list(difficults))


def orientation_groups(sizes):
    """Each image's orientation: 0 for portrait or square (H >= W), 1 for
    landscape (W > H).

    Args:
        sizes (sequence of (H, W)): The images' sizes, e.g. from the
            dataset's ``get_size``; a resize that keeps the aspect ratio
            keeps the group.

    Returns:
        list of int.
    """
    return [int(w > h) for h, w in sizes]


class AspectRatioBatchSampler(Sampler):
    """Batches of N images of one orientation, so that little of a batch
    is padding.

    Wraps any sampler of dataset indices (a ``RandomSampler``, or a
    ``DistributedSampler`` for this process's share): every index it yields
    goes in exactly one batch. A batch takes images of one group in the
    order the sampler gives them; each group's last batch may be short.

    The number of batches is fixed by the sampler's length, the same in
    every epoch and in every process: ``ceil(len(sampler) / N)``, plus one
    when the dataset has both orientations (a second short batch). Where
    the indices fill fewer batches, the largest is cut in two, so that
    all processes of a distributed run take the same number of steps.

    Args:
        sampler (Sampler): Yields dataset indices.
        group_ids (sequence of int): Each dataset index's group, e.g. from
            :func:`orientation_groups`.
        batch_size (int): N.
    """

    def __init__(self, sampler, group_ids, batch_size):
        if isinstance(batch_size, bool) or not isinstance(
                batch_size, int) or batch_size < 1:
            raise ValueError('batch_size must be an int >= 1, got {!r}'.format(
                batch_size))
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = batch_size
        self._n_groups = len(set(self.group_ids))

    def set_epoch(self, epoch):
        """Passes the epoch on to a sampler that shuffles by epoch (a
        DistributedSampler)."""
        if hasattr(self.sampler, 'set_epoch'):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        filling = {}
        batches = []
        for idx in self.sampler:
            batch = filling.setdefault(self.group_ids[idx], [])
            batch.append(idx)
            if len(batch) == self.batch_size:
                batches.append(batch)
                filling[self.group_ids[idx]] = []
        batches += [batch for batch in filling.values() if batch]
        while len(batches) < len(self):
            i = max(range(len(batches)), key=lambda k: len(batches[k]))
            half = len(batches[i]) // 2
            batches[i:i + 1] = [batches[i][:half], batches[i][half:]]
        return iter(batches)

    def __len__(self):
        n_index = len(self.sampler)
        n_batch = -(-n_index // self.batch_size) + (self._n_groups > 1)
        return min(n_batch, n_index)


def eval_batches(n_image, batch_size, rank=0, world_size=1, sizes=None):
    """One process's batches of a test set.

    Process ``rank`` takes every ``world_size``-th image, starting at its
    rank, so that the processes together evaluate each image once. With
    ``sizes`` its images are sorted by size first, so that a batch mostly
    holds one size (predict runs one forward per size). Every process gets
    the same number of batches (evaluation steps together); one with fewer
    images ends with an empty batch.

    Args:
        n_image (int): The number of test images to evaluate (the first
            ``n_image`` of the set).
        batch_size (int): Images per batch.
        rank (int): This process's rank.
        world_size (int): The number of processes.
        sizes (sequence of (H, W)): The images' sizes, or None to keep
            index order.

    Returns:
        list of lists of indices.
    """
    share = list(range(rank, n_image, world_size))
    if sizes is not None:
        share.sort(key=lambda i: (tuple(sizes[i]), i))
    batches = [share[k:k + batch_size]
               for k in range(0, len(share), batch_size)]
    n_batch = -(-(-(-n_image // world_size)) // batch_size)
    return batches + [[] for _ in range(n_batch - len(batches))]
