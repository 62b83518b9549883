import numpy as np
import pytest
import torch

from preedit.network import NetConfig, NV12PreEditor, PreEditorNet, identity_model, load_checkpoint, save_checkpoint


def _frames(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h * 3 // 2, w), dtype=torch.uint8, generator=g)


def _perturbed(seed=0):
    net = PreEditorNet()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in (net.film, net.up_y, net.up_uv):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.05)
    return net.eval()


@pytest.mark.parametrize("h,w", [(360, 640), (270, 482), (2, 2), (358, 642), (6, 10)])
def test_untrained_model_is_exact_identity_when_any_even_size(h, w):
    x = _frames(2, h, w)
    with torch.no_grad():
        assert torch.equal(NV12PreEditor(identity_model())(x), x)


@pytest.mark.parametrize("h,w", [(270, 482), (358, 642)])
def test_network_keeps_shape_and_bounds_delta_when_perturbed(h, w):
    x = _frames(1, h, w, seed=3)
    net = _perturbed()
    with torch.no_grad():
        y = NV12PreEditor(net)(x, torch.full((1, 1), 40.0))
    assert y.shape == x.shape and y.dtype == torch.uint8
    diff = (y.int() - x.int()).abs()
    assert 0 < diff.max() <= net.config.max_delta + 1


def test_network_output_depends_on_qp_when_film_trained():
    x = _frames(1, 64, 64, seed=4)
    net = _perturbed()
    with torch.no_grad():
        a = NV12PreEditor(net)(x, torch.full((1, 1), 22.0))
        b = NV12PreEditor(net)(x, torch.full((1, 1), 47.0))
    assert not torch.equal(a, b)


def test_network_batches_are_independent():
    x = _frames(3, 32, 48, seed=5)
    net = _perturbed()
    with torch.no_grad():
        full = NV12PreEditor(net)(x)
        single = NV12PreEditor(net)(x[1:2])
    assert torch.equal(full[1:2], single)


def test_checkpoint_roundtrip_keeps_weights_and_config(tmp_path):
    net = PreEditorNet(NetConfig(channels=8, depth=1))
    save_checkpoint(net, tmp_path / "m.pt", note="x")
    loaded, extra = load_checkpoint(tmp_path / "m.pt")
    assert loaded.config == net.config and extra == {"note": "x"}
    for a, b in zip(net.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_netconfig_rejects_bad_delta():
    with pytest.raises(ValueError, match="max_delta"):
        NetConfig(max_delta=0)
