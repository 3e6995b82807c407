"""CaptioningSolver: minibatch training of a captioning model, with the assignment's interface.

The solver samples minibatches of training captions (with replacement, as the assignment does), asks the model for
loss and gradients, and applies an update rule from :mod:`captionkit.optim` to every parameter, decaying the
learning rate by ``lr_decay`` after each epoch.

Beyond the assignment: a non-finite loss or gradient stops training with :class:`TrainingDivergedError` before it
reaches the parameters, and :meth:`CaptioningSolver.state_dict` / :meth:`CaptioningSolver.load_state_dict` capture
everything that an interrupted run needs to continue bit-identically (see :mod:`captionkit.checkpoint`).
"""
import copy

import numpy as np

from captionkit import optim
from captionkit.backend import runtime
from captionkit.checks import integer, number
from captionkit.data import sample_coco_minibatch

__all__ = ["CaptioningSolver", "TrainingDivergedError"]

_DATA_KEYS = ("train_captions", "train_image_idxs", "train_features", "train_urls")


class TrainingDivergedError(FloatingPointError):
    """The loss or a gradient became NaN or infinite; the parameters were not updated with it.

    ``iteration`` is 1-based (as the verbose output counts), ``quantity`` names the loss or the parameter whose
    gradient is bad; ``note`` adds what the caller knows (e.g. which checkpoint stays valid).
    """

    def __init__(self, iteration, epoch, quantity, value, note=""):
        self.iteration, self.epoch, self.quantity, self.value, self.note = iteration, epoch, quantity, value, note
        super().__init__(
            f"training diverged at iteration {iteration} (epoch {epoch + 1}): {quantity} is {value}; "
            "the parameters were not updated with it. Try a lower learning rate." + (f" {note}" if note else "")
        )


class CaptioningSolver:
    """Train ``model`` on ``data`` (the dictionary of :func:`captionkit.data.load_coco_data`).

    Options (as in the assignment): update_rule ('sgd', 'sgd_momentum', 'rmsprop', 'adam'), optim_config (initial
    hyperparameters for every parameter, e.g. ``{'learning_rate': 5e-3}``), lr_decay (multiplies the learning rate
    after each epoch), batch_size, num_epochs, print_every, verbose. Beyond the assignment: ``rng`` (a
    ``np.random.RandomState`` for minibatch sampling; default the global ``np.random``) and ``callback``, called
    after every iteration as ``callback(solver)`` so a caller can show progress or save checkpoints.
    Unknown options raise ValueError.
    """

    def __init__(self, model, data, **kwargs):
        self.model = model
        self.data = data
        self.update_rule_name = kwargs.pop("update_rule", "sgd")
        self.optim_config = dict(kwargs.pop("optim_config", {}))
        self.lr_decay = kwargs.pop("lr_decay", 1.0)
        self.batch_size = kwargs.pop("batch_size", 100)
        self.num_epochs = kwargs.pop("num_epochs", 10)
        self.print_every = kwargs.pop("print_every", 10)
        self.verbose = kwargs.pop("verbose", True)
        self.rng = kwargs.pop("rng", None)
        self.callback = kwargs.pop("callback", None)
        if kwargs:
            raise ValueError(f"unrecognized arguments: {', '.join(sorted(kwargs))}")
        if self.update_rule_name not in optim.UPDATE_RULES:
            raise ValueError(
                f"invalid update_rule {self.update_rule_name!r}; choose one of {', '.join(optim.UPDATE_RULES)}"
            )
        for key in _DATA_KEYS:
            if key not in data:
                raise ValueError(f"data has no {key!r}; pass the dictionary that load_coco_data returns")
        for name, value in (("batch_size", self.batch_size), ("num_epochs", self.num_epochs),
                            ("print_every", self.print_every)):
            integer(name, value)
        number("lr_decay", self.lr_decay, above=True)
        model.check_batch_fits(self.batch_size, data["train_captions"].shape[1])
        # The rule's arithmetic on the model's backend: Adam in one compiled pass over all parameters when compiled.
        self.update_rule = runtime(getattr(model, "backend", "numpy")).update_rule(self.update_rule_name)
        self._reset()

    def _reset(self):
        """Fresh bookkeeping and one optimiser state per parameter."""
        self.epoch = 0
        self.iteration = 0
        self.loss_history = []
        self.optim_configs = {name: dict(self.optim_config) for name in self.model.params}

    @property
    def iterations_per_epoch(self):
        return max(self.data["train_captions"].shape[0] // self.batch_size, 1)

    @property
    def num_iterations(self):
        return self.num_epochs * self.iterations_per_epoch

    def _step(self):
        """One update on one sampled minibatch; returns its loss."""
        captions, features, _ = sample_coco_minibatch(
            self.data, batch_size=self.batch_size, split="train", rng=self.rng
        )
        loss, grads = self._loss_and_grads(features, captions)
        self._check_finite(loss, grads)
        self.loss_history.append(loss)
        optim.update_all(self.update_rule, self.model.params, grads, self.optim_configs)
        return loss

    def _check_finite(self, loss, grads):
        """Raise TrainingDivergedError naming the loss or the first parameter whose gradient is not finite."""
        if not np.isfinite(loss):
            raise TrainingDivergedError(self.iteration + 1, self.epoch, "the loss", float(loss))
        for name in self.model.params:
            grad = grads[name]
            if not np.isfinite(grad).all():
                bad = grad[~np.isfinite(grad)].flat[0]
                raise TrainingDivergedError(self.iteration + 1, self.epoch, f"the gradient of {name}", bad)

    def _loss_and_grads(self, features, captions):
        """Loss and gradients of the whole minibatch; a data-parallel solver overrides this to split the work."""
        return self.model.loss(features, captions)

    def _sampling_rng(self):
        return np.random if self.rng is None else self.rng

    def state_dict(self):
        """A deep copy of the training state: ``epoch``, ``iteration``, ``loss_history`` (list of float),
        ``optim_configs`` (per parameter: hyperparameters and moments), ``rng_state`` (the minibatch sampler's
        ``get_state()`` tuple). Model parameters are not included; they live in ``model.params``."""
        return {
            "epoch": self.epoch,
            "iteration": self.iteration,
            "loss_history": [float(loss) for loss in self.loss_history],
            "optim_configs": copy.deepcopy(self.optim_configs),
            "rng_state": self._sampling_rng().get_state(),
        }

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned, so that training continues exactly where it stopped."""
        missing = set(self.model.params) - set(state["optim_configs"])
        if missing:
            raise ValueError(f"the optimiser state has no entry for the parameters {sorted(missing)}")
        self.epoch = int(state["epoch"])
        self.iteration = int(state["iteration"])
        self.loss_history = list(state["loss_history"])
        self.optim_configs = {name: copy.deepcopy(state["optim_configs"][name]) for name in self.model.params}
        self._sampling_rng().set_state(state["rng_state"])

    def train(self):
        """Run the remaining iterations of ``num_epochs`` epochs; returns ``loss_history``."""
        per_epoch = self.iterations_per_epoch
        while self.iteration < self.num_iterations:
            t = self.iteration
            loss = self._step()
            self.iteration += 1
            if self.verbose and t % self.print_every == 0:
                print("(Iteration %d / %d) loss: %f" % (t + 1, self.num_iterations, loss))
            if self.iteration % per_epoch == 0:
                self.epoch += 1
                for config in self.optim_configs.values():
                    config["learning_rate"] *= self.lr_decay  # the update rule has set its default by now
            if self.callback is not None:
                self.callback(self)
        return self.loss_history
