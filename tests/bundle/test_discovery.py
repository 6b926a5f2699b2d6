"""The bundle package knows no bundle by name: a third bundle folder (a copy of the classification bundle
under another name) is found, copied by ``init``, planned and run by ``demo`` from its own metadata.json,
and shipped by the wheel and the sdist, with no code change. Nothing here trains: the demo's runs are
recorded (and their reports written) by a stand-in for ``monai.bundle run``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import monai_adv.bundle.demo as demo
import monai_adv.bundle.locate as locate
from monai_adv.bundle import (
    BundleDescription,
    available_bundles,
    default_bundle_name,
    demo_plan,
    find_bundle,
    is_bundle_dir,
    main,
    resolve_bundle_dir,
)

REPO = Path(__file__).resolve().parents[2]
CLASSIFICATION = REPO / "bundles" / "oct_robust_classification"
SEGMENTATION = REPO / "bundles" / "oct_layer_segmentation"
ZOO = REPO.parent / "shared" / "model-zoo"
THIRD = "retina_triage"  # a bundle the code has never heard of


def _copy(src: Path, dst: Path, **section_changes) -> Path:
    locate.copy_bundle(dst, src=src)  # what a checkout holds: no generated files, the shipped weights
    if section_changes:
        meta_file = dst / "configs" / "metadata.json"
        meta = json.loads(meta_file.read_text())
        meta["monai_adv"].update(section_changes)
        meta_file.write_text(json.dumps(meta, indent=4))
    return dst


@pytest.fixture
def bundles_root(tmp_path: Path, monkeypatch) -> Path:
    """A bundles folder holding the two OCT bundles and a third one (a renamed copy, not marked default),
    made the only place the package looks for bundles."""
    root = tmp_path / "bundles"
    _copy(CLASSIFICATION, root / CLASSIFICATION.name)
    _copy(SEGMENTATION, root / SEGMENTATION.name)
    _copy(CLASSIFICATION, root / THIRD, default=False)
    (root / "notes").mkdir()  # not a bundle: no configs/metadata.json
    (root / "notes" / "todo.md").write_text("x")
    monkeypatch.setattr(locate, "bundle_search_roots", lambda: [root])
    return root


def test_the_real_bundles_are_found_and_describe_themselves():
    found = available_bundles()
    assert found[CLASSIFICATION.name] == CLASSIFICATION and found[SEGMENTATION.name] == SEGMENTATION
    assert default_bundle_name() == CLASSIFICATION.name  # its metadata marks it default
    cls, seg = BundleDescription.from_bundle(CLASSIFICATION), BundleDescription.from_bundle(SEGMENTATION)
    assert (cls.task, seg.task) == ("classification", "segmentation")
    assert [s.name for s in cls.steps] == ["train", "fit_detector", "evaluate"]
    assert [s.name for s in seg.steps] == ["train", "evaluate"]
    assert cls.systems["ssat"].starts_from == "supervised" and seg.systems["ssat"].starts_from is None
    # every training config of the bundle folder is some system's (a new train_*.json needs an entry)
    for d in (cls, seg):
        used = {f for s in d.systems.values() for f in s.configs}
        assert {f"configs/{p.name}" for p in (d.root / "configs").glob("train_*.json")} <= used, d.name
    try:
        from monai_adv.engines import TRAINING_METHODS
    except ImportError:
        return
    for d in (cls, seg):
        assert {s.method for s in d.systems.values()} <= set(TRAINING_METHODS), d.name


def test_a_third_bundle_is_found_copied_and_planned(bundles_root: Path, tmp_path: Path, monkeypatch, capsys):
    assert list(available_bundles()) == [SEGMENTATION.name, CLASSIFICATION.name, THIRD]
    assert find_bundle(THIRD) == bundles_root / THIRD
    with pytest.raises(ValueError, match=f"unknown bundle 'nope'; available: .*{THIRD}"):
        find_bundle("nope")
    assert default_bundle_name() == CLASSIFICATION.name

    # init: by name, to a folder; a bad name lists what there is
    monkeypatch.chdir(tmp_path)
    assert main(["init", "mine", "--bundle", THIRD]) == 0
    assert is_bundle_dir(tmp_path / "mine") and (tmp_path / "mine" / "models").is_dir()
    assert "copied to mine" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["init", "other", "--bundle", "nope"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown bundle 'nope'" in err and f"{THIRD}: classification" in err
    assert not (tmp_path / "other").exists()

    # the demo's runs come from its metadata: each step's configs stacked on the system's
    plan = demo_plan(bundles_root / THIRD, quick=True)
    assert list(plan) == ["supervised", "trades", "ssat", "rst"]
    assert [(r.step, r.configs) for r in plan["ssat"]] == [
        ("train", ("configs/train.json", "configs/finetune.json", "configs/quick.json")),
        ("fit_detector", ("configs/train.json", "configs/finetune.json", "configs/fit_detector.json", "configs/demo.json", "configs/quick.json")),
        ("evaluate", ("configs/train.json", "configs/finetune.json", "configs/evaluate.json", "configs/demo.json", "configs/quick.json")),
    ]  # fmt: skip
    assert [r.configs for r in demo_plan(bundles_root / SEGMENTATION.name, ["madry"])["madry"]] == [
        ("configs/train.json", "configs/train_madry.json"),
        ("configs/train.json", "configs/train_madry.json", "configs/evaluate.json"),
    ]
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['nope'\]"):
        demo_plan(bundles_root / THIRD, ["supervised", "nope"])
    with pytest.raises(ValueError, match="list supervised before ssat"):
        demo_plan(bundles_root / THIRD, ["ssat", "supervised"])


def test_a_renamed_copy_still_marked_default_makes_the_default_ambiguous(bundles_root: Path):
    _copy(CLASSIFICATION, bundles_root / "another_copy")
    with pytest.raises(ValueError, match="several are marked default"):
        default_bundle_name()
    assert resolve_bundle_dir(bundles_root / THIRD) == bundles_root / THIRD  # naming one always works


def _fake_bundle_run(calls: list):
    """A stand-in for the in-process runner: records each run and writes the evaluation's report."""

    def run(root: Path, plan, overrides) -> None:
        desc = BundleDescription.from_bundle(root)
        for system, runs in plan.items():
            for r in runs:
                calls.append((root.name, system, r.step, r.configs, dict(overrides)))
            quick = desc.quick_config in runs[-1].configs
            report = desc.report_path(system, quick)
            report.parent.mkdir(parents=True, exist_ok=True)
            attack = {"name": "pgd_eps0.004", "eps": 0.004, "value": 0.25}
            metric = "accuracy" if desc.task == "classification" else "mean_dice"
            report.write_text(
                json.dumps({"task": desc.task, "metric": metric, "clean": 0.75, "attacks": [attack]})
            )

    return run


