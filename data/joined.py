"""Datasets one after another under one index (labeled list + unlabeled-only images)."""
import bisect

from torch.utils.data import Dataset


class JoinedDataset(Dataset):
    """Index i < len(parts[0]) reads parts[0], and so on. Items may be (index, key) pairs as yielded
    by data.sampler; the returned sample carries the joined index."""

    def __init__(self, *parts):
        self.parts = parts
        self.ends = []
        total = 0
        for part in parts:
            total += len(part)
            self.ends.append(total)
        self.ids = [i for part in parts for i in part.ids]

    def __len__(self):
        return self.ends[-1]

    def __getitem__(self, item):
        index, key = item if isinstance(item, tuple) else (item, None)
        k = bisect.bisect_right(self.ends, index)
        local = index - (self.ends[k - 1] if k else 0)
        sample = self.parts[k][(local, key) if key is not None else local]
        return (*sample[:-1], index)
