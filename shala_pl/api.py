"""The package from Python (a notebook, a script): the command line's run, built from configs and overrides.

    from shala_pl.api import Experiment

    run = Experiment("quickstart", {"trainer.max_steps": 20, "trainer.default_root_dir": "runs/notebook"})
    run.module.label_names          # ['red', 'green', 'blue']: the data decided them, no dm.setup() needed
    after = run.fit()               # validation before and after, checkpoints, hf_model/, the summary
    run.test(ckpt_path="last")      # {'test/jsd': ..., ...}

An ``Experiment`` is exactly what ``shala-pl fit --config ... --key value`` builds (``shala_pl.cli.ShalaCLI``):
the module, the data module linked into it, and a trainer with the project's callbacks (checkpoints with
``last.ckpt``, seeded and resumable RNG, Ctrl-C / SIGTERM handling, the prediction writer, the step progress bar),
so a run started here reads like one started from the shell.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union


class Experiment:
    """A configured run: ``module``, ``datamodule`` and ``trainer``, ready to fit, validate or test.

    Args:
        *configs: config files, or shipped configs by name (``"quickstart"``, ``"smollm2/chaosnli_mnli"``,
            ``"method/sft_soft"``), applied in order like repeated ``--config``.
        overrides: option -> value, as the command line spells the option without its dashes
            (``{"trainer.max_steps": 20, "model.init_args.lora": {"r": 8}}``); applied after the configs. Values
            other than strings are passed as JSON.
    """

    def __init__(self, *configs: Union[str, Path], overrides: Optional[dict[str, Any]] = None):
        from shala_pl.cli import cli_main

        args = [item for config in configs for item in ("--config", str(config))]
        for option, value in (overrides or {}).items():
            args += [f"--{option}", value if isinstance(value, str) else json.dumps(value)]
        self.cli = cli_main(args, run=False)
        self.module, self.datamodule, self.trainer = self.cli.model, self.cli.datamodule, self.cli.trainer

    def fit(self, ckpt_path: Optional[str] = None) -> dict[str, float]:
        """Train as ``shala-pl fit`` does (validation before unless ``validate_before_fit: false`` or resuming,
        then training, the closing validation, the ``hf_model/`` export and the summary); returns the closing
        validation's metrics (empty when the run was interrupted)."""
        self.cli.before_fit()
        self.trainer.fit(self.module, datamodule=self.datamodule, ckpt_path=ckpt_path)
        self.cli.after_fit()
        return dict(self.cli.validation_after)

    def validate(self, ckpt_path: Optional[str] = None) -> dict[str, float]:
        """The validation metrics of the module as it is, or of the checkpoint ``ckpt_path`` (a path, or
        Lightning's ``"last"`` / ``"best"`` of this experiment's own fit)."""
        return _first(self.trainer.validate(self.module, datamodule=self.datamodule, ckpt_path=ckpt_path,
                                            verbose=False))

    def test(self, ckpt_path: Optional[str] = None) -> dict[str, float]:
        """The test split's metrics, as :meth:`validate`."""
        return _first(self.trainer.test(self.module, datamodule=self.datamodule, ckpt_path=ckpt_path,
                                        verbose=False))


def _first(results: list[dict]) -> dict[str, float]:
    return {name: float(value) for name, value in (results[0] if results else {}).items()}
