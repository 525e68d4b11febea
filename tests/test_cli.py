"""The command line: JSON contracts of train / sample / ed, and clear errors."""

import json

import numpy as np
import pytest

from naqs.cli import main


def test_train_then_sample(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main([
        "train", "--model", "ising", "--lattice", "square", "--size", "2x3", "--gamma", "1.5", "--blocks", "1",
        "--channels", "4", "--steps", "6", "--batch", "32", "--eval-batch", "256", "--out", str(out), "--json", "--quiet",
    ])  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("energy", "energy_error", "energy_per_site", "variance", "abs_magnetization", "magnetization",
                "steps", "seconds", "exact_energy", "units"):  # fmt: skip
        assert key in summary, key
    assert summary["units"] == "pauli"
    assert summary["energy"] >= summary["exact_energy"] - 5 * summary["energy_error"]  # variational
    assert (out / "training.png").exists() and (out / "metrics.jsonl").exists()

    for method in ("exact", "mcmc"):
        target = tmp_path / f"samples-{method}.npz"
        assert main(["sample", "--checkpoint", str(out), "--n", "100", "--method", method, "--out", str(target)]) == 0
        data = np.load(target)
        assert data["spins"].shape == (100, 6) and set(np.unique(data["spins"])) <= {-1, 1}
        info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert info["method"] == method


def test_ed_json(capsys):
    rc = main(["ed", "--lattice", "square", "--size", "4x4", "--pbc", "--model", "heisenberg", "--j1", "1", "--j2", "0",
               "--sz", "0", "--json", "--no-cache"])  # fmt: skip
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["energy"] == pytest.approx(-11.228483, abs=1e-6)
    assert result["units"] == "S" and result["dim"] == 12870
    assert result["energy_per_site"] == pytest.approx(result["energy"] / 16)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ed", "--cluster", "hexagon-7", "--json"], "unknown cluster"),
        (["ed", "--lattice", "square", "--size", "3x3", "--sz", "0", "--json"], "sz"),
        (["train", "--size", "4by4", "--out", "x"], "size"),
    ],
)
def test_bad_input_exits_with_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
