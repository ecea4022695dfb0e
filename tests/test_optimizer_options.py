"""Every Keras optimizer option on WC/PP/WN kernels, against numpy.

The references (tests/optimizer_reference.py) are written out in float64;
the gradients fed to `optimizer.apply` come from the same closed-form
helper, so the optimizers are tested without a framework's autodiff.
"""

import keras
import numpy as np
import pytest
from optimizer_reference import DenseProblem, Reference, clip_gradients

import keras_wc
from keras_wc import optimizers

KERAS = {
    "SGD": keras.optimizers.SGD,
    "RMSprop": keras.optimizers.RMSprop,
    "Adagrad": keras.optimizers.Adagrad,
    "Adam": keras.optimizers.Adam,
    "AdamW": keras.optimizers.AdamW,
    "Lion": keras.optimizers.Lion,
}
# Each optimizer with non-default arguments that reach every branch of
# its step, and a decoupled weight decay where it has one.
SETTINGS = {
    "SGD": dict(learning_rate=0.05, momentum=0.9, nesterov=True,
                weight_decay=0.1),
    "RMSprop": dict(learning_rate=0.01, rho=0.8, momentum=0.5,
                    centered=True, weight_decay=0.05),
    "Adagrad": dict(learning_rate=0.05, initial_accumulator_value=0.2),
    "AdamW": dict(learning_rate=0.01, beta_1=0.8, beta_2=0.99,
                  weight_decay=0.3),
    "Lion": dict(learning_rate=0.003, beta_1=0.8, beta_2=0.95,
                 weight_decay=0.5),
}
STEPS = 4


def _build(problem):
    """The `WCDense` of `problem`, its variables at `problem.init`, in the
    order of `problem.names()`."""
    if problem.compander == "powerprop":
        layer = keras_wc.WCDense(3, compander=keras_wc.companders.Powerprop())
    else:
        layer = keras_wc.WCDense(
            3, a=problem.a0, b=problem.b0, learnable=problem.learnable
        )
    layer.build((None, 5))
    by_name = {v.name: v for v in layer.trainable_variables}
    variables = [by_name[name] for name in problem.names()]
    for variable, name in zip(variables, problem.names(), strict=True):
        variable.assign(np.asarray(problem.init[name], "float32"))
    return layer, variables


def _model(problem, **kwargs):
    """A functional model around the `WCDense` of `problem` (fixed a, b),
    its variables at `problem.init`."""
    inputs = keras.Input((5,))
    layer = keras_wc.WCDense(3, a=problem.a0, b=problem.b0, **kwargs)
    model = keras.Model(inputs, layer(inputs))
    layer.v.assign(problem.init["v"].astype("float32"))
    layer.bias.assign(problem.init["bias"].astype("float32"))
    return model, layer


def _fit(model, problem, epochs):
    model.fit(problem.x, problem.y, batch_size=8, epochs=epochs, verbose=0,
              shuffle=False)


def _values(variables, names):
    return {
        name: np.asarray(keras.ops.convert_to_numpy(v), "float64")
        for name, v in zip(names, variables, strict=True)
    }


def _loss_scale(optimizer):
    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return 1.0
    if not optimizer.built:
        return float(optimizer.initial_scale)
    return float(keras.ops.convert_to_numpy(optimizer.dynamic_scale))


def _apply(optimizer, grads, variables):
    """`optimizer.apply` with the gradients as backend tensors.

    On JAX a `LossScaleOptimizer` is applied as Keras's trainer applies it,
    through `stateless_apply` (its eager `apply` leaks a tracer out of
    `ops.cond`, for every inner optimizer: a Keras 3.15 limitation).
    """
    grads = [
        keras.ops.convert_to_tensor(np.asarray(g, "float32")) for g in grads
    ]
    if keras.backend.backend() == "jax" and isinstance(
        optimizer, keras.optimizers.LossScaleOptimizer
    ):
        if not optimizer.built:
            optimizer.build(variables)
        trainable, state = optimizer.stateless_apply(
            [v.value for v in optimizer.variables],
            grads,
            [v.value for v in variables],
        )
        for variable, value in zip(variables, trainable, strict=True):
            variable.assign(value)
        for variable, value in zip(optimizer.variables, state, strict=True):
            variable.assign(value)
        return
    optimizer.apply(grads, variables)


