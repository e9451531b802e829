"""Callbacks the CLI always installs.

- :class:`JsonlPredictionWriter`: ``predict`` output as JSON lines.
- :class:`ReproducibleRNG`: per-rank seeding at the start of training and the global RNG states (torch, CUDA,
  numpy, python) in every checkpoint, restored on resume: Lightning restores neither.
- :class:`GracefulInterrupt`: SIGTERM, or a first Ctrl-C, on any rank stops every rank at the next step boundary;
  ``fit`` writes one resumable ``last.ckpt``.
- :class:`MidEpochStop`: a run that stopped part-way through an epoch resumes part-way through it.
- :class:`StepProgressBar`: the console's training bar, in optimizer steps, with the reward and validation JSD.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import threading
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import _update_n
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

log = logging.getLogger(__name__)


class JsonlPredictionWriter(BasePredictionWriter):
    """``predict`` writes one JSON object per example: uid, probs (source label order), predicted_label, human
    distribution and, when sampling, the sampled answers. One file per rank under DDP (``.rank1`` ...)."""

    def __init__(self, path: Optional[str] = None):
        super().__init__(write_interval="batch")
        self.path = path
        self._file = None

    def _output_path(self, trainer) -> Path:
        path = Path(self.path) if self.path else Path(trainer.log_dir or ".") / "predictions.jsonl"  # the CLI sets it
        if trainer.world_size > 1 and trainer.global_rank > 0:
            path = path.with_suffix(f".rank{trainer.global_rank}.jsonl")
        return path

    def on_predict_start(self, trainer, pl_module) -> None:
        path = self._output_path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for row in prediction:
            self._file.write(json.dumps(row) + "\n")

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._file is not None:
            self._file.close()
            pl_module.print(f"predictions written to {self._output_path(trainer)}")
            self._file = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A stopped or failed ``predict`` leaves no partial file that could pass for a whole one."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._output_path(trainer).unlink(missing_ok=True)


# -- RNG state ----------------------------------------------------------------------------------------------------------
def capture_rng_state() -> dict[str, torch.Tensor]:
    """This process's global RNG states as plain tensors (checkpoint-safe under ``torch.load(weights_only=True)``)."""
    _, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    _, python_state, python_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": torch.tensor([int(pos), int(has_gauss)], dtype=torch.int64),
        "numpy_gauss": torch.tensor([float(cached_gauss)], dtype=torch.float64),
        "python": torch.tensor(python_state, dtype=torch.int64),
        "python_gauss": torch.tensor([math.nan if python_gauss is None else float(python_gauss)], dtype=torch.float64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, torch.Tensor]) -> None:
    # clone(): a rank's row of the gathered states is a view at a storage offset, and torch (2.13, CPU) segfaults
    # in set_rng_state on such a view (torch.set_rng_state(torch.stack([s, s])[1]))
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8).clone())
    pos, has_gauss = (int(x) for x in state["numpy_pos"].tolist())
    np.random.set_state(("MT19937", state["numpy_keys"].cpu().numpy().astype(np.uint32), pos, has_gauss,
                         float(state["numpy_gauss"])))
    python_gauss = float(state["python_gauss"])
    random.setstate((3, tuple(int(x) for x in state["python"].tolist()),
                     None if math.isnan(python_gauss) else python_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu().to(torch.uint8).clone())


def seed_process(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python without touching ``PL_GLOBAL_SEED``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class ReproducibleRNG(Callback):
    """Rollouts seeded differently on every rank, reproducibly, and resumed exactly.

    ``seed_everything`` (the CLI's ``seed_everything``) gives every rank the same seed, and Lightning's DDP set-up
    re-seeds each rank with it: every rank would draw the same random numbers for its rollouts. At the start of
    training this re-seeds rank r with ``seed + r`` (when a seed was set), after the model is built and
    wrapped, so parameter initialisation is unaffected (DDP broadcasts rank 0's anyway).

    Checkpoints carry every rank's torch/CUDA/numpy/python RNG state (gathered; tensors only); a resumed run
    restores its rank's state at the start of training, after Lightning's own set-up has consumed randomness, so
    the continued run draws the same numbers as an uninterrupted one. A resume with a different world size re-seeds
    instead (with a warning).
    """

    def __init__(self, seed_by_rank: bool = True):
        self.seed_by_rank = seed_by_rank
        self._loaded: Optional[dict] = None
        self._trainer = None

    def state_dict(self) -> dict:
        state = capture_rng_state()
        world_size = self._world_size()
        if world_size > 1:  # every rank calls save_checkpoint; only rank 0 writes the file
            strategy = self._trainer.strategy
            device = strategy.root_device
            state = {k: strategy.all_gather(v.to(device)).cpu() for k, v in state.items()}
        else:
            state = {k: v.unsqueeze(0) for k, v in state.items()}
        return {"world_size": world_size, "rng": state}

    def load_state_dict(self, state_dict: dict) -> None:
        self._loaded = state_dict

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def _world_size(self) -> int:
        trainer = self._trainer
        if trainer is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
            return 1
        return trainer.world_size

    def on_train_start(self, trainer, pl_module) -> None:
        loaded, self._loaded = self._loaded, None
        if loaded is not None and int(loaded.get("world_size", 1)) == trainer.world_size:
            restore_rng_state({k: v[trainer.global_rank] for k, v in loaded["rng"].items()})
            return
        if loaded is not None:
            rank_zero_warn(f"the checkpoint's RNG states are for {loaded.get('world_size')} processes, this run has "
                           f"{trainer.world_size}: re-seeding instead of restoring (rollouts will differ)")
        seed = os.environ.get("PL_GLOBAL_SEED")
        if seed is not None and self.seed_by_rank:
            seed_process(int(seed) + trainer.global_rank)


# -- graceful interruption ------------------------------------------------------------------------------------------
class GracefulInterrupt(Callback):
    """SIGTERM (schedulers, ``kill``) or a first Ctrl-C, on any rank or on all: every rank stops at the next step
    boundary, ``fit`` writes one resumable ``last.ckpt``, and the process exits 143 (SIGTERM) or 130 (Ctrl-C).

    The signal handler only records the signal. The ranks agree at the end of each training step (an all-reduce of
    the recorded signal, so a signal that reached rank 1 only stops rank 0 too), and raise Lightning's
    ``SIGTERMException`` together. Lightning's own SIGTERM handler is replaced while a trainer runs: it calls a
    collective from inside the handler, which hangs when the signal reaches a rank other than 0 (rank 1 waits in
    its broadcast while rank 0 waits in the gradient all-reduce).

    Where a stop takes effect: in ``fit``, after the current optimizer step, or at the end of a validation that is
    running (a half-done validation would leave half its metrics); in ``validate``/``test``/``predict`` and the
    CLI's validations before and after ``fit``, after the current batch on one process and at the end of the pass
    under DDP (ranks can hold different numbers of evaluation batches, so there is no common batch boundary).

    What ``fit`` saves: the full state through the ``checkpoint`` callback's ``last.ckpt`` (so a resumed run keeps
    writing that one file); nothing when no step was taken since the run started (a resumed run's checkpoint
    stays the newest state). Nothing is saved for other exceptions: after ``NonFiniteTrainingError`` the last good
    checkpoint stays as it is. A second Ctrl-C aborts at once without saving, because it can land half-way through
    an update.

    :meth:`install` keeps the handler in place between trainer runs too (the CLI installs it for the whole
    subcommand), so a signal during set-up, export or between the validations is acted on, not lost.
    """

    def __init__(self, catch_sigint: bool = True):
        self.catch_sigint = catch_sigint
        self.requested: Optional[int] = None  # the signal this process received, not yet acted on
        self.signum: Optional[int] = None  # the signal that stopped the run (agreed by every rank)
        self.saved_path: Optional[str] = None
        self.aborted = False  # a second Ctrl-C: stopped at once, nothing saved
        self._start_step = 0
        self._installed: dict[int, object] = {}

    @property
    def exit_code(self) -> Optional[int]:
        """The shell's convention for a process ended by a signal (130 for SIGINT, 143 for SIGTERM), when one
        stopped the run."""
        return 128 + int(self.signum) if self.signum is not None else None

    @property
    def stopped_by(self) -> str:
        return "Ctrl-C" if self.signum == signal.SIGINT else "SIGTERM"

    # -- handlers ------------------------------------------------------------------------------------------------
    def _signals(self) -> tuple[int, ...]:
        return (signal.SIGTERM, signal.SIGINT) if self.catch_sigint else (signal.SIGTERM,)

    def install(self) -> None:
        """Record SIGTERM / Ctrl-C from now until :meth:`uninstall` (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self._signals():
            self._installed.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, self._on_signal)

    def uninstall(self) -> None:
        for signum, handler in self._installed.items():
            signal.signal(signum, handler)
        self._installed = {}

    def _take_signals(self) -> None:
        """Replace the handler Lightning installed for this trainer run; its teardown restores the one it found."""
        if threading.current_thread() is threading.main_thread():
            for signum in self._signals():
                signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.requested == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt  # the second Ctrl-C: abort now
        if signum == signal.SIGINT:
            rank_zero_info("\nCtrl-C: stopping at the next step boundary (press Ctrl-C again to abort without saving)")
        self.requested = max(int(signum), int(self.requested or 0))

    def _stop_if_requested(self, trainer) -> None:
        """Raise ``SIGTERMException`` on every rank when any rank received a signal (a collective under DDP)."""
        value = int(self.requested or 0)
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            agreed = torch.tensor([value], device=trainer.strategy.root_device)
            torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MAX)
            value = int(agreed.item())
        if value:
            self.signum, self.requested = value, None
            raise SIGTERMException()

    def _stop_after_batch(self, trainer) -> None:
        if trainer.world_size == 1:
            self._stop_if_requested(trainer)

    # -- where the ranks agree ----------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        self._take_signals()
        self.signum, self.aborted, self.saved_path = None, False, None
        self._start_step = trainer.global_step
        self._stop_if_requested(trainer)  # a signal during set-up: stop before the first step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._stop_if_requested(trainer)

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        self._take_signals()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._take_signals()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            self._stop_after_batch(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        try:
            self._stop_if_requested(trainer)
        except SIGTERMException:
            callback = trainer.checkpoint_callback
            if trainer.state.fn == TrainerFn.FITTING and isinstance(callback, ModelCheckpoint):
                # checkpoint callbacks run after this one: let this validation's save (best, last) happen first
                callback.on_validation_end(trainer, pl_module)
            raise

    def on_test_start(self, trainer, pl_module) -> None:
        self._take_signals()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._stop_after_batch(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        self._stop_if_requested(trainer)

    def on_predict_start(self, trainer, pl_module) -> None:
        self._take_signals()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._stop_after_batch(trainer)

    def on_predict_end(self, trainer, pl_module) -> None:
        self._stop_if_requested(trainer)

    # -- what is saved -------------------------------------------------------------------------------------------
    @staticmethod
    def last_checkpoint_path(trainer) -> Path:
        callback = trainer.checkpoint_callback
        if callback is not None and callback.dirpath:
            name = (callback.CHECKPOINT_NAME_LAST or "last") + callback.FILE_EXTENSION
            return Path(callback.dirpath) / name
        return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.signum, self.aborted = signal.SIGINT, True
            return
        if not isinstance(exception, SIGTERMException) or self.signum is None:
            return
        if trainer.state.fn != TrainerFn.FITTING:
            return  # evaluation: nothing to save; the CLI says which pass was stopped
        step = trainer.global_step
        if step == self._start_step:
            rank_zero_info(f"interrupted by {self.stopped_by} at step {step}, before any step of this run: no "
                           f"checkpoint written (exit status {self.exit_code})")
            return
        path = self._save(trainer)
        self.saved_path = str(path)
        rank_zero_info(f"interrupted by {self.stopped_by} at step {step}: resumable checkpoint {path}; continue "
                       f"with the same command and --ckpt_path last (exit status {self.exit_code})")

    def _save(self, trainer) -> Path:
        """The full resumable state into ``last.ckpt``, through the checkpoint callback when it keeps one, so that a
        resumed run knows the file and keeps writing it (not ``last-v1.ckpt`` beside it)."""
        callback = trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint) and callback.save_last is True and callback.dirpath:
            saved_now = callback._last_global_step_saved == trainer.global_step and callback.last_model_path
            if not saved_now:  # (a validation's save at this very step already wrote it)
                callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
            return Path(callback.last_model_path)
        path = self.last_checkpoint_path(trainer)
        if trainer.is_global_zero and path.is_symlink():  # save_last="link": never write through the link
            path.unlink()
        trainer.save_checkpoint(path, weights_only=False)
        return path


class MidEpochStop(Callback):
    """A run that stops part-way through an epoch (``max_steps``, a signal, ``should_stop``) resumes part-way.

    Lightning closes the epoch when ``max_steps`` ends it early and then writes ``last.ckpt`` with the epoch
    counted as finished: a run continued from it (``fit --trainer.max_steps 4 --ckpt_path last`` after 2 steps)
    starts the *next* epoch's data order and is not the run it continues. When the training loader has batches
    left in the epoch, the saved progress is put back to "inside the epoch", which is what a checkpoint written
    at the same step by an uninterrupted run holds, so the loader (``ResumableDataLoader``) continues with the next
    unseen batch."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if trainer.state.fn != TrainerFn.FITTING or not _epoch_closed_early(trainer):
            return
        progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]
        for counts in (progress["total"], progress["current"]):
            counts["processed"] = counts["completed"] = counts["started"] - 1
        checkpoint["epoch"] = trainer.current_epoch - 1


def _epoch_closed_early(trainer) -> bool:
    """The fit loop counted the current epoch as processed although its training loader has batches left."""
    fit_loop = trainer.fit_loop
    epoch = fit_loop.epoch_progress.current
    batches = fit_loop.epoch_loop.batch_progress
    total = trainer.num_training_batches
    return (epoch.processed == epoch.started and epoch.started > 0 and not batches.is_last_batch
            and isinstance(total, int) and batches.current.completed < total)


# -- console ----------------------------------------------------------------------------------------------------------
class StepProgressBar(TQDMProgressBar):
    """One training bar for the whole run, counted in optimizer steps against ``max_steps`` (``60/150``, also
    right after a resume), showing the latest mean reward (the loss for supervised methods) and the last validation
    JSD. Lightning's default counts batches per epoch (``Epoch 1/-2``, ``60/28`` on resume) and shows ``v_num``."""

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None)
        bar.set_description("step")
        bar.initial = trainer.global_step  # a resumed run: its rate counts only the steps it takes
        _update_n(bar, trainer.global_step)
        bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_start(self, trainer, *_) -> None:
        """The bar spans epochs: nothing to reset."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        if bar is not None and self._should_update(trainer.global_step, bar.total):
            _update_n(bar, trainer.global_step)
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer, pl_module) -> dict[str, str]:
        metrics = trainer.callback_metrics
        shown = {}
        for name, keys in (("reward", ("train/reward_mean",)), ("loss", ("train/loss",)),
                           ("val_jsd", ("val/jsd", "val/sampling/jsd"))):
            key = next((k for k in keys if k in metrics), None)
            if key is not None and not (name == "loss" and "reward" in shown):
                shown[name] = f"{float(metrics[key]):.4f}"
        return shown
