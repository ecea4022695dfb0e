"""A workaround for Keras 3's `fit`/`evaluate` under
`MultiWorkerMirroredStrategy` (keras-team/keras#20585, open).

Two defects of Keras 3.15's TensorFlow trainer with this strategy:

1. Before the first step, `fit` and `evaluate` build the metrics and the
   optimizer from a batch averaged over the replicas with
   `strategy.reduce`, which this strategy rejects for an `(x, y)`
   structure. The build only needs shapes and dtypes: the model is given
   one local batch instead.
2. The per-replica logs of a step (scalars) are averaged with
   `strategy.reduce("MEAN", v, axis=0)`, which fails on a scalar. They are
   averaged over the replicas with `axis=None` instead.

Both replace private Keras code (`Model._maybe_symbolic_build`,
`keras.src.backend.tensorflow.trainer.reduce_per_replica`), so they are
applied here only, only under that strategy, and only inside
`with patched(...)`, which restores the originals on exit. Remove this
module once the upstream issue is fixed.
"""

import contextlib

import keras
import tensorflow as tf


@contextlib.contextmanager
def patched(model, strategy, dataset):
    """Applies the workaround to `model` for the `with` block when
    `strategy` is a `MultiWorkerMirroredStrategy` (otherwise does nothing).

    The functions Keras traces inside the block (`fit`'s train and
    validation steps, `evaluate`'s test step) keep the workaround after it.

    Args:
        model: the compiled model about to `fit`/`evaluate`.
        strategy: the `tf.distribute` strategy of the run.
        dataset: the training dataset; its first batch serves for the build.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        yield
        return
    from keras.src.backend.tensorflow import trainer as tf_trainer

    batch = next(iter(dataset))
    own_build = vars(model).get("_maybe_symbolic_build")
    build = model._maybe_symbolic_build

    def build_from_local_batch(iterator=None, data_batch=None):
        return build(data_batch=batch if iterator is not None else data_batch)

    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy
        ):
            return keras.tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None)
                if isinstance(v, tf.distribute.DistributedValues)
                else v,
                values,
            )
        return original(values, strategy, reduction)

    model._maybe_symbolic_build = build_from_local_batch
    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = original
        if own_build is None:
            del model._maybe_symbolic_build
        else:
            model._maybe_symbolic_build = own_build