def test_demo_of_a_third_bundle_runs_its_systems_from_its_metadata(
    bundles_root: Path, tmp_path, monkeypatch, capsys
):
    calls: list = []
    monkeypatch.setattr(demo, "_run_in_process", _fake_bundle_run(calls))
    monkeypatch.chdir(tmp_path)
    assert (
        main(["demo", THIRD, "--quick", "--jobs", "1", "--systems", "supervised", "madry", "--seed", "3"])
        == 0
    )
    work = tmp_path / THIRD  # a working copy, made from the found bundle
    assert is_bundle_dir(work)
    assert [(c[0], c[1], c[2]) for c in calls] == [
        (THIRD, s, step) for s in ("supervised", "madry") for step in ("train", "fit_detector", "evaluate")
    ]
    assert calls[0][3] == ("configs/train.json", "configs/train_supervised.json", "configs/quick.json")
    assert calls[0][4]["seed"] == 3
    out = capsys.readouterr().out
    assert "copying the bundle retina_triage" in out
    assert "OCT robustness at equal labels" in out  # the title its metadata gives
    assert "| supervised | 0.750 |" in out and "madry: accuracy" in out  # the classification comparer
    assert "- madry: Madry PGD-AT (PGD-5, eps 0.004)" in out  # each system's recipe
    assert f"plots and report.md in {work / 'quick' / 'eval' / 'madry'}" in out
    # the second run reuses the copy; --list names every bundle with its task
    assert main(["demo", "--list"]) == 0
    listing = capsys.readouterr().out
    assert f"{THIRD}: classification" in listing and f"{SEGMENTATION.name}: segmentation" in listing
    # a bad system is one clear line, exit code 2, nothing run
    calls.clear()
    with pytest.raises(SystemExit) as e:
        main(["demo", THIRD, "--systems", "nope"])
    assert e.value.code == 2 and not calls
    assert "unknown method(s) ['nope']" in capsys.readouterr().err


def test_the_deprecated_layers_command_runs_the_segmentation_demo(
    bundles_root: Path, tmp_path, monkeypatch, capsys
):
    calls: list = []
    monkeypatch.setattr(demo, "_run_in_process", _fake_bundle_run(calls))
    seg = bundles_root / SEGMENTATION.name
    assert main(["layers", "--bundle-dir", str(seg), "--jobs", "1"]) == 0
    assert {c[0] for c in calls} == {SEGMENTATION.name}
    assert [(c[1], c[2]) for c in calls] == [
        (s, st) for s in ("supervised", "ssat") for st in ("train", "evaluate")
    ]
    out = capsys.readouterr().out
    assert "'layers' is deprecated" in out and "OCT layer segmentation: mean Dice" in out
    assert "| attack | eps | supervised: mean Dice | ssat: mean Dice |" in out  # the segmentation table


