import json

import pandas as pd

from sharpminima.analysis.sensitivity import report

from .conftest import cli


def _write(folder):
    files = []
    for regime, scale in (("SB", 1.0), ("LB", 100.0)):
        for bn, bn_factor in (("batch", 1.0), ("running", 30.0)):
            for start, start_factor in (("zero", 1.0), ("random", 0.5), ("multistart", 1.2)):
                for seed in (0, 1):
                    phi = scale * bn_factor * start_factor * (1 + seed)
                    result = {
                        "network": "F1",
                        "regime": regime,
                        "run_seed": seed,
                        "space": "full",
                        "eps": 1e-3,
                        "bn": bn,
                        "start": start,
                        "phi": phi,
                        "f_x": 0.01,
                        "f_max": 0.02,
                        "nit": 10,
                        "nfev": 12,
                        "message": "STOP",
                    }
                    path = folder / f"{regime}_{bn}_{start}_{seed}.json"
                    path.write_text(json.dumps(result))
                    files.append(path)
    return files


def test_report_table_and_figure(tmp_path):
    written = report(_write(tmp_path), tmp_path / "out")
    assert sorted(p.name for p in written) == [
        "sensitivity.csv",
        "sensitivity.md",
        "sensitivity.pdf",
        "sensitivity.png",
    ]
    table = pd.read_csv(tmp_path / "out/sensitivity.csv")
    lb = table[(table.regime == "LB") & (table.bn == "running") & (table.start == "random")]
    assert lb.phi.item() == 100 * 30 * 0.5 * 1.5  # mean over seeds 0 and 1
    md = (tmp_path / "out/sensitivity.md").read_text()
    assert "| LB | full | 0.001 | 150 | 75 | 180 | 4500 | 2250 | 5400 |" in md
    assert (tmp_path / "out/sensitivity.png").stat().st_size > 5000


def test_cli(tmp_path):
    cli("sensitivity", *_write(tmp_path), "--out-dir", tmp_path / "o")
    assert (tmp_path / "o/sensitivity.pdf").exists()
