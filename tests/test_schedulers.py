import math

import pytest
import torch
from hydra.utils import instantiate

from lightning_resnet.errors import ConfigError
from lightning_resnet.models.schedulers import cosine


def _lrs(config: dict, steps: int) -> list[float]:
    optimizer, scheduler = config["optimizer"], config["scheduler"]
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def _opt(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_cosine_defaults_to_the_whole_run():
    opt = _opt()
    lrs = _lrs({"optimizer": opt, **cosine(opt, max_epochs=10)}, 10)
    expected = [0.05 * (1 + math.cos(math.pi * e / 10)) for e in range(10)]
    assert lrs == pytest.approx(expected)


def test_cosine_with_warmup_and_eta_min():
    opt = _opt()
    config = cosine(opt, max_epochs=12, warmup_epochs=2, eta_min=0.01, warmup_start_factor=0.1)
    lrs = _lrs({"optimizer": opt, **config}, 12)
    assert lrs[0] == pytest.approx(0.01) and lrs[1] == pytest.approx(0.055)  # linear ramp 0.1x -> 1x
    cos = [0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * e / 10)) for e in range(10)]
    assert lrs[2:] == pytest.approx(cos)


def test_cosine_per_step_has_the_same_curve_in_epochs():
    opt = _opt()
    config = cosine(opt, max_epochs=4, steps_per_epoch=5, interval="step")
    assert config["interval"] == "step"
    lrs = _lrs({"optimizer": opt, **config}, 20)
    assert lrs[::5] == pytest.approx([0.05 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])


def test_explicit_t_max_is_in_epochs():
    opt = _opt()
    lrs = _lrs({"optimizer": opt, **cosine(opt, max_epochs=50, T_max=25)}, 26)
    assert lrs[25] == pytest.approx(0.0, abs=1e-12)  # the surveillance study's T_max = half the epochs


def test_invalid_interval():
    with pytest.raises(ConfigError, match="scheduler.interval"):
        cosine(_opt(), max_epochs=3, interval="batch")


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("scheduler", ["cosine", "none"])
def test_every_optimizer_and_scheduler_config_steps(make_cfg, optimizer, scheduler):
    cfg = make_cfg(f"optimizer={optimizer}", f"scheduler={scheduler}")
    param = torch.nn.Parameter(torch.ones(3))
    opt = instantiate(cfg.optimizer)(params=[{"params": [param], "name": "head"}])
    assert type(opt).__name__.lower() == optimizer
    assert opt.param_groups[0]["lr"] == cfg.optimizer.lr
    before = param.detach().clone()
    param.sum().backward()
    opt.step()
    assert not torch.equal(before, param.detach())
    if scheduler == "cosine":
        config = instantiate(cfg.scheduler)(opt, max_epochs=4, steps_per_epoch=1)
        config["scheduler"].step()
        assert opt.param_groups[0]["lr"] == pytest.approx(cfg.optimizer.lr * 0.5 * (1 + math.cos(math.pi / 4)))
    else:
        assert not cfg.scheduler


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_every_optimizer_config_takes_the_fused_kernel_with_the_for_loop_update(make_cfg, optimizer):
    cfg = make_cfg(f"optimizer={optimizer}", "optimizer.weight_decay=0.01")
    torch.manual_seed(0)
    start, grads = torch.randn(64, 1000), [torch.randn(64, 1000) for _ in range(3)]  # long enough for SIMD
    params = {}
    for fused in (True, False):
        param = torch.nn.Parameter(start.clone())
        opt = instantiate(cfg.optimizer)(params=[param], **({} if fused else {"fused": None}))
        assert opt.param_groups[0]["fused"] is (fused or None)
        for grad in grads:  # a few steps, so that the moments (Adam) and the momentum (SGD) count
            param.grad = grad.clone()
            opt.step()
        params[fused] = param.detach()
    assert not torch.equal(params[True], start)
    torch.testing.assert_close(params[True], params[False], rtol=1e-6, atol=1e-7)
