"""Learning-rate schedules of the papers, counted in epochs.

Both schedules are `keras.optimizers.schedules.LearningRateSchedule`s of
the optimizer's step counter, read as `epoch = step // steps_per_epoch`,
so the learning rate changes at epoch boundaries (as PyTorch's `MultiStepLR`
and the weight normalization code do) and a run resumed from a checkpoint,
whose optimizer step counter is restored, continues on the same schedule.

- `StepDecay`: `lr·γ^k`, `k` the number of milestones `<= epoch` (WC paper
  §IV-A: ×0.1 at epochs 90, 136 or ×0.2 at 60, 120, 160).
- `LinearDecay`: `lr·min(2 − epoch/(E/2), 1)`, constant for the first half
  and linear towards 0 in the second (weight normalization recipe,
  `openai/weightnorm` `lasagne/train.py`), together with `Beta1Switch`,
  which sets Adam's `β₁` from 0.9 to 0.5 for the second half.
"""

import keras
from keras import ops

from train.config import SCHEDULES


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )


def _check_positive_float(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
    ):
        raise ValueError(
            f"`{name}` must be a number > 0. Received: {name}={value!r}"
        )


def _epoch(step, steps_per_epoch):
    step = ops.cast(step, "float32")
    return ops.floor(step / float(steps_per_epoch))


@keras.saving.register_keras_serializable(package="keras_wc_train")
class StepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`lr·γ^k` where `k` milestones (in epochs) have been reached.

    Args:
        initial_learning_rate: the learning rate of epoch 0.
        milestones: increasing epochs (0-based) at which the rate is
            multiplied by `gamma`, e.g. `(90, 136)`.
        gamma: the factor, e.g. 0.1.
        steps_per_epoch: optimizer steps in one epoch.

    Example:

    >>> schedule = StepDecay(0.1, (2, 4), 0.1, steps_per_epoch=10)
    >>> [round(float(schedule(s)), 4) for s in (0, 19, 20, 40)]
    [0.1, 0.1, 0.01, 0.001]
    """

    def __init__(
        self, initial_learning_rate, milestones, gamma, steps_per_epoch
    ):
        _check_positive_float("initial_learning_rate", initial_learning_rate)
        _check_positive_float("gamma", gamma)
        _check_positive_int("steps_per_epoch", steps_per_epoch)
        milestones = tuple(milestones)
        if any(
            isinstance(m, bool) or not isinstance(m, int) or m < 1
            for m in milestones
        ) or list(milestones) != sorted(set(milestones)):
            raise ValueError(
                "`milestones` must be strictly increasing positive integers. "
                f"Received: milestones={milestones!r}"
            )
        self.initial_learning_rate = float(initial_learning_rate)
        self.milestones = milestones
        self.gamma = float(gamma)
        self.steps_per_epoch = steps_per_epoch

    def __call__(self, step):
        epoch = _epoch(step, self.steps_per_epoch)
        if not self.milestones:
            return ops.convert_to_tensor(self.initial_learning_rate)
        reached = ops.sum(
            ops.cast(
                epoch >= ops.convert_to_tensor(self.milestones, "float32"),
                "float32",
            )
        )
        return self.initial_learning_rate * ops.power(self.gamma, reached)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
            "steps_per_epoch": self.steps_per_epoch,
        }


@keras.saving.register_keras_serializable(package="keras_wc_train")
class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`lr·min(2 − epoch/(E/2), 1)`: the weight normalization recipe.

    Constant for the first `E/2` epochs, then decreasing linearly; for
    `E = 200` the last epoch (199) runs at `0.01·lr` (zero is never reached).

    Args:
        initial_learning_rate: the learning rate of the first half.
        epochs: `E`, the length of the run in epochs.
        steps_per_epoch: optimizer steps in one epoch.

    Example:

    >>> schedule = LinearDecay(0.003, epochs=200, steps_per_epoch=1)
    >>> [round(float(schedule(s)), 6) for s in (0, 100, 150, 199)]
    [0.003, 0.003, 0.0015, 3e-05]
    """

    def __init__(self, initial_learning_rate, epochs, steps_per_epoch):
        _check_positive_float("initial_learning_rate", initial_learning_rate)
        _check_positive_int("epochs", epochs)
        _check_positive_int("steps_per_epoch", steps_per_epoch)
        self.initial_learning_rate = float(initial_learning_rate)
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch

    def __call__(self, step):
        epoch = _epoch(step, self.steps_per_epoch)
        factor = ops.minimum(2.0 - epoch / (self.epochs / 2.0), 1.0)
        return self.initial_learning_rate * factor

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
        }


class Beta1Switch(keras.callbacks.Callback):
    """Sets Adam's `β₁` to `after` from epoch `E/2` on (WN recipe).

    `β₁` is a Python float that the compiled train step captures when it is
    traced, so the step is retraced whenever the value changes. Set at the
    beginning of every epoch, so a resumed run gets the right value.

    Args:
        epochs: `E`, the length of the run in epochs.
        before: `β₁` for epochs `< E/2`.
        after: `β₁` for epochs `>= E/2`.
    """

    def __init__(self, epochs, before=0.9, after=0.5):
        super().__init__()
        _check_positive_int("epochs", epochs)
        self.epochs = epochs
        self.before = float(before)
        self.after = float(after)

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        # A LossScaleOptimizer (mixed precision) wraps the Adam.
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        value = self.before if epoch < self.epochs / 2 else self.after
        if optimizer.beta_1 != value:
            optimizer.beta_1 = value
            self.model.make_train_function(force=True)


def get(
    name,
    initial_learning_rate,
    *,
    epochs,
    steps_per_epoch,
    milestones=(),
    gamma=0.1,
):
    """The learning rate (schedule) called `name`.

    Args:
        name: `"step"`, `"wn-linear"` or `"constant"`.
        initial_learning_rate: the starting learning rate.
        epochs: length of the run in epochs (`"wn-linear"`).
        steps_per_epoch: optimizer steps per epoch.
        milestones: epochs of the `"step"` decays.
        gamma: factor of the `"step"` decays.

    Returns:
        A `LearningRateSchedule`, or a float for `"constant"`.
    """
    if name == "step":
        return StepDecay(
            initial_learning_rate, milestones, gamma, steps_per_epoch
        )
    if name == "wn-linear":
        return LinearDecay(initial_learning_rate, epochs, steps_per_epoch)
    if name == "constant":
        _check_positive_float("initial_learning_rate", initial_learning_rate)
        return float(initial_learning_rate)
    raise ValueError(
        f"`schedule` must be one of {SCHEDULES}. Received: schedule={name!r}"
    )