def _run(problem, optimizer, steps=STEPS, variables=None):
    """`steps` calls of `optimizer.apply` with the problem's gradients at
    the variables' current values (times the loss scale for a
    `LossScaleOptimizer`, as its `scale_loss` would make them)."""
    if variables is None:
        _, variables = _build(problem)
    names = problem.names()
    for _ in range(steps):
        grads = problem.grads(_values(variables, names))
        scale = _loss_scale(optimizer)
        _apply(optimizer, [grads[n] * scale for n in names], variables)
    return _values(variables, names), variables


def _assert_close(actual, expected, rtol=2e-5, atol=2e-6):
    assert actual.keys() == expected.keys()
    for name in actual:
        np.testing.assert_allclose(
            actual[name], expected[name], rtol=rtol, atol=atol, err_msg=name
        )


@pytest.fixture
def mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy("float32")


# -- the five optimizers, modified, fp32 and mixed_float16 ----------------


@pytest.mark.parametrize("learnable", [False, True], ids=["fixed", "fine"])
@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_modified_optimizer_matches_numpy(name, policy, learnable):
    """Modified SGD, RMSprop, Adagrad, AdamW, Lion over 4 steps, with their
    decoupled weight decay (on Ψ(v) for fixed a, b; on v for learnable; a,
    b never); under mixed_float16 inside a LossScaleOptimizer."""
    problem = DenseProblem(learnable=learnable)
    keras.config.set_dtype_policy(policy)
    try:
        optimizer = optimizers.modified(KERAS[name])(**SETTINGS[name])
        if policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        actual, _ = _run(problem, optimizer)
    finally:
        keras.config.set_dtype_policy("float32")
    reference = Reference(problem, name, **SETTINGS[name])
    for _ in range(STEPS):
        reference.apply(problem.grads(reference.params))
    _assert_close(actual, reference.params)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_plain_optimizer_on_wc_acts_on_v(name):
    """A plain Keras optimizer on a WC layer is Keras's optimizer on the
    raw variables: moments of ∂L/∂v, decay of v and of learnable a, b."""
    problem = DenseProblem(learnable=True)
    actual, _ = _run(problem, KERAS[name](**SETTINGS[name]))
    reference = Reference(problem, name, modified=False, **SETTINGS[name])
    for _ in range(STEPS):
        reference.apply(problem.grads(reference.params))
    _assert_close(actual, reference.params)


def test_powerprop_kernel_with_weight_decay():
    problem = DenseProblem(compander="powerprop")
    settings = dict(learning_rate=0.01, weight_decay=0.5)
    actual, _ = _run(problem, optimizers.ModifiedAdamW(**settings))
    reference = Reference(problem, "AdamW", **settings)
    for _ in range(STEPS):
        reference.apply(problem.grads(reference.params))
    _assert_close(actual, reference.params)


# -- weight decay -----------------------------------------------------------


