"""The bottom layer (monai_adv.utils, monai_adv.keys) and where its names are re-exported."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from monai.data import MetaTensor

from monai_adv.utils import (
    check_label_range,
    class_indices,
    default_output_transform,
    eval_mode,
    first_output,
    gather_output,
    network_device,
    plain_tensor,
    predicted_classes,
)


def test_eval_mode_restores_each_submodule():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout())
    net.train()
    net[1].eval()  # a frozen batch norm inside a training network
    other = nn.Linear(2, 2).eval()
    with eval_mode(net, other, print):  # a plain callable is left alone
        assert not any(m.training for m in net.modules())
    assert net.training and net[0].training and not net[1].training and net[2].training
    assert not other.training


def test_eval_mode_restores_after_an_error():
    net = nn.Sequential(nn.Linear(2, 2)).train()
    with pytest.raises(RuntimeError), eval_mode(net):
        raise RuntimeError("boom")
    assert all(m.training for m in net.modules())


def test_plain_tensor_and_device():
    mt = MetaTensor(torch.ones(2), meta={"filename_or_obj": "x"})
    t = plain_tensor(mt)
    assert type(t) is torch.Tensor and torch.equal(t, torch.ones(2))
    assert plain_tensor(np.arange(3)).tolist() == [0, 1, 2]
    plain = torch.zeros(1)
    assert plain_tensor(plain) is plain
    assert network_device(nn.Linear(1, 1)) == torch.device("cpu")
    assert network_device(print, "cpu") == torch.device("cpu")


def test_class_indices():
    assert class_indices(torch.tensor([[1], [2]]), 2).tolist() == [1, 2]
    assert class_indices(np.array([0.0, 3.0]), 2).dtype == torch.long
    assert class_indices(3, 4, broadcast=True).tolist() == [3, 3, 3, 3]
    with pytest.raises(ValueError, match="do not fit a batch of 3"):
        class_indices(torch.tensor([1, 2]), 3)
    with pytest.raises(ValueError, match="non-integer"):
        class_indices(torch.tensor([0.5]), 1)
    with pytest.raises(ValueError, match="non-negative"):
        class_indices(torch.tensor([-1]), 1)
    with pytest.raises(ValueError, match="dtype"):
        class_indices(torch.tensor([True]), 1)
    with pytest.raises(ValueError, match="class indices"):
        class_indices(True, 1, broadcast=True)
    with pytest.raises(ValueError, match="not one-hot"):
        class_indices(torch.eye(3), 3)


def test_check_label_range_and_predicted_classes():
    check_label_range(torch.tensor([0, 3]), 4)
    with pytest.raises(ValueError, match=r"\[4, 5\] are out of range .* 4 classes"):
        check_label_range(torch.tensor([4, 5, 1]), 4)
    assert predicted_classes(torch.tensor([[0.1, 0.9], [2.0, 1.0]])).tolist() == [1, 0]
    assert predicted_classes(torch.tensor([[2.0], [1.0]])).tolist() == [2, 1]
    assert predicted_classes(torch.tensor(3)).tolist() == [3]


def test_engine_output_reading():
    batched = {"pred": torch.tensor([1, 2]), "n": [3, 4]}
    items = [{"pred": torch.tensor(1)}, {"pred": torch.tensor(2)}]
    assert first_output(batched) is batched and first_output(items) is items[0]
    assert first_output("text") is None and first_output([]) is None
    assert gather_output(batched, "pred").tolist() == [1, 2]
    assert gather_output(batched, "n").tolist() == [3, 4]
    assert gather_output(items, "pred").tolist() == [1, 2]
    assert gather_output(items, "flag", required=False) is None
    with pytest.raises(KeyError, match="no key 'flag'"):
        gather_output(items, "flag")
    with pytest.raises(TypeError, match="dict or a list of dicts"):
        gather_output(torch.zeros(2), "pred")


def test_default_output_transform():
    t = torch.zeros(1, 2)
    assert default_output_transform((t, None)) is t
    assert default_output_transform({"logits": t}) is t
    with pytest.raises(ValueError, match="none of which"):
        default_output_transform({"feat": t})
    with pytest.raises(TypeError):
        default_output_transform(3)


def test_names_stay_where_they_were_published():
    import monai_adv.engines as engines
    import monai_adv.handlers as handlers
    import monai_adv.keys as keys
    import monai_adv.transforms as transforms
    import monai_adv.transforms.base as base
    import monai_adv.utils as utils
    from monai_adv.distributed import unwrap_network

    assert engines.AdvTrainingKeys is keys.AdvTrainingKeys
    assert handlers.RobustKeys is keys.RobustKeys
    assert handlers.gather_output is utils.gather_output
    assert engines.unwrap_network is unwrap_network
    assert (
        base.default_output_transform is transforms.default_output_transform is utils.default_output_transform
    )
    assert transforms.per_sample_kl and transforms.kl_attack_loss


def test_full_precision_and_parse_amp_dtype():
    import pytest
    import torch

    from monai_adv.utils import full_precision, parse_amp_dtype

    assert full_precision(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32
    assert full_precision(torch.ones(2, dtype=torch.float16)).dtype == torch.float32
    x64 = torch.ones(2, dtype=torch.float64)
    assert full_precision(x64) is x64 and full_precision([1]) == [1]
    assert parse_amp_dtype("torch.float16") == torch.float16 and parse_amp_dtype(None) is None
    with pytest.raises(ValueError, match="amp_kwargs"):
        parse_amp_dtype("float32", "amp_kwargs['dtype']")
