"""The optimizer factory: the names the questions compare, only trainable parameters, every setting in the
optimizer's param_groups, fused kernels where the device has them."""
import pytest
import torch
import torch.nn as nn

from labkit.training.optim import OPTIMIZERS, make_optimizer


def model_with_a_frozen_layer() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    for p in model[0].parameters():
        p.requires_grad_(False)
    return model


def test_names():
    assert OPTIMIZERS == ("sgd", "adam", "adamw")
    params = list(nn.Linear(2, 2).parameters())
    assert type(make_optimizer("sgd", params, 0.1)) is torch.optim.SGD
    assert type(make_optimizer("adam", params, 0.1)) is torch.optim.Adam
    assert type(make_optimizer("adamw", params, 0.1)) is torch.optim.AdamW


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_frozen_parameters_are_left_out(name):
    model = model_with_a_frozen_layer()
    opt = make_optimizer(name, model.parameters(), 0.1)  # a generator, as models give them
    (group,) = opt.param_groups
    assert [id(p) for p in group["params"]] == [id(p) for p in model[2].parameters()]
    frozen = model[0].weight.detach().clone()
    trained = model[2].weight.detach().clone()
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    assert torch.equal(model[0].weight, frozen) and not torch.equal(model[2].weight, trained)


def test_sgd_settings_reach_the_param_groups():
    (group,) = make_optimizer("sgd", nn.Linear(2, 2).parameters(), 0.05, momentum=0.9, weight_decay=1e-4).param_groups
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.05, 0.9, 1e-4, False)
    (plain,) = make_optimizer("sgd", nn.Linear(2, 2).parameters(), 0.05).param_groups
    assert plain["momentum"] == 0.0 and plain["weight_decay"] == 0.0


def test_adam_settings_reach_the_param_groups():
    # 3e-4, not torch's default 1e-3: an Adam built without the lr would pass with 1e-3
    (group,) = make_optimizer("adam", nn.Linear(2, 2).parameters(), 3e-4, betas=[0.5, 0.99],  # a list, as YAML gives
                              weight_decay=0.01).param_groups
    assert (group["lr"], group["betas"], group["weight_decay"]) == (3e-4, (0.5, 0.99), 0.01)
    (default,) = make_optimizer("adam", nn.Linear(2, 2).parameters(), 1e-5).param_groups
    assert default["betas"] == (0.9, 0.999) and "momentum" not in default  # None: the optimizer's own defaults
    assert default["lr"] == 1e-5 and default["weight_decay"] == 0.0
    (decoupled,) = make_optimizer("adamw", nn.Linear(2, 2).parameters(), 1e-5).param_groups
    assert decoupled["weight_decay"] == 0.01  # AdamW's own default
    with pytest.raises(ValueError, match="does not take momentum"):  # never silently ignored
        make_optimizer("adam", nn.Linear(2, 2).parameters(), 1e-5, momentum=0.9)


@pytest.mark.parametrize("settings, message", [
    ({"optimizer": "adam", "momentum": 0.9}, "run 'r': momentum=0.9 does not apply to optimizer='adam'.*optimizer: sgd"),
    ({"optimizer": "adamw", "momentum": 0.5}, "momentum=0.5 does not apply to optimizer='adamw'"),
    ({"optimizer": "sgd", "betas": [0.5, 0.9]}, r"betas=\[0.5, 0.9\] does not apply to optimizer='sgd'.*optimizer: adam"),
    ({"optimizer": "adam", "betas": [0.9, 1.0]}, r"betas=\[0.9, 1.0\] is not allowed"),
    ({"optimizer": "adam", "betas": [0.9]}, r"betas=\[0.9\] is not allowed"),
])
def test_a_setting_the_optimizer_would_ignore_is_refused(settings, message):
    from labkit.params import ParameterError
    from labkit.training.optim import check_settings
    with pytest.raises(ParameterError, match=message):
        check_settings("r", {"lr": 1e-3, **settings})
    assert check_settings("r", {"optimizer": "sgd", "momentum": 0.9, "betas": None}) == {
        "optimizer": "sgd", "momentum": 0.9, "betas": None}
    assert check_settings("r", {"optimizer": "adam", "betas": (0, 0.5)})["betas"] == [0.0, 0.5]
    # the optimizer's own default spelled out is the same run as leaving it null (one training, one key)
    assert check_settings("r", {"optimizer": "adam", "betas": [0.9, 0.999], "weight_decay": 0})["betas"] is None
    assert check_settings("r", {"optimizer": "sgd", "momentum": 0.0})["momentum"] is None
    assert check_settings("r", {"optimizer": "adamw", "weight_decay": 0.0})["weight_decay"] == 0.0  # not AdamW's