def test_decay_alone_is_the_gradient_of_eq5():
    """With zero gradients AdamW's step is 0: what is left is the decay,
    v ← v − η·λ·Ψ'(v)·Ψ(v) (modified) against v ← (1 − η·λ)·v (plain)."""
    lr, wd = 0.1, 0.2
    results = {}
    for kind, cls in (
        ("modified", optimizers.ModifiedAdamW),
        ("plain", keras.optimizers.AdamW),
    ):
        problem = DenseProblem()
        _, variables = _build(problem)
        zeros = [np.zeros(v.shape) for v in variables]
        _apply(cls(lr, weight_decay=wd), zeros, variables)
        results[kind] = np.asarray(variables[0], "float64")
    v = problem.init["v"]
    w, dpsi = problem.psi(problem.init), problem.dpsi(problem.init)
    np.testing.assert_allclose(
        results["modified"], v - lr * wd * dpsi * w, rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(
        results["plain"], v * (1 - lr * wd), rtol=1e-6, atol=1e-7
    )


def test_modified_sgd_decay_equals_the_papers_l2_on_psi():
    """Modified SGD(weight_decay=λ) is, step for step, SGD with the WC
    paper's penalty on Ψ(v) (Eq. 5) in PyTorch's convention,
    `kernel_regularizer=keras_wc.l2_from_pytorch(λ)` (both through fit)."""
    lr, wd = 0.1, 0.05
    problem = DenseProblem()
    finals = []
    for decay, regularizer in (
        (wd, None),
        (None, keras_wc.l2_from_pytorch(wd)),
    ):
        model, layer = _model(problem, kernel_regularizer=regularizer)
        optimizer = optimizers.ModifiedSGD(lr, weight_decay=decay)
        # The regularizer is on the kernel only.
        optimizer.exclude_from_weight_decay(var_names=["bias"])
        model.compile(optimizer=optimizer, loss="mse")
        _fit(model, problem, 5)
        finals.append(np.array(layer.v))
    assert np.max(np.abs(finals[0] - problem.init["v"])) > 1e-2
    np.testing.assert_allclose(finals[0], finals[1], rtol=1e-5, atol=1e-6)


def test_exclude_from_weight_decay_is_honoured_for_kernels():
    problem = DenseProblem()
    _, variables = _build(problem)
    optimizer = optimizers.ModifiedAdamW(0.1, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_list=[variables[0]])
    _apply(optimizer, [np.zeros(v.shape) for v in variables], variables)
    np.testing.assert_array_equal(
        np.asarray(variables[0]), problem.init["v"].astype("float32")
    )
    np.testing.assert_allclose(
        np.asarray(variables[1]), problem.init["bias"] * 0.95, rtol=1e-6
    )


def test_no_decay_variables():
    """Learnable a, b (fine and coarse, each once) and WN directions;
    WN log-gains too; never WC/PP kernels, biases or WN gains."""
    shared = keras_wc.SharedCompander(a=0.9, b=0.7)
    inputs = keras.Input((5,))
    h = keras_wc.WCDense(4, shared=shared, name="c1")(inputs)
    h = keras_wc.WCDense(4, shared=shared, name="c2")(h)
    h = keras_wc.WCDense(4, learnable=True, a=0.9, name="fine")(h)
    h = keras_wc.WCDense(4, name="fixed")(h)
    h = keras_wc.WNDense(4, data_init=False, name="wn")(h)
    out = keras_wc.WNDense(
        2, data_init=False, log_scale=True, name="wn_log"
    )(h)
    model = keras.Model(inputs, out)
    paths = sorted(v.path for v in optimizers.no_decay_variables(model))
    assert paths == sorted(
        [
            shared._a.path,
            shared._b.path,
            "fine/a",
            "fine/b",
            "wn/v",
            "wn_log/v",
            "wn_log/s",
        ]
    )
    with pytest.raises(TypeError, match="expects a Keras model or layer"):
        optimizers.no_decay_variables([1, 2])


@pytest.mark.parametrize("cls", [keras.optimizers.AdamW,
                                 optimizers.ModifiedAdamW])
def test_wn_decay_of_the_gain_alone_shrinks_w_exactly(cls):
    """With `no_decay_variables` excluded, decoupled decay on a WN layer is
    w ← (1 − η·λ)·w, with plain and modified optimizers alike."""
    lr, wd = 0.1, 0.2
    inputs = keras.Input((5,))
    layer = keras_wc.WNDense(3, data_init=False)
    model = keras.Model(inputs, layer(inputs))
    before = np.asarray(layer.kernel)
    optimizer = cls(lr, weight_decay=wd)
    optimizer.exclude_from_weight_decay(
        var_list=optimizers.no_decay_variables(model)
    )
    variables = model.trainable_variables
    _apply(optimizer, [np.zeros(v.shape) for v in variables], variables)
    np.testing.assert_allclose(
        np.asarray(layer.kernel), before * (1 - lr * wd), rtol=1e-6
    )


# -- clipping -----------------------------------------------------------------


@pytest.mark.parametrize(
    "clip", [{"clipnorm": 0.05}, {"global_clipnorm": 0.05},
             {"clipvalue": 0.01}],
    ids=["clipnorm", "global_clipnorm", "clipvalue"],
)
@pytest.mark.parametrize("modified", [True, False],
                         ids=["modified", "plain"])
def test_clipping(clip, modified):
    """Modified: the clip acts on g_w = ∂L/∂Ψ(v) (and the plain gradients
    of the others); plain: on ∂L/∂v. The limits are small enough that
    every step is clipped."""
    problem = DenseProblem(learnable=True)
    settings = dict(learning_rate=0.05, momentum=0.9, **clip)
    cls = keras.optimizers.SGD
    optimizer = (optimizers.modified(cls) if modified else cls)(**settings)
    actual, _ = _run(problem, optimizer)
    reference = Reference(problem, "SGD", modified=modified, **settings)
    clipped = 0
    for _ in range(STEPS):
        grads = problem.grads(reference.params)
        effective = {k: reference._effective(k, g) for k, g in grads.items()}
        after = clip_gradients(effective, reference.hp)
        clipped += any(
            not np.array_equal(after[k], effective[k]) for k in effective
        )
        reference.apply(grads)
    assert clipped == STEPS
    _assert_close(actual, reference.params)


# -- gradient accumulation -------------------------------------------------


@pytest.mark.parametrize("modified", [True, False],
                         ids=["modified", "plain"])
def test_gradient_accumulation(modified):
    """k = 3: the mean of 3 gradients (g_w for the modified optimizer,
    clipped after averaging), one step per 3 calls, Adam's bias correction
    counting updates; 7 calls = 2 updates and one gradient pending."""
    problem = DenseProblem()
    settings = dict(learning_rate=0.02, weight_decay=0.1,
                    gradient_accumulation_steps=3, clipnorm=0.2)
    cls = keras.optimizers.AdamW
    optimizer = (optimizers.modified(cls) if modified else cls)(**settings)
    _, variables = _build(problem)
    reference = Reference(problem, "AdamW", modified=modified, **settings)
    names = problem.names()
    for call in range(7):
        # Different data at each call, as in training on batches.
        problem.x = np.random.default_rng(call).standard_normal((8, 5))
        grads = problem.grads(_values(variables, names))
        _apply(optimizer, [grads[n] for n in names], variables)
        reference.apply(problem.grads(reference.params))
        _assert_close(_values(variables, names), reference.params)
    assert int(optimizer.iterations) == 2
    assert reference.updates == 2


# -- EMA ----------------------------------------------------------------------


@pytest.mark.parametrize("learnable", [False, True], ids=["fixed", "fine"])
@pytest.mark.parametrize("modified", [True, False],
                         ids=["modified", "plain"])
def test_ema_and_finalize(modified, learnable):
    """Modified, fixed a, b: the EMA of Ψ(v), and `finalize_variable_values`
    writes v = Ψ⁻¹(EMA of Ψ(v)). Otherwise (plain, or learnable a, b): the
    EMA of every raw variable, written as it is."""
    problem = DenseProblem(learnable=learnable)
    settings = dict(learning_rate=0.3, use_ema=True, ema_momentum=0.5)
    cls = keras.optimizers.SGD
    optimizer = (optimizers.modified(cls) if modified else cls)(**settings)
    actual, variables = _run(problem, optimizer, steps=5)
    reference = Reference(problem, "SGD", modified=modified, **settings)
    for _ in range(5):
        reference.apply(problem.grads(reference.params))
    _assert_close(actual, reference.params)
    optimizer.finalize_variable_values(variables)
    final = _values(variables, problem.names())
    _assert_close(final, reference.average)


def test_ema_overwrite_frequency_writes_the_effective_average():
    problem = DenseProblem()
    settings = dict(learning_rate=0.3, use_ema=True, ema_momentum=0.5)
    optimizer = optimizers.ModifiedSGD(ema_overwrite_frequency=3, **settings)
    _, variables = _build(problem)
    reference = Reference(problem, "SGD", **settings)
    names = problem.names()
    for call in range(3):
        grads = problem.grads(_values(variables, names))
        _apply(optimizer, [grads[n] for n in names], variables)
        reference.apply(problem.grads(reference.params))
        if call == 2:  # (iterations + 1) % 3 == 0: overwritten
            reference.params = dict(reference.average)
        _assert_close(_values(variables, names), reference.params)


def test_ema_through_fit():
    """`fit` calls `finalize_variable_values` at its end: the trained
    layer holds Ψ⁻¹ of the EMA of its effective weights."""
    problem = DenseProblem()
    settings = dict(learning_rate=0.3, use_ema=True, ema_momentum=0.6)
    model, layer = _model(problem)
    model.compile(optimizer=optimizers.ModifiedSGD(**settings), loss="mse")
    _fit(model, problem, 4)
    reference = Reference(problem, "SGD", **settings)
    for _ in range(4):
        reference.apply(problem.grads(reference.params))
    np.testing.assert_allclose(
        np.asarray(layer.v), reference.average["v"], rtol=2e-5, atol=2e-6
    )


# -- loss scaling -----------------------------------------------------------


def test_loss_scale_optimizer_skips_a_non_finite_step(mixed_precision):
    """A step with a non-finite gradient changes no variable and no state
    of the modified optimizer; the scale is halved; the next steps equal
    the reference's first ones."""
    problem = DenseProblem()
    settings = SETTINGS["AdamW"]
    optimizer = keras.optimizers.LossScaleOptimizer(
        optimizers.ModifiedAdamW(**settings)
    )
    _, variables = _build(problem)
    _run(problem, optimizer, steps=1, variables=variables)
    before = _values(variables, problem.names())
    state = [np.array(v) for v in optimizer.inner_optimizer.variables]
    bad = [np.full(v.shape, np.inf, "float32") for v in variables]
    _apply(optimizer, bad, variables)
    assert float(optimizer.dynamic_scale) == 2.0**14
    _assert_close(_values(variables, problem.names()), before, 0, 0)
    for old, new in zip(state, optimizer.inner_optimizer.variables,
                        strict=True):
        np.testing.assert_array_equal(old, np.asarray(new))
    actual, _ = _run(problem, optimizer, steps=2, variables=variables)
    reference = Reference(problem, "AdamW", **settings)
    for _ in range(3):
        reference.apply(problem.grads(reference.params))
    _assert_close(actual, reference.params)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_fit_under_mixed_float16(name, mixed_precision):
    """The whole path: `compile` wraps the modified optimizer in a
    LossScaleOptimizer, the layer computes in float16; the raw variables
    follow the float64 reference to float16's precision."""
    problem = DenseProblem()
    settings = {**SETTINGS[name]}
    model, layer = _model(problem)
    model.compile(optimizer=optimizers.modified(KERAS[name])(**settings),
                  loss="mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    _fit(model, problem, STEPS)
    reference = Reference(problem, name, **settings)
    for _ in range(STEPS):
        reference.apply(problem.grads(reference.params))
    moved = np.max(np.abs(reference.params["v"] - problem.init["v"]))
    error = np.max(np.abs(np.asarray(layer.v) - reference.params["v"]))
    assert error < 0.05 * moved, (error, moved)


# -- the modified forms --------------------------------------------------------


@pytest.mark.parametrize(
    "cls",
    [keras.optimizers.Adadelta, keras.optimizers.Adamax,
     keras.optimizers.Nadam],
)
def test_other_elementwise_optimizers_scale_the_plain_step(cls):
    """For any supported optimizer the modified increment is Ψ'(v) times
    the increment the plain optimizer makes from g_w."""
    problem = DenseProblem()
    _, variables = _build(problem)
    plain_var = keras.Variable(problem.init["v"].astype("float32"))
    modified = optimizers.modified(cls)(learning_rate=0.5)
    plain = cls(learning_rate=0.5)
    for _ in range(3):
        params = _values(variables, problem.names())
        grads = problem.grads(params)
        scale = problem.dpsi(params)
        before = np.asarray(plain_var, "float64")
        _apply(plain, [grads["v"] / scale], [plain_var])
        increment = np.asarray(plain_var, "float64") - before
        _apply(modified, [grads[n] for n in problem.names()], variables)
        np.testing.assert_allclose(
            np.asarray(variables[0], "float64") - params["v"],
            scale * increment,
            rtol=1e-4,
            atol=1e-7,
        )
        plain_var.assign(np.asarray(variables[0]))


def test_modified_forms_exist_and_are_registered():
    for name in ("SGD", "RMSprop", "Adagrad", "Adadelta", "Adam", "AdamW",
                 "Adamax", "Nadam", "Lion"):
        cls = getattr(optimizers, f"Modified{name}")
        assert optimizers.modified(getattr(keras.optimizers, name)) is cls
        assert keras.saving.get_registered_object(
            f"keras_wc>Modified{name}"
        ) is cls
        assert issubclass(cls, getattr(keras.optimizers, name))


@pytest.mark.parametrize(
    "name, why",
    [
        ("LossScaleOptimizer", "wrap the modified one instead"),
        ("MultiOptimizer", "give it modified ones"),
        ("Ftrl", "not as an increment"),
        ("Lamb", "trust ratio"),
        ("Adafactor", "RMS of the raw variable"),
        ("Muon", "not elementwise"),
        ("ScheduleFreeAdamW", "interpolation"),
    ],
)
def test_refused_optimizers(name, why):
    cls = getattr(keras.optimizers, name)
    match = f"no modified form of {name}: .*{why}"
    with pytest.raises(ValueError, match=match):
        optimizers.modified(cls)

    class Sub(cls):
        pass

    with pytest.raises(ValueError, match="no modified form of Sub"):
        optimizers.modified(Sub)


def test_saved_with_ema_and_decay_and_loaded(tmp_path):
    problem = DenseProblem()
    model, _ = _model(problem)
    model.compile(
        optimizer=optimizers.ModifiedLion(
            1e-3, weight_decay=0.1, use_ema=True, clipnorm=1.0
        ),
        loss="mse",
    )
    model.fit(problem.x, problem.y, batch_size=4, epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is optimizers.ModifiedLion
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables,
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_wn_variables_take_the_plain_step():
    """A modified optimizer treats WN's `v` and `g` (and biases) as the
    plain optimizer does, weight decay and EMA included."""
    rng = np.random.default_rng(0)
    grads = [
        [rng.standard_normal(shape).astype("float32")
         for shape in ((5, 3), (3,), (3,))]
        for _ in range(3)
    ]
    finals = []
    for cls in (keras.optimizers.AdamW, optimizers.ModifiedAdamW):
        layer = keras_wc.WNDense(
            3, data_init=False,
            kernel_initializer=keras.initializers.GlorotUniform(seed=1),
        )
        layer.build((None, 5))
        variables = layer.trainable_variables
        optimizer = cls(0.01, weight_decay=0.1, use_ema=True,
                        ema_momentum=0.5, clipnorm=1.0)
        for step in grads:
            _apply(optimizer, step, variables)
        optimizer.finalize_variable_values(variables)
        finals.append([np.array(v) for v in variables])
    for plain, modified in zip(*finals, strict=True):
        # (PyTorch's plain AdamW runs a fused step: a rounding apart.)
        np.testing.assert_allclose(plain, modified, rtol=1e-6, atol=1e-9)
