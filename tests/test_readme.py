"""The README's code runs: the attack examples and the API tour, on tiny stand-ins for the user's data."""

import re
from pathlib import Path

import torch
from helpers import SmallCNN, toy_dataset
from monai.data import DataLoader, Dataset

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _block(after_heading: str) -> str:
    section = README.split(after_heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_api_tour_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = toy_dataset(32, size=16)
    network = SmallCNN()
    labeled = DataLoader(Dataset([{"image": x[i], "label": y[i]} for i in range(16)]), batch_size=8)
    unlabeled = DataLoader(Dataset([{"image": x[i]} for i in range(16, 32)]), batch_size=8)
    namespace = {
        "device": "cpu",
        "max_epochs": 1,
        "labeled_loader": labeled,
        "unlabeled_loader": unlabeled,
        "network": network,
        "optimizer": torch.optim.Adam(network.parameters(), 1e-3),
        "clean_train_loader": labeled,
        "clean_val_loader": unlabeled,
        "test_loader": labeled,
    }
    code = _block("## Training, detection and risk: an API tour")
    code = code.replace("SquareAttack(network, 0.005)", "SquareAttack(network, 0.005, n_queries=5)")
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "eval" / "report.json").exists()
    assert (tmp_path / "detector.pt").exists()
    assert "pgd_risk" in namespace["evaluator"].state.metrics


def test_attack_examples_run():
    code = _block("### On a batch")
    # shrink the expensive defaults for the test; the calls stay the README's
    code = code.replace("torch.rand(8, 1, 128, 128)", "torch.rand(2, 1, 32, 32)").replace(
        "torch.randint(0, 4, (8,))", "torch.randint(0, 4, (2,))"
    )
    code = code.replace("steps=100", "steps=2").replace("n_queries=1000", "n_queries=3")
    code = code.replace("CarliniWagnerL2(net)", "CarliniWagnerL2(net, steps=2, binary_search_steps=1)")
    code = code.replace("autoattack(net, eps=8 / 255)", "autoattack(net, eps=8 / 255, steps=2, n_queries=3)")
    code = code.replace('version="standard")', 'version="standard", steps=2, n_queries=3)')
    code = code.replace("32, 32, 32", "16, 16, 16").replace("8:24", "4:12")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["x_ct"].shape == (2, 1, 16, 16, 16)
    assert (namespace["x_ct"] - namespace["volumes"]).abs().max() <= 20.0 + 1e-3


def test_every_local_link_and_figure_exists():
    # the repository's Markdown pages link each other, the results and the figures: none may dangle
    repo = Path(__file__).resolve().parents[1]
    pages = [repo / "README.md", *(repo / "benchmarks").glob("*.md"), *(repo / "docs").glob("*.md"),
             *(repo / "tutorials").glob("*.md"), *(repo / "bundles").glob("*/docs/README.md")]  # fmt: skip
    missing = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                missing.append(f"{page.relative_to(repo)} -> {target}")
    assert not missing, missing


def test_segmentation_examples_run():
    code = _block("### Segmentation (dense outputs)")
    # shrink the sizes and budgets for the test; the calls stay the README's
    code = code.replace("128, 128", "32, 32").replace("160, 160, 96", "32, 32, 16")
    code = code.replace("(96, 96, 64)", "(16, 16, 8)").replace("steps=10", "steps=2")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    out, ct = namespace["out"], namespace["ct"]
    assert set(out) >= {"image", "label", "image_segpgd", "image_cospgd"}
    for key in ("image_segpgd", "image_cospgd"):
        assert out[key].shape == (1, 32, 32) and (out[key] - out["image"]).abs().max() <= 4 / 255 + 1e-6
    for key in ("ct_segpgd", "ct_worst"):
        assert namespace[key].shape == ct.shape == (1, 1, 32, 32, 16)
        assert 0 < (namespace[key] - ct).abs().max() <= 20.0 + 1e-3
