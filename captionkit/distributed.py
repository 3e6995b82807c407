"""Data-parallel training over MPI processes (mpi4py): one model replica per rank, gradients summed by Allreduce.

Launch K processes with ``mpiexec -n K``; every rank loads the same data and builds the same model. Each step,
every rank draws the same global minibatch from an identically seeded ``RandomState``, computes loss and gradients
on its own contiguous shard of it, and one buffer-based ``Allreduce`` over a single flat vector sums the shard
gradients (each pre-scaled by shard size / batch size, so the sum is the full-batch gradient). Every rank then
applies the identical update, so the replicas stay equal without ever sending parameters after the start.

mpi4py is optional (``pip install 'captionkit[mpi]'``). :func:`world` stands in for a single process when it is
absent, so callers can ask :func:`is_root` unconditionally.
"""
import os
import signal
import zlib
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from captionkit.solver import CaptioningSolver

__all__ = [
    "DistributedError",
    "DistributedSolver",
    "World",
    "abort_on_error",
    "agreed_stop",
    "coordinated_seed",
    "is_root",
    "local_world",
    "mpi_available",
    "root_first",
    "shard_bounds",
    "world",
]

INSTALL_HINT = "install it with `pip install 'captionkit[mpi]'` (mpi4py plus an MPI implementation)"

# Variables the common launchers set in every process they start: (rank, size).
_LAUNCHER_ENV = (
    ("PMI_RANK", "PMI_SIZE"),  # MPICH / Intel MPI (Hydra)
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),  # Open MPI
    ("PMIX_RANK", "PMIX_SIZE"),
)


