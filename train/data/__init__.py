"""Datasets for the experiments: `load(name, ...)` returns a `DataBundle`.

Modules: `registry` (`load`, `available`), `bundle` (`DataBundle`), one
module per dataset (`cifar`, `imagenet`, `tiny_imagenet`, `fashion_mnist`,
`digits`), and the pieces they share: `split` (seeded splits), `idx` (IDX
reader), `standardize` and `zca` (fitted preprocessing), `transforms`
(augmentation ops), `pipelines` and `in_memory` (`tf.data` assembly),
`tfds_source` (offline TFDS access).
"""

from train.data.bundle import DataBundle
from train.data.registry import available, load

__all__ = ["DataBundle", "available", "load"]
