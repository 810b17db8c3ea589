"""The multiply-adds `rcnn bench methods` sets against the floor, against the layers' formulas: a
convolution and a linear layer, forward, and forward with backward (weights' and inputs' gradients)."""

import torch

from stages.bench.methods import counted_macs


def test_forward_and_backward_multiply_adds_follow_the_layers_formulas():
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1)
    fc = torch.nn.Linear(8 * 16 * 16, 10)
    image = torch.randn(2, 3, 16, 16)

    def loss() -> torch.Tensor:
        return fc(conv(image).flatten(1)).sum()

    conv_forward = 2 * 8 * 16 * 16 * 3 * 3 * 3  # outputs x (in channels x kernel area)
    fc_forward = 2 * 8 * 16 * 16 * 10  # batch x in x out
    assert counted_macs(loss) == (conv_forward, fc_forward)
    # backward: the conv's weights' gradient (the image needs none); the fc's inputs' and weights'
    assert counted_macs(loss, backward=True) == (2 * conv_forward, 3 * fc_forward)
