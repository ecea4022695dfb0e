"""The seed loop: everything `python -m train` does, importable.

`run(config)` trains `config.seeds` networks (seeds 0, 1, ...) and writes
into `config.out`:

    results.json           per-seed test accuracy, mean ± std, config, versions
    config.json            the resolved config
    seed-<k>/history.csv   per-epoch loss/accuracy (keras.callbacks.CSVLogger)
    seed-<k>/tensorboard/  TensorBoard logs
    seed-<k>/weights.json  weight percentiles per epoch (WeightDistribution)
    seed-<k>/weights.png   their plot (WC paper Fig. 3/4); scales.png for
                           learnable a, b
    seed-<k>/best.weights.h5, best.json   the best-on-validation weights
    seed-<k>/export/, export.keras   with `--export`: the tested model,
                           folded (SavedModel and Keras file)

With `--init-from` each seed starts from a trained model and its record also
holds `initial_test_acc`, the test accuracy of that start (after
`--method`'s conversion, which keeps the function); with `--export`,
`export_test_acc` is the accuracy of the exported, folded model.

A run is resumable: each seed backs up its state after every epoch
(`keras.callbacks.BackupAndRestore` in `seed-<k>/backup/`) and seeds already
in `results.json` are skipped, so running the same command again after an
interruption finishes with the result an uninterrupted run would have had.
Everything random is tied to the seed: `keras.utils.set_random_seed`, TF op
determinism, the data pipeline's own seeds, the random state of dropout and
noise layers reset at every epoch from `(seed, epoch)`, and a resumed run
skips the data batches of the epochs already done.

Nothing is written before the paths, any earlier `results.json` and the
first seed's data and model are found good. The parts live in their own
modules: `devices` (devices, strategy, which process writes), `assembly`
(data, model, optimizer), `callbacks`, `resume` (bookkeeping of an
interrupted seed), `results` (results.json, config.json) and `multiworker`
(a Keras workaround under `MultiWorkerMirroredStrategy`).
"""

import os
import sys
import time

import models
from train import assembly, multiworker, paths, results, resume
from train.callbacks import plot, seed_callbacks
from train.devices import is_chief, make_strategy, output_dirs, setup_devices


def run(config, *, callbacks=(), build=models.build, log=print):
    """Trains every seed of `config` and writes the outputs (module doc).

    Seeds already recorded in `OUT/results.json` are skipped; an interrupted
    seed resumes from its last completed epoch.

    Args:
        config: a resolved `Config` (`Config.resolve()`).
        callbacks: extra Keras callbacks for every seed.
        build: the model builder (see `assembly.build_model`).
        log: where progress lines go (chief only).

    Returns:
        The content of results.json.

    Raises:
        ConfigError: a bad path, `OUT` holds results of a different
            configuration or a malformed results.json, or the data or model
            cannot be set up; raised before anything is written.
    """
    paths.check_config(config)
    setup_devices(config)
    strategy = make_strategy(config)
    chief = is_chief(strategy)
    out = config.output_dir()
    with output_dirs(out, strategy) as (directory, backup_root):
        content = results.start(config, directory)
        done = {record["seed"] for record in content["seeds"]}
        say = log if chief else (lambda message: None)
        for seed in range(config.seeds):
            if seed in done:
                say(f"seed {seed}: already done in {directory}, skipped")
                continue
            say(
                f"== {config.run_name()}: seed {seed + 1}/{config.seeds} "
                f"(model {config.model}, data {config.dataset}, method "
                f"{config.method}) -> {directory}"
            )
            start = time.time()
            assembled = assembly.assemble(
                config, seed, strategy=strategy, build=build
            )
            # Written before training, so that an interrupted run in this
            # directory cannot be resumed with another configuration.
            results.save(directory, config, content)
            record = train_seed(
                config,
                seed,
                assembled,
                strategy=strategy,
                directory=os.path.join(directory, f"seed-{seed}"),
                backup_dir=os.path.join(
                    backup_root, f"seed-{seed}", "backup"
                ),
                chief=chief,
                callbacks=callbacks,
                log=say,
            )
            record["wall_time_s"] = round(time.time() - start, 2)
            say(
                f"seed {seed}: test accuracy {100 * record['test_acc']:.2f}% "
                f"(best val {_percent(record['best_val_acc'])} at epoch "
                f"{record['best_epoch']}, {record['wall_time_s']:.0f} s)"
            )
            content["seeds"].append(record)
            results.summarize(content, config)
            results.save(directory, config, content)
        content["output_dir"] = os.path.abspath(out)
        return content


