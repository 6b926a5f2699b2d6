"""A class with a single training patient keeps it for training, and the data check says so
(docs/reliability.md, part 2 item 8)."""

from __future__ import annotations

import logging

from monai_adv.apps.oct import check_dataset, split_by_patient
from monai_adv.bundle.data import oct_split_datalists

from .conftest import write_jpeg


def _tree(root):
    k = 0
    for cname, n_patients in (("CNV", 3), ("DME", 3), ("DRUSEN", 1), ("NORMAL", 3)):
        for pid in range(n_patients):
            write_jpeg(
                root / "train" / cname / f"{cname}-{100 * (k + 1) + pid}-1.jpeg", shape=(16, 16), seed=k
            )
            k += 1
    return root


def test_a_single_patient_class_is_kept_for_training_and_the_check_warns(tmp_path, caplog):
    root = _tree(tmp_path / "kermany")
    with caplog.at_level(logging.WARNING):
        lists = oct_split_datalists(root, val_fraction=0.3, seed=0)
    train_classes = {it["label"] for it in lists["labeled"]}
    assert train_classes == {0, 1, 2, 3}  # DRUSEN (2) is trained on
    assert 2 not in {it["label"] for it in lists["val"]} and {0, 1, 3} <= {it["label"] for it in lists["val"]}
    assert "[2] have a single patient" in caplog.text
    problems = check_dataset(root)
    single = [p for p in problems if "single patient" in p.message]
    assert len(single) == 1 and single[0].severity == "warning" and single[0].path.endswith("DRUSEN")
    assert not [p for p in problems if p.severity == "error"]


def test_min_second_keeps_one_patient_of_each_group_in_the_second_part():
    items = [{"image": f"{p}.png", "patient": p, "label": 0} for p in ("a", "b")]
    items.append({"image": "c.png", "patient": "c", "label": 1})
    first, second = split_by_patient(items, 0.99, seed=0, min_second=1)
    assert {it["patient"] for it in first} in ({"a"}, {"b"}) and "c" in {it["patient"] for it in second}
    first, _ = split_by_patient(items, 0.99, seed=0)
    assert {it["patient"] for it in first} == {"a", "b", "c"}  # as before without it