class DistributedError(RuntimeError):
    """MPI is missing where it is needed, or the ranks of a job disagree on data, seeds or settings."""


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` in ``[0, size)``; ``comm`` is the mpi4py communicator, or None
    for the single-process stand-in."""

    rank: int
    size: int
    comm: object = None

    @property
    def is_root(self):
        return self.rank == 0


def mpi_available():
    """True when mpi4py is installed (its MPI library is loaded only by :func:`world`)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def _launcher_size():
    """The job size a launcher announced in the environment, or 1 when this process was not started by one."""
    for _, size_var in _LAUNCHER_ENV:
        value = os.environ.get(size_var, "")
        if value.isdigit():
            return int(value)
    return 1


def world(required=False):
    """The MPI world of this process (``MPI.COMM_WORLD``; importing mpi4py initialises MPI).

    Without mpi4py: a single-process ``World(0, 1)``, unless ``required`` or a launcher started several processes,
    which would otherwise each train on their own and overwrite each other's run; then DistributedError.
    """
    if not mpi_available():
        launched = _launcher_size()
        if required or launched > 1:
            why = f"this process is one of {launched} started by mpiexec" if launched > 1 else "distributed training"
            raise DistributedError(f"{why} needs mpi4py, which is not installed; {INSTALL_HINT}")
        return World(0, 1)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    _check_launcher_matches(comm.Get_size(), MPI.Get_library_version())
    return World(comm.Get_rank(), comm.Get_size(), comm)


def _check_launcher_matches(size, library):
    """Refuse an mpiexec of another MPI implementation than the library mpi4py loaded: then every process sees a
    world of its own (size 1) and would train alone, all of them writing the same run."""
    launched = _launcher_size()
    if launched > 1 and size != launched:
        name = library.strip().splitlines()[0].split(",")[0] if library.strip() else "unknown"
        raise DistributedError(
            f"mpiexec started {launched} processes, but the MPI library that mpi4py loaded ({name}) sees {size}: "
            "that mpiexec belongs to another MPI implementation. Use the mpiexec of the same MPI (after "
            "`pip install 'captionkit[mpi]'`: the one installed beside python)"
        )


def local_world():
    """``World(0, 1)`` for a process meant to train alone; DistributedError if mpiexec started it as one of several,
    which would train that many separate models side by side (the distributed flag was forgotten)."""
    launched = _launcher_size()
    if launched > 1:
        raise DistributedError(
            f"this process is one of {launched} started by mpiexec but was not asked to train distributed; they "
            f"would train {launched} separate models. Add --distributed (distributed=True) to train one model on all"
        )
    return World(0, 1)


def is_root():
    """True on rank 0 (and in a single process): the one process that writes checkpoints, metrics and progress."""
    return world().is_root


def shard_bounds(batch_size, rank, size):
    """The rows ``[lo, hi)`` of a global minibatch of ``batch_size`` that ``rank`` of ``size`` works on.

    Contiguous, disjoint, covering the batch, sizes differing by at most one.
    """
    if not 0 <= rank < size:
        raise ValueError(f"rank must be in [0, {size}), got {rank}")
    if batch_size < size:
        raise ValueError(f"a minibatch of {batch_size} cannot be split over {size} ranks; use batch_size >= {size}")
    return batch_size * rank // size, batch_size * (rank + 1) // size


def coordinated_seed(seed, comm):
    """The same seed on every rank: ``seed`` if given (checked to agree), else one rank 0 draws from the OS."""
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**32) if comm.Get_rank() == 0 else None
        return comm.bcast(seed, root=0)
    _require_agreement(comm, "seed", int(seed))
    return int(seed)


def _require_agreement(comm, what, value):
    """Raise DistributedError unless the integer ``value`` is the same on every rank of ``comm``."""
    from mpi4py import MPI

    local = np.array([value, -value], dtype=np.int64)
    extremes = np.empty_like(local)
    comm.Allreduce(local, extremes, op=MPI.MAX)
    if extremes[0] != -extremes[1]:
        raise DistributedError(
            f"the ranks disagree on the {what} (rank {comm.Get_rank()} has {value}); every rank must be started "
            "with the same arguments and data"
        )


def _data_fingerprint(data):
    """A checksum of the training split, to catch ranks that loaded different data (e.g. unseeded ``max_train``)."""
    crc = 0
    for key in ("train_captions", "train_image_idxs", "train_features"):
        array = np.ascontiguousarray(data[key])
        crc = zlib.crc32(repr((key, array.dtype.str, array.shape)).encode(), crc)
        crc = zlib.crc32(array.view(np.uint8).reshape(-1), crc)
    return crc


def _model_fingerprint(model):
    layout = sorted((name, value.shape, value.dtype.str) for name, value in model.params.items())
    return zlib.crc32(repr(layout).encode())


def _rng_fingerprint(rng):
    _, keys, pos, has_gauss, cached = rng.get_state()
    return zlib.crc32(keys.tobytes() + repr((pos, has_gauss, cached)).encode())


class DistributedSolver(CaptioningSolver):
    """A :class:`CaptioningSolver` whose every step is shared by all ranks of ``comm`` (default ``MPI.COMM_WORLD``).

    Takes the solver's options. ``batch_size`` is the global minibatch (at least the number of ranks); with the
    same ``batch_size`` and seed, K ranks follow the same trajectory as one process, up to floating-point summation
    order. ``rng`` None means a ``RandomState`` seeded by :func:`coordinated_seed`. At construction the ranks
    check that they hold the same data and RNG state, and take rank 0's parameters. Only rank 0 prints
    (``verbose``); the ``callback`` runs on every rank, so pass one that writes files on rank 0 only.
    """

    def __init__(self, model, data, comm=None, **kwargs):
        self.comm = world(required=True).comm if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        if kwargs.get("rng") is None:
            kwargs["rng"] = np.random.RandomState(coordinated_seed(None, self.comm))
        if self.rank != 0:
            kwargs["verbose"] = False
        super().__init__(model, data, **kwargs)
        shard_bounds(self.batch_size, 0, self.size)  # fails early on a batch too small to split
        _require_agreement(self.comm, "batch size", int(self.batch_size))
        _require_agreement(self.comm, "training data (checksum of captions, image indices and features)",
                           _data_fingerprint(data))
        _require_agreement(self.comm, "minibatch RNG state (seed)", _rng_fingerprint(self.rng))
        _require_agreement(self.comm, "model (parameter names, shapes and dtype)", _model_fingerprint(model))
        self._build_buffer()
        self.broadcast_params()

    def _build_buffer(self):
        """One flat buffer, in the model's dtype, holding every gradient (as views) followed by the loss."""
        params = self.model.params
        dtypes = {value.dtype for value in params.values()}
        if len(dtypes) != 1:
            raise DistributedError(f"all parameters must share one dtype to travel in one buffer, got {dtypes}")
        total = sum(value.size for value in params.values())
        self._buffer = np.zeros(total + 1, dtype=dtypes.pop())
        self._grad_views, offset = {}, 0
        for name in sorted(params):  # the same order on every rank, whatever the dict order
            shape, size = params[name].shape, params[name].size
            self._grad_views[name] = self._buffer[offset : offset + size].reshape(shape)
            offset += size

    def broadcast_params(self):
        """Overwrite every rank's parameters with rank 0's (after construction or loading a checkpoint there)."""
        for name in sorted(self.model.params):
            value = np.ascontiguousarray(self.model.params[name])
            self.comm.Bcast(value, root=0)
            self.model.params[name] = value

    def load_state_dict(self, state):
        """Resume: every rank takes rank 0's training ``state`` and parameters (other ranks may pass None), so a
        job restarts from rank 0's checkpoint even where the other ranks cannot read it."""
        state = self.comm.bcast(state if self.rank == 0 else None, root=0)
        super().load_state_dict(state)
        self.broadcast_params()

    def _loss_and_grads(self, features, captions):
        """Global loss and gradients of the minibatch, computed on this rank's shard and summed over all ranks.

        The returned gradients are views into the communication buffer, valid until the next call.
        """
        from mpi4py import MPI

        batch_size = captions.shape[0]
        lo, hi = shard_bounds(batch_size, self.rank, self.size)
        loss, grads = self.model.loss(features[lo:hi], captions[lo:hi])
        # Each shard's loss and gradients are means over its rows; weighting by its share of the batch makes the
        # sum over ranks the mean over the whole minibatch.
        share = (hi - lo) / batch_size
        for name, view in self._grad_views.items():
            np.multiply(grads[name], share, out=view)
        self._buffer[-1] = loss * share
        self.comm.Allreduce(MPI.IN_PLACE, self._buffer, op=MPI.SUM)
        return self._buffer[-1], self._grad_views


EARLY_STOP = "early stop"
_EARLY_STOP_CODE = 1024  # above every signal number, so an early stop agreed on wins over none


def agreed_stop(solver, received):
    """The reason to stop training on: ``received`` (a signal name such as ``"SIGTERM"``, :data:`EARLY_STOP`, or
    None) of this process, or for a :class:`DistributedSolver` the one any rank gave (the higher-numbered if
    several; an early stop is decided on rank 0, which alone validates).

    Collective for a DistributedSolver: every rank must call it after every iteration. mpiexec forwards Ctrl-C and
    SIGTERM to all ranks, but not at the same instant; stopping only where the signal had already arrived would
    leave the other ranks waiting forever in their next Allreduce.
    """
    if not isinstance(solver, DistributedSolver):
        return received
    from mpi4py import MPI

    code = 0 if received is None else _EARLY_STOP_CODE if received == EARLY_STOP else signal.Signals[received].value
    flag = np.array([code], dtype=np.int64)
    solver.comm.Allreduce(MPI.IN_PLACE, flag, op=MPI.MAX)
    if not flag[0]:
        return None
    return EARLY_STOP if flag[0] == _EARLY_STOP_CODE else signal.Signals(int(flag[0])).name


@contextmanager
def root_first(world):
    """Run the block on rank 0 before the other ranks start it, e.g. to build a cache they then only read.

    If the block fails on rank 0 the others keep waiting: use it inside :func:`abort_on_error`."""
    if world.comm is not None and world.rank != 0:
        world.comm.Barrier()
    yield
    if world.comm is not None and world.rank == 0:
        world.comm.Barrier()


@contextmanager
def abort_on_error(world, report):
    """Run the block; if it raises on one rank of a multi-rank job, ``report(message)`` and abort the whole job.

    Without this, a rank that fails leaves the others blocked forever in their next Allreduce. ``MPI.Abort`` makes
    the launcher end every rank (exit status 1), so the job stops with the failing rank's message.
    """
    try:
        yield
    except BaseException as exc:
        if world.size > 1 and not (isinstance(exc, SystemExit) and exc.code in (0, None)):
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            report(f"rank {world.rank} of {world.size} failed ({detail}); aborting all ranks")
            world.comm.Abort(1)
        raise
