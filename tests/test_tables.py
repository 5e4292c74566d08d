import pandas as pd
import pytest

from sharpminima.analysis.tables import (
    gap_markdown,
    markdown,
    paper_values,
    summarise,
    write_tables,
)


def test_paper_values_hold_all_three_tables():
    paper = paper_values()
    assert len(paper) == 6 * 4 * 3
    f1 = paper[(paper.table == 3) & (paper.network == "F1") & (paper.regime == "LB")]
    assert f1.set_index("eps")["mean"].to_dict() == {"0.001": 205.14, "0.0005": 42.90}


def _cells(dataset="mnist"):
    rows = []
    for seed, (sb, lb) in enumerate([(1.0, 200.0), (2.0, 240.0), (3.0, 160.0)]):
        for regime, value in (("SB", sb), ("LB", lb)):
            rows.append(
                {
                    "table": 3,
                    "network": "F1",
                    "regime": regime,
                    "metric": "phi_full",
                    "eps": "0.001",
                    "seed": seed,
                    "value": value,
                    "nit": 10 - seed,
                    "nfev": 12,
                    "dataset": dataset,
                }
            )
    return pd.DataFrame(rows)


def test_summary_mean_std_and_ratio_to_paper():
    s = summarise(_cells()).set_index("regime")
    assert s.loc["LB", "mean"] == pytest.approx(200.0)
    assert s.loc["LB", "std"] == pytest.approx(40.0)  # sample std, n - 1
    assert s.loc["LB", "paper_mean"] == 205.14
    assert s.loc["LB", "ratio"] == pytest.approx(200.0 / 205.14)
    assert (s.loc["SB", "nit_min"], s.loc["SB", "nit_max"]) == (8, 10)
    assert s.loc["SB", "n_trials"] == 3


def test_no_paper_comparison_on_other_data(tmp_path):
    s = summarise(_cells("synthetic"))
    assert s.paper_mean.isna().all() and s.ratio.isna().all()
    text = markdown(s, 3)
    assert "205.14" not in text and "F1 on synthetic" in text
    written = write_tables(_cells(), tmp_path)
    assert sorted(p.name for p in written) == ["table3.csv", "table3.md"]
    md = (tmp_path / "table3.md").read_text()
    assert "| F1 | 2 ± 1 (1.23 ± 0.83; ×1.63) [nit 8–10] | 200 ± 40 (205.14 ± 69.52; ×0.975)" in md
    assert pd.read_csv(tmp_path / "table3.csv").shape[0] == 2


def test_only_sharpness_tables_speak_of_iterations():
    cells = _cells().assign(table=2, metric="test_acc", eps="", nit=float("nan"))
    assert "brackets" not in markdown(summarise(cells), 2)
    assert "in brackets the L-BFGS-B iterations" in markdown(summarise(_cells()), 3)


def test_other_real_data_shows_the_papers_value_labelled_without_ratio():
    """C1 on Fashion-MNIST beside the paper's C1 on CIFAR-10: the value, named, no ratio."""
    cells = _cells("fashion-mnist").assign(network="C1")
    s = summarise(cells).set_index("regime")
    assert s.loc["LB", "paper_mean"] == 707.23 and s.loc["LB", "paper_dataset"] == "cifar10"
    assert s.ratio.isna().all()
    row = next(line for line in markdown(summarise(cells), 3).splitlines() if "| C1 |" in line)
    assert "(paper on cifar10: 707.23 ± 43.04)" in row and "×" not in row


def test_the_gap_is_paired_by_trial_with_a_t_interval_and_the_ranges():
    rows = []
    for seed, (sb, lb) in enumerate([(90.0, 88.0), (91.0, 88.5), (89.0, 88.0)]):
        for regime, value in (("SB", sb), ("LB", lb)):
            rows.append(
                {
                    "table": 2,
                    "network": "C1",
                    "regime": regime,
                    "metric": "test_acc",
                    "eps": "",
                    "seed": seed,
                    "value": value,
                    "dataset": "fashion-mnist",
                }
            )
    cells = pd.DataFrame(rows)
    text = gap_markdown(cells)
    # gaps 2, 2.5, 1: mean 1.833, sd 0.7638, t(0.975, 2) = 4.303: half-width 1.897
    assert "| C1 | 3 | 1.83 | [-0.06, 3.73] | 89.00–91.00 | 88.00–88.50 | yes |" in text
    cells.loc[(cells.seed == 2) & (cells.regime == "SB"), "value"] = (
        88.2  # SB's worst below LB's best
    )
    assert "| no |" in gap_markdown(cells)
    assert gap_markdown(cells[cells.regime == "SB"]) == ""  # no pair, no gap
