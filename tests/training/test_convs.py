"""Window convolutions: the same convolution as nn.Conv2d, computed on the taps that touch the input."""
import pytest
import torch

from labkit.training.convs import WindowConv2d, plain_convs, torchvision_resnet, window_convs


ONE_TAP = (slice(1, 2), slice(1, 2))


@pytest.mark.parametrize("conv, size, taps", [
    ({"kernel_size": 3, "padding": 1}, (1, 1), ONE_TAP),  # layer4's 3x3 convolutions on a 32-px image's 1x1 map
    ({"kernel_size": 3, "stride": 2, "padding": 1}, (2, 2), (slice(1, 3), slice(1, 3))),  # layer4's first
    ({"kernel_size": 3, "stride": 2, "padding": 1}, (1, 1), ONE_TAP),  # the same at 16 px, on a 1x1 map
    ({"kernel_size": (1, 3), "stride": (2, 1), "padding": (0, 1)}, (1, 1), (slice(0, 1), slice(1, 2))),  # 1x3
    ({"kernel_size": 3, "padding": (0, 1)}, (3, 1), (slice(0, 3), slice(1, 2))),  # rows all taps, columns one
    ({"kernel_size": 3, "padding": 1, "groups": 2}, (1, 1), ONE_TAP),  # grouped
    ({"kernel_size": 3, "padding": 1}, (2, 2), None),  # four outputs: each needs other taps
    ({"kernel_size": 3, "padding": 1}, (1, 2), None),  # two outputs along the width
    ({"kernel_size": 1, "stride": 2}, (2, 2), None),  # the downsample: a 1x1 kernel cannot cover a 2x2 input
    ({"kernel_size": 3}, (3, 3), None),  # every tap touches the input: nothing to leave out
    ({"kernel_size": 3, "padding": 1, "padding_mode": "circular"}, (1, 1), None),  # padding that is not zeros
    ({"kernel_size": 3, "padding": "same"}, (1, 1), None),  # padding by name
    ({"kernel_size": 3, "padding": 2, "dilation": 2}, (1, 1), None),  # dilated: other taps, left to torch
    ({"kernel_size": 3, "padding": (1,)}, (1, 1), None),  # one padding for both sides: torch's to broadcast
    ({"kernel_size": 3, "padding": 1, "stride": (1,)}, (1, 1), None),  # one stride for both
], ids=["1x1-map", "stride-2", "stride-2-1x1-map", "1x3-kernel", "rows-and-columns", "grouped", "2x2-map",
        "1x2-map", "1x1-kernel", "no-padding", "circular", "same", "dilated", "one-padding", "one-stride"])
@pytest.mark.parametrize("batch, channels_last", [((4,), False), ((), False), ((4,), True)],
                         ids=["batched", "unbatched", "channels-last"])  # channels-last: the stand-in's layout
def test_a_window_conv_is_the_same_convolution_on_the_taps_that_touch_the_input(conv, size, taps, batch,
                                                                                  channels_last):
    from torch.utils.flop_counter import FlopCounterMode
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(6, 4, **conv)
    window = window_convs(torch.nn.Sequential(torch.nn.Conv2d(6, 4, **conv)))[0]
    window.load_state_dict(plain.state_dict())
    assert isinstance(window, WindowConv2d) and window.window_taps(size) == taps
    x = torch.randn(*batch, 6, *size)
    if channels_last:
        plain, window = (m.to(memory_format=torch.channels_last) for m in (plain, window))
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
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
    kernel = plain.kernel_size[0] * plain.kernel_size[1]
    kept = kernel if taps is None else (taps[0].stop - taps[0].start) * (taps[1].stop - taps[1].start)
    assert flops[1] * kernel == flops[0] * kept  # only the kept taps are computed


def test_other_devices_and_traced_graphs_keep_torchs_convolution():
    """The oneDNN weakness is the CPU's: a GPU (here the meta device, shapes only) computes the full kernel, and
    torch.fx (torchvision's feature extractor) traces a graph instead of failing on the window's shape test."""
    from torch.utils.flop_counter import FlopCounterMode
    from torchvision.models.feature_extraction import create_feature_extractor
    conv = window_convs(torch.nn.Sequential(torch.nn.Conv2d(6, 4, 3, padding=1)))[0].to("meta")
    with FlopCounterMode(display=False) as counter:
        conv(torch.randn(2, 6, 1, 1, device="meta"))
    assert counter.get_total_flops() == 2 * 2 * 4 * 6 * 9  # all nine taps
    model = torchvision_resnet("resnet18", weights=None).eval()
    features = create_feature_extractor(model, {"layer4": "layer4"})
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(features(x)["layer4"], torch.nn.Sequential(*list(model.children())[:-2])(x))


def test_torchvision_resnet_has_window_convs_and_torchvisions_builder_arguments():
    model = torchvision_resnet("resnet18", weights=None, num_classes=7, zero_init_residual=True)
    assert model.fc.out_features == 7 and not model.layer1[0].bn2.weight.any()  # zero_init_residual reached it
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 20 and all(type(m) is WindowConv2d for m in convs)


def test_plain_convs_undoes_window_convs_and_leaves_other_modules_alone():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv1d(4, 4, 3), torch.nn.ReLU())
    window_convs(model)
    assert [type(m) for m in model] == [WindowConv2d, torch.nn.Conv1d, torch.nn.ReLU]
    assert plain_convs(model) is model and [type(m) for m in model] == [torch.nn.Conv2d, torch.nn.Conv1d,
                                                                        torch.nn.ReLU]