def test_systems_wait_for_the_model_they_start_from():
    desc = BundleDescription.from_bundle(CLASSIFICATION)
    plan = desc.plan(["supervised", "madry", "ssat_robust", "ssat"])
    needs = demo._needs(desc, plan)
    assert needs == {"supervised": [], "madry": [], "ssat_robust": ["supervised"], "ssat": ["supervised"]}
    # without the system it starts from in the run, it waits for nothing (its model must exist)
    assert demo._needs(desc, desc.plan(["ssat"])) == {"ssat": []}


def test_a_wrong_description_names_the_key(tmp_path: Path):
    b = _copy(CLASSIFICATION, tmp_path / "b")
    meta_file = b / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())

    def fails_with(section, match: str) -> None:
        meta_file.write_text(json.dumps(dict(meta, monai_adv=section)))
        with pytest.raises(ValueError, match=match):
            BundleDescription.from_bundle(b)

    good = meta["monai_adv"]
    fails_with({}, "no 'monai_adv' section")
    fails_with(
        dict(good, task="detection"), r"monai_adv.task must be one of \('classification', 'segmentation'\)"
    )
    systems = dict(good["systems"], extra={"method": "madry", "configs": ["configs/train_nope.json"]})
    fails_with(
        dict(good, systems=systems), r"monai_adv.systems.extra.configs names \['configs/train_nope.json'\]"
    )
    systems = dict(good["systems"], extra={"method": "madry", "configs": [], "starts_from": "ghost"})
    fails_with(dict(good, systems=systems), "monai_adv.systems.extra.starts_from is 'ghost'")
    fails_with(
        dict(good, demo=dict(good["demo"], systems=["ghost"])), r"monai_adv.demo.systems names \['ghost'\]"
    )
    fails_with(dict(good, report="eval/report.json"), "must contain '{system}'")
    meta_file.write_text(json.dumps(dict(meta, monai_adv=dict(good, quick={}))))
    with pytest.raises(ValueError, match="quick.config is not set"):
        BundleDescription.from_bundle(b).plan(quick=True)


def test_any_model_zoo_layout_is_a_bundle(tmp_path: Path):
    (tmp_path / "zoo" / "configs").mkdir(parents=True)
    assert not is_bundle_dir(tmp_path / "zoo")
    (tmp_path / "zoo" / "configs" / "metadata.json").write_text("{}")
    assert not is_bundle_dir(tmp_path / "zoo")  # metadata alone: no config to run
    (tmp_path / "zoo" / "configs" / "inference.yaml").write_text("{}")
    assert is_bundle_dir(tmp_path / "zoo")
    # a bundle without our section is found (and copied), but has no demo to run
    assert locate.find_bundle_dirs(tmp_path) == [tmp_path / "zoo"]
    with pytest.raises(ValueError, match="no 'monai_adv' section"):
        demo_plan(tmp_path / "zoo")
    for name in ("classification_template", "segmentation_template", "spleen_ct_segmentation"):
        if (ZOO / name).is_dir():
            assert is_bundle_dir(ZOO / name), name


def _load_setup():
    spec = importlib.util.spec_from_file_location("monai_adv_setup_under_test", REPO / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: setup() does not run
    return module


def _with_generated_files(root: Path) -> None:
    """What a bundle's runs leave in its folder: none of it ships."""
    b = root / CLASSIFICATION.name
    for rel in ("data/synthetic_oct_64/manifest.json", "eval/ssat/report.json", "models/ssat/model.pt",
                "quick/logs/ssat.train.log", "configs/__pycache__/x.pyc", "runs/events.out"):  # fmt: skip
        (b / rel).parent.mkdir(parents=True, exist_ok=True)
        (b / rel).write_text("generated")


def test_the_wheel_ships_every_bundle_found_and_only_its_static_files(bundles_root: Path):
    _with_generated_files(bundles_root)
    shipped = _load_setup().bundle_package_files(bundles_root)
    assert {p.parts[0] for p in shipped} == {CLASSIFICATION.name, SEGMENTATION.name, THIRD}
    third = {p.relative_to(THIRD).as_posix() for p in shipped if p.parts[0] == THIRD}
    expected = {p.relative_to(CLASSIFICATION).as_posix() for p in CLASSIFICATION.rglob("*") if p.is_file()}
    expected -= {".gitignore", "models/.gitkeep"}
    assert third == expected  # configs, docs and licence: the bundle's files in git, nothing generated
    assert "configs/metadata.json" in third and "LICENSE" in third
    assert all(shipped[p] == bundles_root / p for p in shipped)


def test_the_sdist_manifest_takes_the_same_files(bundles_root: Path, monkeypatch):
    from setuptools.command.egg_info import FileList

    _with_generated_files(bundles_root)
    monkeypatch.chdir(bundles_root.parent)  # the sdist's file list is made from the project root
    files = FileList()
    files.findall()
    for line in (REPO / "MANIFEST.in").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            files.process_template_line(line)
    in_sdist = {f for f in files.files if f.startswith("bundles/")}
    shipped = {f"bundles/{p.as_posix()}" for p in _load_setup().bundle_package_files(bundles_root)}
    assert in_sdist == shipped
