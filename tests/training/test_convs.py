"""Window convolutions: the same convolution as nn.Conv2d, computed on the taps that touch the input."""
import pytest
import torch

from labkit.training.convs import WindowConv2d, torchvision_resnet, window_convs


ONE_TAP = (slice(1, 2), slice(1, 2))


@pytest.mark.parametrize("conv, size, taps", [
    ({"kernel_size": 3, "padding": 1}, (1, 1), ONE_TAP),  # layer4's 3x3 convolutions on a 32-px image's 1x1 map
    ({"kernel_size": 3, "stride": 2, "padding": 1}, (2, 2), (slice(1, 3), slice(1, 3))),  # layer4's first
    ({"kernel_size": 3, "padding": 1, "groups": 2}, (1, 1), ONE_TAP),  # grouped
    ({"kernel_size": 3, "padding": 1}, (2, 2), None),  # four outputs: each needs other taps
    ({"kernel_size": 3, "padding": 1}, (1, 2), None),  # two outputs along the width
    ({"kernel_size": 1, "stride": 2}, (2, 2), None),  # the downsample: a 1x1 kernel cannot cover a 2x2 input
    ({"kernel_size": 3}, (3, 3), None),  # every tap touches the input: nothing to leave out
    ({"kernel_size": 3, "padding": 1, "padding_mode": "circular"}, (1, 1), None),  # padding that is not zeros
    ({"kernel_size": 3, "padding": "same"}, (1, 1), None),  # padding by name
    ({"kernel_size": 3, "padding": 2, "dilation": 2}, (1, 1), None),  # dilated: other taps, left to torch
], ids=["1x1-map", "stride-2", "grouped", "2x2-map", "1x2-map", "1x1-kernel", "no-padding", "circular", "same",
        "dilated"])
@pytest.mark.parametrize("batch", [(4,), ()], ids=["batched", "unbatched"])
def test_a_window_conv_is_the_same_convolution_on_the_taps_that_touch_the_input(conv, size, taps, batch):
    from torch.utils.flop_counter import FlopCounterMode
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(6, 4, **conv)
    window = window_convs(torch.nn.Sequential(torch.nn.Conv2d(6, 4, **conv)))[0]
    window.load_state_dict(plain.state_dict())
    assert isinstance(window, WindowConv2d) and window.window_taps(size) == taps
    x = torch.randn(*batch, 6, *size, requires_grad=True)
    outputs, grads, flops = [], [], []
    for module in (plain, window):
        x.grad = None
        module.zero_grad()
        with FlopCounterMode(display=False) as counter:
            out = module(x)
        out.pow(2).sum().backward()
        outputs.append(out)
        grads.append([x.grad.clone(), module.weight.grad.clone(), module.bias.grad.clone()])
        flops.append(counter.get_total_flops())
    torch.testing.assert_close(outputs[1], outputs[0])
    for got, expected in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, expected)
    kept = 9 if taps is None else (taps[0].stop - taps[0].start) * (taps[1].stop - taps[1].start)
    if conv["kernel_size"] == 3:
        assert flops[1] * 9 == flops[0] * kept  # only the kept taps are computed


def test_torchvision_resnet_has_window_convs_and_torchvisions_builder_arguments():
    model = torchvision_resnet("resnet18", weights=None, num_classes=7, zero_init_residual=True)
    assert model.fc.out_features == 7 and not model.layer1[0].bn2.weight.any()  # zero_init_residual reached it
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 20 and all(type(m) is WindowConv2d for m in convs)
