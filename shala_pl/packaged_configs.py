"""The shipped configs, found by name: ``--config quickstart`` or ``--config smollm2/chaosnli_mnli``.

In a clone they are the repository's ``configs/`` folder; an installed wheel carries the same files as
``shala_pl/configs`` (setup.cfg maps the one folder into the package, no copy is kept in the tree). A path that
exists always wins over a packaged name. Light on purpose: imported by ``--help`` before torch.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def configs_root() -> Path:
    """``shala_pl/configs`` in an installed package, else the clone's ``configs/``."""
    installed = PACKAGE / "configs"
    return installed if installed.is_dir() else PACKAGE.parent / "configs"


def config_names(folder: str = "") -> list[str]:
    """The names ``--config`` takes for ``configs/<folder>/*.yaml``: ``quickstart``, ``method/shala``."""
    root = configs_root()
    return [str(p.relative_to(root).with_suffix("")) for p in sorted((root / folder).glob("*.yaml"))]


def resolve_config(value: str) -> str:
    """``value`` when it names an existing file; else the packaged config it names (``quickstart``,
    ``configs/quickstart.yaml`` and ``quickstart.yaml`` all name the same one); else ``value`` unchanged, for
    jsonargparse to report."""
    if Path(value).is_file():
        return value
    name = value.removeprefix("configs/")
    for candidate in (name, f"{name}.yaml"):
        path = configs_root() / candidate
        if path.is_file():
            return str(path)
    return value


def resolve_config_args(args: list[str]) -> list[str]:
    """Command-line ``args`` with each ``--config VALUE`` / ``--config=VALUE`` resolved by :func:`resolve_config`."""
    resolved, follows_flag = [], False
    for arg in args:
        if follows_flag:
            arg = resolve_config(arg)
        elif arg.startswith("--config="):
            arg = "--config=" + resolve_config(arg.removeprefix("--config="))
        follows_flag = arg == "--config"
        resolved.append(arg)
    return resolved
