"""Direct tests of the small helpers: distributed (outside torchrun) and the engines' batch parsing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from monai_adv.distributed import barrier, is_main_process, rank, sync_buffers, unwrap_network
from monai_adv.engines.batches import (
    check_loader_not_empty,
    check_logits,
    prepare_engine_batch,
    unlabeled_images,
)


def test_distributed_helpers_outside_torchrun():
    assert rank() == 0 and is_main_process()
    barrier()  # a no-op
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    wrapped = nn.DataParallel(nn.DataParallel(net))
    assert unwrap_network(wrapped) is net and unwrap_network(net) is net
    before = net[1].running_mean.clone()
    sync_buffers(net)  # not DDP: nothing happens
    assert torch.equal(net[1].running_mean, before)


def test_unlabeled_images():
    x = torch.zeros(2, 1, 4, 4)
    assert unlabeled_images(x) is x
    assert unlabeled_images({"img": x}, image_key="img") is x
    assert unlabeled_images((x, "meta")) is x
    with pytest.raises(ValueError, match="without the image key 'image'"):
        unlabeled_images({"img": x})
    with pytest.raises(TypeError, match="is not a tensor"):
        unlabeled_images("x")


def test_check_logits_and_loader():
    logits = torch.zeros(3, 4)
    assert check_logits(logits, 3) is logits
    with pytest.raises(ValueError, match="not class logits of shape \\(3, num_classes\\)"):
        check_logits(torch.zeros(3), 3)
    with pytest.raises(ValueError, match="not class logits"):
        check_logits({"logits": logits}, 3)
    check_loader_not_empty([1], "loader")
    check_loader_not_empty(iter([]), "loader")  # not sized: checked when iterated
    with pytest.raises(ValueError, match="loader is None"):
        check_loader_not_empty(None, "loader")
    with pytest.raises(ValueError, match="loader is empty"):
        check_loader_not_empty([], "loader")


def test_prepare_engine_batch():
    def prepare(batch, device, non_blocking, **kw):
        return batch["image"], batch["label"]

    engine = SimpleNamespace(
        prepare_batch=prepare, state=SimpleNamespace(device="cpu"), non_blocking=False, to_kwargs={}
    )
    x, y, args, kwargs = prepare_engine_batch(engine, {"image": 1, "label": 2})
    assert (x, y, args, kwargs) == (1, 2, (), {})
    engine.prepare_batch = lambda b, d, n, **kw: (1, 2, (3,), {"a": 4})
    assert prepare_engine_batch(engine, {}) == (1, 2, (3,), {"a": 4})
    with pytest.raises(ValueError, match="Must provide batch data"):
        prepare_engine_batch(engine, None)
