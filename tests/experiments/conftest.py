"""Helpers shared by the experiment runners' tests."""


def record_trainer_devices(monkeypatch, module) -> list[str]:
    """Replace ``module.Trainer`` by one that records the device of every run it builds; returns that list."""
    seen: list[str] = []
    real = module.Trainer

    def recording(cfg, **kwargs):
        seen.append(cfg.train.device)
        return real(cfg, **kwargs)

    monkeypatch.setattr(module, "Trainer", recording)
    return seen
