"""Every way a run is trained in one study, by the name in its path.

The study's regimes (SB, LB), the batch-size sweep's points, the warm starts, the remedies
and the methods since the paper are all runs under results/<study>/runs/<network>/<regime>/,
so training, sharpness and tables treat them alike. A regime is a batch size, training
settings over the protocol's, and optionally a warm start. `derive` computes them from a
validated config, as a pure function: the workflow calls it while building the DAG, so it
imports only the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Regime:
    batch_size: float
    training: Mapping[str, object] = field(default_factory=dict)
    warm: tuple[str, int] | None = None  # (source regime, its epoch to start from)


@dataclass(frozen=True)
class Regimes:
    all: dict[str, Regime]
    sweep: dict[float, str]  # batch size -> regime name
    warm_source: str | None  # the SB run the warm starts start from
    warm: dict[int, str]  # SB epoch -> the LB regime warm-started there
    remedies: dict[str, list[str]]  # method -> its regime of each of landscape_regimes
    modern: dict[str, list[str]]  # method -> its LB regime, and its SB one where it has one


def derive(config: Mapping, training: Mapping[str, Mapping]) -> Regimes:
    """The regimes of a study. `training` is each network's protocol (the global one with the
    network's overrides); experiments switched off add none."""
    regimes = {name: Regime(batch) for name, batch in config["regimes"].items()}
    on = config["experiments"]
    sweep = _sweep(config, training, regimes) if on.get("sweep") else {}
    source, warm = _warm_starts(config, regimes) if on.get("warmstart") else (None, {})
    remedies = _methods(config, "remedies", regimes, ()) if on.get("remedies") else {}
    modern = {}
    if on.get("modern"):
        modern = _methods(config, "modern", regimes, config["modern"]["lb_only"])
    return Regimes(regimes, sweep, source, warm, remedies, modern)


def _sweep(config, training, regimes: dict[str, Regime]) -> dict[float, str]:
    """Batch size -> regime: the study's own where its batch and every setting agree (its runs
    are reused), else b<batch> (with an _<N>ep suffix where the sweep fixes the epochs)."""
    s = config["sweep"]
    fixed = {} if s["epochs"] is None else {"stop": "fixed", "max_epochs": s["epochs"]}
    same = all(protocol.get(k) == v for protocol in training.values() for k, v in fixed.items())
    suffix = "" if same else f"_{s['epochs']}ep"
    names = {}
    for batch in s["batch_sizes"]:
        study = [n for n, b in config["regimes"].items() if b == batch and same]
        names[batch] = study[0] if study else f"b{batch:g}{suffix}"
        regimes.setdefault(names[batch], Regime(batch, fixed))
    return names


def _warm_starts(config, regimes: dict[str, Regime]) -> tuple[str, dict[int, str]]:
    """Figure 5: an SB run that keeps every epoch, and an LB run from every `every`-th of them."""
    w = config["warmstart"]
    sb, lb = config["landscape_regimes"]
    source = f"warm_{sb}"
    keep = {"stop": "fixed", "max_epochs": w["sb_epochs"], "save_every": 1}
    regimes[source] = Regime(config["regimes"][sb], keep)
    epochs = {}
    for epoch in range(0, w["sb_epochs"] + 1, w["every"]):
        epochs[epoch] = f"warm_{lb}{epoch}"
        settings = {"stop": "fixed", "max_epochs": w["lb_epochs"], "save_every": w["lb_epochs"]}
        regimes[epochs[epoch]] = Regime(config["regimes"][lb], settings, (source, epoch))
    return source, epochs


def _methods(config, section: str, regimes: dict[str, Regime], lb_only) -> dict[str, list[str]]:
    """Appendix E's remedies (section 'remedies') or the methods since the paper ('modern'):
    method -> its regimes <regime>_<method>, of both landscape_regimes, or of the large batch
    alone for the methods in `lb_only` (those that change nothing at the small batch)."""
    methods = {}
    for method, settings in config[section]["methods"].items():
        both = config["landscape_regimes"]
        study = both[1:] if method in lb_only else both
        methods[method] = [f"{r}_{method}" for r in study]
        for r, name in zip(study, methods[method], strict=True):
            regimes[name] = Regime(config["regimes"][r], dict(settings))
    return methods