def train_seed(
    config,
    seed,
    assembled,
    *,
    strategy,
    directory,
    backup_dir=None,
    chief=True,
    callbacks=(),
    log=print,
):
    """Trains and tests the network of one seed; returns its record for
    results.json (without `wall_time_s`, which `run` adds).

    Args:
        config: a resolved `Config`.
        seed: the seed (an integer >= 0).
        assembled: its data and compiled model (`assembly.assemble`).
        strategy: the `tf.distribute` strategy.
        directory: the seed's directory (created).
        backup_dir: where `BackupAndRestore` keeps the state; default
            `directory/backup`.
        chief: whether this process writes logs and plots.
        callbacks: extra Keras callbacks, run after the runner's own (after
            the epoch's backup).
        log: where progress lines go.

    Returns:
        `{"seed", "test_acc", "test_loss", "best_val_acc", "best_epoch",
        "epochs", "num_train", "resumed_from_epoch"}`, with
        `initial_test_acc` (`--init-from`) and `export_test_acc`
        (`--export`).
    """
    bundle, model, steps = assembled
    os.makedirs(directory, exist_ok=True)
    backup_dir = backup_dir or os.path.join(directory, "backup")
    initial_epoch = resume.backed_up_epoch(backup_dir)
    resume.prepare(directory, initial_epoch)
    own = seed_callbacks(
        config,
        seed,
        directory,
        backup_dir,
        initial_epoch=initial_epoch,
        chief=chief,
        log=log,
    )
    if initial_epoch:
        log(f"seed {seed}: resuming after epoch {initial_epoch}")
    # One endless stream, `steps` batches per epoch: epoch e reads batches
    # [e·steps, (e+1)·steps), so a resumed run skips exactly the batches the
    # interrupted one used.
    train_data = bundle.train.repeat().skip(initial_epoch * steps)
    extra = {}
    with multiworker.patched(model, strategy, bundle.train):
        if config.init_from is not None:
            # Before `fit`: a resumed run restores its backup in `fit`.
            _, extra["initial_test_acc"] = model.evaluate(
                bundle.test, verbose=0
            )
        model.fit(
            train_data,
            epochs=config.epochs,
            steps_per_epoch=steps,
            initial_epoch=initial_epoch,
            validation_data=bundle.val,
            callbacks=own.callbacks + list(callbacks),
            shuffle=False,
            verbose=_verbosity(config, chief),
        )
        best = own.best_weights.best
        if best is not None:
            model.load_weights(own.best_weights.weights_path)
        test_loss, test_acc = model.evaluate(bundle.test, verbose=0)
    if chief:
        plot(own.recorder, directory)
        if config.export:
            extra["export_test_acc"] = export_seed(
                model, config, bundle, os.path.join(directory, EXPORT_DIR)
            )
    return {
        "seed": seed,
        "test_acc": float(test_acc),
        "test_loss": float(test_loss),
        "best_val_acc": best["val_accuracy"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "epochs": config.epochs,
        "num_train": bundle.num_train,
        "resumed_from_epoch": initial_epoch,
        **{key: float(value) for key, value in extra.items()},
    }


# Where `--export` writes a seed's folded model (and `EXPORT_DIR.keras`).
EXPORT_DIR = "export"


def export_seed(model, config, bundle, path):
    """Folds and exports `model` to `path` (SavedModel) and `path.keras`
    (`keras_wc.export`, replacing an earlier export), and returns the test
    accuracy of the folded model, which holds only built-in Keras layers.
    """
    import keras_wc

    folded = keras_wc.export(model, path, overwrite=True)
    # Only to evaluate: loss and metrics as in training, no optimizer state.
    assembly.compile_model(folded, config, "sgd")
    _, accuracy = folded.evaluate(bundle.test, verbose=0)
    return accuracy


def _verbosity(config, chief):
    if not chief:
        return 0
    if config.verbose != "auto":
        return int(config.verbose)
    return 1 if sys.stdout.isatty() else 2


def _percent(value):
    return "–" if value is None else f"{100 * value:.2f}%"
