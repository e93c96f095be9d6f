"""Helpers shared by the experiment runners' tests."""

import importlib.util
import sys
from pathlib import Path


def load_script(path: Path, name: str | None = None):
    """A probe or recipe script (not a package module) imported as a module, for its functions."""
    spec = importlib.util.spec_from_file_location(name or Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probe_script(path: Path):
    """A module-scoped fixture's body: the probe script loaded as a module, then its folder (which the probe puts on
    ``sys.path`` to import its sibling probes) taken off the path again."""
    yield load_script(path)
    while str(Path(path).parent) in sys.path:
        sys.path.remove(str(Path(path).parent))


def record_trainer_devices(monkeypatch, module) -> list[str]:
    """Replace ``module.Trainer`` by one that records the device of every run it builds; returns that list."""
    seen: list[str] = []
    real = module.Trainer

    def recording(cfg, **kwargs):
        seen.append(cfg.train.device)
        return real(cfg, **kwargs)

    monkeypatch.setattr(module, "Trainer", recording)
    return seen


class Killed(Exception):
    """A process killed mid-run: no handler runs, and no checkpoint is written at the kill."""


def kill_once_after(monkeypatch, step: int) -> None:
    """The next training run dies before its step ``step + 1`` (once; the runs after it train normally)."""
    from nestlearn.train.loop import Trainer

    real = Trainer.train_step
    state = {"done": False}

    def dies(self):
        if self.step == step and not state["done"]:
            state["done"] = True
            raise Killed
        return real(self)

    monkeypatch.setattr(Trainer, "train_step", dies)