@pytest.mark.parametrize("name, lr", [("adam", 1e-4), ("adam", 1e-5), ("sgd", 0.0123)])
def test_the_requested_learning_rate_sets_the_step_size(name, lr):
    """The full profile's learning rates (1e-4, 1e-5), seen in the step itself: plain SGD moves a weight by
    lr x gradient; Adam's first step moves every weight with a nonzero gradient by lr (m / sqrt(v) = +-1)."""
    layer = nn.Linear(3, 1, bias=False)
    start = layer.weight.detach().clone()
    opt = make_optimizer(name, layer.parameters(), lr)
    layer(torch.tensor([[1.0, -2.0, 0.5]])).sum().backward()
    grad = layer.weight.grad.clone()
    opt.step()
    step = start - layer.weight.detach()
    expected = lr * grad if name == "sgd" else lr * grad.sign()
    assert torch.allclose(step, expected, rtol=1e-2, atol=0), (step, expected)  # float32 rounding


def _torch_has_a_fused_cpu_kernel(name: str) -> bool:
    """torch grew fused CPU kernels in 2.4; pyproject admits torch 2.2, where make_optimizer falls back."""
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    try:
        cls(nn.Linear(1, 1).parameters(), lr=0.1, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fused_on_the_cpu(name):
    if not _torch_has_a_fused_cpu_kernel(name):
        pytest.skip(f"torch {torch.__version__} has no fused {name} kernel for the CPU")
    opt = make_optimizer(name, nn.Linear(2, 2).parameters(), 0.1)
    assert opt.defaults["fused"] is True


def test_falls_back_where_there_is_no_fused_kernel(monkeypatch):
    real = torch.optim.Adam
    calls = []

    def adam(params, **kw):
        calls.append(kw.get("fused"))
        if kw.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported "
                               "devices")
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", adam)
    opt = make_optimizer("adam", nn.Linear(2, 2).parameters(), 0.1, betas=(0.8, 0.9))
    assert calls == [True, None] and not opt.defaults["fused"] and opt.param_groups[0]["betas"] == (0.8, 0.9)


def test_unknown_name():
    with pytest.raises(ValueError, match=r"^optimizer='rmsprop' is not allowed; allowed: sgd, adam, adamw$"):
        make_optimizer("rmsprop", nn.Linear(2, 2).parameters(), 0.1)


def test_the_fallback_keeps_the_learning_rate(monkeypatch):
    real = torch.optim.SGD

    def sgd(params, **kw):
        if kw.get("fused"):
            raise RuntimeError("no fused kernel here")
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "SGD", sgd)
    (group,) = make_optimizer("sgd", nn.Linear(2, 2).parameters(), 0.0123, momentum=0.5).param_groups
    assert (group["lr"], group["momentum"]) == (0.0123, 0.5)


def test_a_run_without_an_optimizer_setting_is_checked_as_adam():
    """The questions' default optimizer is Adam: betas pass, momentum is refused naming Adam."""
    from labkit.params import ParameterError
    from labkit.training.optim import check_settings
    assert check_settings("r", {"lr": 1e-3, "betas": (0.8, 0.9)}) == {"lr": 1e-3, "betas": [0.8, 0.9]}
    with pytest.raises(ParameterError, match="momentum=0.9 does not apply to optimizer='adam'"):
        check_settings("r", {"lr": 1e-3, "momentum": 0.9})


@pytest.mark.parametrize("settings, expected", [
    ({"optimizer": "sgd", "lr": 0.02, "momentum": 0.8, "weight_decay": 1e-3},
     {"lr": 0.02, "momentum": 0.8, "weight_decay": 1e-3}),
    ({"optimizer": "adamw", "lr": 2e-4, "betas": [0.7, 0.95], "weight_decay": 0.05},
     {"lr": 2e-4, "betas": (0.7, 0.95), "weight_decay": 0.05}),
    ({"optimizer": "adam", "lr": 3e-4, "momentum": None, "betas": None, "weight_decay": None},
     {"lr": 3e-4, "betas": (0.9, 0.999), "weight_decay": 0.0}),
])
def test_for_run_builds_what_the_run_settings_ask_for(settings, expected):
    from labkit.runs import Run
    from labkit.training.optim import for_run
    model = model_with_a_frozen_layer()
    opt = for_run(Run("r", settings, 0), model.parameters())
    assert type(opt).__name__ == {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}[settings["optimizer"]]
    (group,) = opt.param_groups
    assert {k: group[k] for k in expected} == expected
    assert [id(p) for p in group["params"]] == [id(p) for p in model[2].parameters()]
