"""Numpy references of Keras's optimizers, plain and modified (WC §III-A.3).

Ground truth for tests/test_optimizer_options.py: every formula is written
out here in float64, independently of Keras and keras_wc, from the Keras
3 sources' update rules and the semantics of `keras_wc.optimizers`:

* a plain optimizer treats every variable alike: decoupled decay
  `x ← x − η·λ·x`, then its step from the (clipped) gradient;
* a modified optimizer, on a WC/PP kernel `v`: `g_w = g_v/Ψ'(v)` is
  accumulated, clipped and fed to the optimizer's state; the step is
  multiplied by `Ψ'(v)`; the decay is `η·λ·Ψ'(v)·Ψ(v)` (fixed a, b) or
  `η·λ·v` (learnable); learnable `a, b` are never decayed; the EMA of a
  fixed-(a, b) kernel is that of `Ψ(v)`.

The test problem (`DenseProblem`) is one `WCDense(3)` on 5 inputs with a
bias and the mean squared error on a fixed batch; its gradients are
computed here in closed form.
"""

import numpy as np


class DenseProblem:
    """`y ≈ x·Ψ(v) + bias`, MSE; parameters in a dict of float64 arrays.

    Args:
        compander: "arctan" (`a·arctan(v/b)`) or "powerprop" (`v·|v|`).
        learnable: whether `a, b` are parameters too ("fine").
        a, b: the (initial) scales.
    """

    def __init__(self, compander="arctan", learnable=False, a=0.8, b=0.6,
                 seed=0):
        rng = np.random.default_rng(seed)
        self.compander = compander
        self.learnable = learnable
        self.a0, self.b0 = a, b
        self.x = rng.standard_normal((8, 5))
        self.y = rng.standard_normal((8, 3))
        self.init = {
            "v": rng.uniform(-1.2, 1.2, (5, 3)),
            "bias": rng.normal(0.0, 0.1, (3,)),
        }
        if learnable:
            self.init.update(a=np.float64(a), b=np.float64(b))

    def names(self):
        """Parameter names, in the order of the layer's variables."""
        return list(self.init)

    def scales(self, params):
        if self.learnable:
            return params["a"], params["b"]
        return self.a0, self.b0

    def psi(self, params, v=None):
        v = params["v"] if v is None else v
        if self.compander == "powerprop":
            return v * np.abs(v)
        a, b = self.scales(params)
        return a * np.arctan(v / b)

    def dpsi(self, params, v=None):
        v = params["v"] if v is None else v
        if self.compander == "powerprop":
            return 2 * np.abs(v)
        a, b = self.scales(params)
        return a * b / (b * b + v * v)

    def inverse(self, params, w):
        if self.compander == "powerprop":
            return np.sign(w) * np.sqrt(np.abs(w))
        a, b = self.scales(params)
        return b * np.tan(w / a)

    def grads(self, params):
        """∂L/∂ of every parameter (L = mean of the squared errors)."""
        err = self.x @ self.psi(params) + params["bias"] - self.y
        g_out = 2 * err / err.size
        g_w = self.x.T @ g_out
        grads = {"v": g_w * self.dpsi(params), "bias": g_out.sum(axis=0)}
        if self.learnable:
            a, b = self.scales(params)
            v = params["v"]
            grads["a"] = np.sum(g_w * np.arctan(v / b))
            grads["b"] = np.sum(g_w * (-a * v / (b * b + v * v)))
        return grads

    def role(self, name):
        """"kernel", "scale" or "plain"."""
        if name == "v":
            return "kernel"
        return "scale" if name in ("a", "b") else "plain"


# -- the optimizers' steps: (gradient, state, t) → increment --------------


def _sgd(hp):
    momentum, nesterov = hp.get("momentum", 0.0), hp.get("nesterov", False)

    def step(g, state, t, lr):
        if momentum == 0:
            return -lr * g
        m = state.setdefault("m", np.zeros_like(g))
        m[...] = momentum * m - lr * g
        return momentum * m - lr * g if nesterov else m.copy()

    return step


def _rmsprop(hp):
    rho, momentum = hp.get("rho", 0.9), hp.get("momentum", 0.0)
    eps, centered = hp.get("epsilon", 1e-7), hp.get("centered", False)

    def step(g, state, t, lr):
        vel = state.setdefault("vel", np.zeros_like(g))
        vel[...] = rho * vel + (1 - rho) * g * g
        if centered:
            avg = state.setdefault("avg", np.zeros_like(g))
            avg[...] = rho * avg + (1 - rho) * g
            denominator = vel - avg * avg + eps
        else:
            denominator = vel + eps
        increment = lr * g / np.sqrt(denominator)
        if momentum > 0:
            mom = state.setdefault("mom", np.zeros_like(g))
            mom[...] = momentum * mom + increment
            return -mom.copy()
        return -increment

    return step


def _adagrad(hp):
    initial = hp.get("initial_accumulator_value", 0.1)
    eps = hp.get("epsilon", 1e-7)

    def step(g, state, t, lr):
        acc = state.setdefault("acc", np.full_like(g, initial))
        acc += g * g
        return -lr * g / np.sqrt(acc + eps)

    return step


def _adam(hp):
    b1, b2 = hp.get("beta_1", 0.9), hp.get("beta_2", 0.999)
    eps = hp.get("epsilon", 1e-7)

    def step(g, state, t, lr):
        m = state.setdefault("m", np.zeros_like(g))
        s = state.setdefault("s", np.zeros_like(g))
        alpha = lr * np.sqrt(1 - b2 ** (t + 1)) / (1 - b1 ** (t + 1))
        m += (g - m) * (1 - b1)
        s += (g * g - s) * (1 - b2)
        return -m * alpha / (np.sqrt(s) + eps)

    return step


