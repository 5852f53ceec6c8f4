"""Window convolutions: the same convolution as nn.Conv2d, computed on the taps that touch the input."""
import pytest
import torch

from labkit.training.convs import WindowConv2d, torchvision_resnet, window_convs


@pytest.mark.parametrize("kernel, stride, padding, size, taps", [
    (3, 1, 1, (1, 1), (slice(1, 2), slice(1, 2))),  # layer4's 3x3 convolutions on a 32-px image's 1x1 map
    (3, 2, 1, (2, 2), (slice(1, 3), slice(1, 3))),  # layer4's first, stride 2, from layer3's 2x2 map
    (3, 1, 1, (2, 2), None),  # four outputs: each needs other taps
    (3, 1, 1, (1, 2), None),  # two outputs along the width
    (1, 2, 0, (2, 2), None),  # the downsample: a 1x1 kernel cannot cover a 2x2 input
    (3, 1, 0, (3, 3), None),  # every tap touches the input: nothing to leave out
])
def test_a_window_conv_is_the_same_convolution_on_the_taps_that_touch_the_input(kernel, stride, padding, size,
                                                                                  taps):
    from torch.utils.flop_counter import FlopCounterMode
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(6, 5, kernel, stride, padding)
    window = window_convs(torch.nn.Sequential(torch.nn.Conv2d(6, 5, kernel, stride, padding)))[0]
    window.load_state_dict(plain.state_dict())
    assert isinstance(window, WindowConv2d) and window.window_taps(size) == taps
    x = torch.randn(4, 6, *size, requires_grad=True)
    outputs, grads, flops = [], [], []
    for conv in (plain, window):
        x.grad = None
        conv.zero_grad()
        with FlopCounterMode(display=False) as counter:
            out = conv(x)
        out.pow(2).sum().backward()
        outputs.append(out)
        grads.append([x.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone()])
        flops.append(counter.get_total_flops())
    torch.testing.assert_close(outputs[1], outputs[0])
    for got, expected in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, expected)
    kept = kernel * kernel if taps is None else (taps[0].stop - taps[0].start) * (taps[1].stop - taps[1].start)
    assert flops[1] * kernel * kernel == flops[0] * kept  # only the kept taps are computed


def test_torchvision_resnet_has_window_convs_and_torchvisions_builder_arguments():
    model = torchvision_resnet("resnet18", weights=None, num_classes=7, zero_init_residual=True)
    assert model.fc.out_features == 7 and not model.layer1[0].bn2.weight.any()  # zero_init_residual reached it
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 20 and all(type(m) is WindowConv2d for m in convs)
