"""benchmarks/init_from_vit.py turns the runs' metrics into the table, JSON and plot of
docs/pretraining.md; runs that finished are not run again. Checked on made-up runs (no
training here: the script's runs take minutes)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import init_from_vit


def _run(out: Path, name: str, rows: list[dict], **results) -> None:
    (out / name).mkdir(parents=True)
    columns = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    lines = [",".join(columns)] + [",".join(str(r.get(k, "")) for k in columns) for r in rows]
    (out / name / "metrics.csv").write_text("\n".join(lines) + "\n")
    base = {"metrics": {}, "steps": rows[-1]["step"], "wall_time_s": 60.0}
    (out / name / "results.json").write_text(json.dumps({**base, **results}))


def _finished_runs(out: Path) -> None:
    _run(out, "vit", [{"step": 10, "loss": 3.0}], accuracy=0.875)
    for start, better in (("random", 0.0), ("vit", 0.1)):
        _run(out, f"vqa-{start}", [
            {"step": 5, "loss": 1.0},
            {"step": 10, "loss": 0.8, "eval_vqa_accuracy": 0.5 + better},
            {"step": 20, "loss": 0.6, "eval_vqa_accuracy": 0.6 + better},
        ], metrics={"eval_vqa_accuracy": 0.6 + better, "loss": 0.6})  # fmt: skip
        _run(out, f"pretrain-{start}", [
            {"step": 10, "loss": 2.0, "eval_itm_accuracy": 0.5 + better, "eval_mlm_accuracy": 0.25},
            {"step": 20, "loss": 1.5, "eval_itm_accuracy": 0.55 + better, "eval_mlm_accuracy": 0.5},
        ], wall_time_s=90.0)  # fmt: skip


def test_finished_runs_give_the_table_the_json_and_the_plot(tmp_path, capsys, monkeypatch):
    _finished_runs(tmp_path)
    ran = []
    monkeypatch.setattr(init_from_vit.subprocess, "run", lambda *a, **k: ran.append(a))
    figure = tmp_path / "docs" / "curves.png"
    assert init_from_vit.main(["--out", str(tmp_path), "--figure", str(figure)]) == 0
    assert ran == []  # every run had its results.json
    table = (tmp_path / "table.md").read_text().splitlines()
    assert table[0].startswith("The ViT: 87.50% held-out accuracy") and "after 10 steps" in table[0]
    assert "| run | held out | step 10 | step 20 | training time |" in table
    assert "| vqa, random start | vqa accuracy | 50.00% | 60.00% | 60 s |" in table
    assert "| vqa, from the ViT (--init-vision) | vqa accuracy | 60.00% | 70.00% | 60 s |" in table
    assert "| pretrain, random start | itm accuracy | 50.00% | 55.00% | 90 s |" in table
    assert (
        "| pretrain, from the ViT (--init-vision) | mlm accuracy | 25.00% | 50.00% | 90 s |"
        in table
    )
    summary = json.loads((tmp_path / "init_from_vit.json").read_text())
    assert summary["vqa-vit"]["metrics"] == {"eval_vqa_accuracy": 0.7}  # the eval metrics only
    assert summary["vit"]["accuracy"] == 0.875
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missing_run_is_run_with_the_start_it_compares(tmp_path, monkeypatch):
    _finished_runs(tmp_path)
    (tmp_path / "vqa-vit" / "results.json").unlink()
    ran = []

    def fake_run(command, **_):
        ran.append(command)
        _run_results = {"metrics": {}, "steps": 20, "wall_time_s": 1.0}
        (tmp_path / "vqa-vit" / "results.json").write_text(json.dumps(_run_results))

    monkeypatch.setattr(init_from_vit.subprocess, "run", fake_run)
    init_from_vit.main(["--out", str(tmp_path), "--vqa-steps", "20", "--batch-size", "32"])
    (command,) = ran
    flags = command[2:]
    assert Path(command[1]).name == "vqa.py"
    assert flags[flags.index("--init-vision") + 1] == str(tmp_path / "vit")
    assert flags[flags.index("--max-steps") + 1] == "20"
    assert flags[flags.index("--batch-size") + 1] == "32"
    assert flags[flags.index("--output-dir") + 1] == str(tmp_path / "vqa-vit")
