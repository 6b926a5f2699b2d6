"""one_cycle_schedule: the same learning rates as torch's OneCycleLR, and a schedule that survives resume."""

import pytest
import torch

from monai_adv.engines import one_cycle_schedule


def _opt():
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)


def test_equals_torch_one_cycle_lr_step_by_step():
    opt_ref, opt = _opt(), _opt()
    ref = torch.optim.lr_scheduler.OneCycleLR(opt_ref, max_lr=0.5, total_steps=50, pct_start=0.2)
    ours = torch.optim.lr_scheduler.LambdaLR(opt, one_cycle_schedule(50, pct_start=0.2))
    for step in range(50):
        assert opt.param_groups[0]["lr"] == pytest.approx(
            opt_ref.param_groups[0]["lr"], rel=1e-9, abs=1e-12
        ), step
        opt.step()
        opt_ref.step()
        if step < 49:
            ref.step()
        ours.step()


def test_resumes_from_its_state_and_stays_flat_past_the_end():
    opt = _opt()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, one_cycle_schedule(10))
    for _ in range(6):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = _opt()
    resumed = torch.optim.lr_scheduler.LambdaLR(opt2, one_cycle_schedule(10))
    resumed.load_state_dict(state)
    assert resumed.get_last_lr() == sched.get_last_lr()
    for _ in range(20):  # more steps than planned: no error, the final rate
        opt2.step()
        resumed.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.5 / 25 / 1e4)


@pytest.mark.parametrize("args", [dict(total_steps=0), dict(total_steps=10, pct_start=1.0)])
def test_bad_arguments(args):
    with pytest.raises(ValueError):
        one_cycle_schedule(**args)
