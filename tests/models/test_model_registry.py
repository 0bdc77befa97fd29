import pytest
import torch
from torch import nn

from hesskit.models import get_model, list_models

DEFAULT_KWARGS = {"mlp": dict(in_dim=4), "deep_linear": dict(in_dim=4, widths=(5,), out_dim=3)}


def test_list_models():
    assert list_models() == sorted([
        "mlp", "small_cnn", "deep_linear", "lenet", "vgg11", "vgg11_bn", "resnet18", "yao_cnn",
    ])


def test_builder_arguments_pass_through():
    def linears(net):
        return [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)]

    assert linears(get_model("mlp", in_dim=2, hidden=(100, 100), n_classes=3)) == \
        [(2, 100), (100, 100), (100, 3)]
    dropout = get_model("mlp", in_dim=64, hidden=(256, 256), n_classes=10, dropout=0.5)
    assert linears(dropout)[0] == (64, 256) and sum(isinstance(m, nn.Dropout) for m in dropout) == 2
    vgg_bn = get_model("vgg11_bn", width_mult=0.125)
    assert any(isinstance(m, nn.BatchNorm2d) for m in vgg_bn.modules())


@pytest.mark.parametrize("name", ["mlp", "deep_linear", "small_cnn", "lenet"])
def test_seed_reproduces_weights_without_touching_global_state(name):
    kwargs = DEFAULT_KWARGS.get(name, {})
    state = torch.random.get_rng_state()
    a = get_model(name, seed=3, **kwargs)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = get_model(name, seed=3, **kwargs)
    c = get_model(name, seed=4, **kwargs)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_errors():
    with pytest.raises(ValueError, match="name must be one of"):
        get_model("vgg16")
    with pytest.raises(TypeError):
        get_model("lenet", depth=3)
    with pytest.raises(TypeError, match="seed"):
        get_model("lenet", seed="0")