def _lion(hp):
    b1, b2 = hp.get("beta_1", 0.9), hp.get("beta_2", 0.99)

    def step(g, state, t, lr):
        m = state.setdefault("m", np.zeros_like(g))
        increment = -lr * np.sign(m * b1 + g * (1 - b1))
        m[...] = m * b2 + g * (1 - b2)
        return increment

    return step


STEPS = {
    "SGD": _sgd,
    "RMSprop": _rmsprop,
    "Adagrad": _adagrad,
    "Adam": _adam,
    "AdamW": _adam,
    "Lion": _lion,
}


def clip_gradients(grads, hp):
    """Keras's clipnorm, global_clipnorm or clipvalue (`hp`)."""
    if hp.get("clipnorm"):
        c = hp["clipnorm"]
        return {
            k: g * c / max(np.sqrt(np.sum(g * g)), c) for k, g in grads.items()
        }
    if hp.get("global_clipnorm"):
        c = hp["global_clipnorm"]
        norm = np.sqrt(sum(np.sum(g * g) for g in grads.values()))
        return {k: g * c * min(1 / norm, 1 / c) for k, g in grads.items()}
    if hp.get("clipvalue"):
        c = hp["clipvalue"]
        return {k: np.clip(g, -c, c) for k, g in grads.items()}
    return grads


class Reference:
    """One optimizer on a `DenseProblem`, plain or modified.

    Args:
        problem: the `DenseProblem`.
        name: a key of `STEPS`.
        modified: the modified form (else Keras's plain optimizer).
        hp: the optimizer's arguments (`learning_rate`, `weight_decay`,
            `clipnorm`, `use_ema`, `ema_momentum`,
            `gradient_accumulation_steps`, and the optimizer's own).
        no_decay: parameter names excluded from weight decay.
    """

    def __init__(self, problem, name, modified=True, no_decay=(), **hp):
        self.problem = problem
        self.modified = modified
        self.hp = hp
        self.lr = hp.get("learning_rate", 0.01)
        self.step_fn = STEPS[name](hp)
        if name == "AdamW":
            hp.setdefault("weight_decay", 0.004)
        self.no_decay = set(no_decay)
        self.state = {k: {} for k in problem.names()}
        self.params = {k: np.array(v, "float64")
                       for k, v in problem.init.items()}
        self.calls = 0
        self.updates = 0
        self.accumulated = None
        self.average = None

    def _effective(self, name, g):
        if self.modified and self.problem.role(name) == "kernel":
            scale = self.problem.dpsi(self.params)
            return np.where(scale > 0, g / np.where(scale > 0, scale, 1), 0)
        return g

    def apply(self, grads):
        """One `optimizer.apply(grads)` call (grads: dict of arrays)."""
        grads = {k: self._effective(k, np.asarray(g, "float64"))
                 for k, g in grads.items()}
        k = self.hp.get("gradient_accumulation_steps")
        update = True
        if k:
            if self.accumulated is None:
                self.accumulated = {n: np.zeros_like(g)
                                    for n, g in grads.items()}
            update = (self.calls + 1) % k == 0
            if update:
                grads = {n: (g + self.accumulated[n]) / k
                         for n, g in grads.items()}
                self.accumulated = None
            else:
                for n, g in grads.items():
                    self.accumulated[n] += g
        if update:
            self._update(clip_gradients(grads, self.hp))
        iterations = self.calls // k if k else self.calls
        if self.hp.get("use_ema"):
            self._ema(iterations)
        self._constrain()
        self.calls += 1

    def _update(self, grads):
        p, problem = self.params, self.problem
        wd = self.hp.get("weight_decay")
        t = self.updates
        # Ψ, Ψ' with this step's (a, b): kernels are updated first.
        w0, scale = problem.psi(p), problem.dpsi(p)
        new = {}
        for name, g in grads.items():
            step = self.step_fn(g, self.state[name], t, self.lr)
            x = p[name]
            role = problem.role(name)
            decays = wd is not None and name not in self.no_decay
            if self.modified and role == "kernel":
                value = x + scale * step
                if decays:
                    if problem.learnable:
                        value = value - self.lr * wd * x
                    else:
                        value = value - self.lr * wd * scale * w0
            else:
                if decays and not (self.modified and role == "scale"):
                    x = x - self.lr * wd * x
                value = x + step
            new[name] = value
        self.params = new
        self.updates += 1

    def _constrain(self):
        # Keras applies constraints after the step and the EMA update.
        for name in self.params:
            if self.problem.role(name) == "scale":  # the MinValue constraint
                self.params[name] = np.maximum(self.params[name], 1e-3)

    def _ema(self, iterations):
        momentum = self.hp.get("ema_momentum", 0.99) if iterations else 0.0
        if self.average is None:
            self.average = {n: np.zeros_like(x)
                            for n, x in self.params.items()}
        effective = (self.modified and not self.problem.learnable)
        for name, x in self.params.items():
            avg = self.average[name]
            if effective and self.problem.role(name) == "kernel":
                mean = momentum * self.problem.psi(self.params, avg) + (
                    1 - momentum
                ) * self.problem.psi(self.params, x)
                self.average[name] = self.problem.inverse(self.params, mean)
            else:
                self.average[name] = momentum * avg + (1 - momentum) * x
