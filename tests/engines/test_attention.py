"""Attention out of the box: a small decoder block (tied embeddings, learned positions,
LayerNorm, causal self-attention through ``nn.MultiheadAttention`` and through
``F.scaled_dot_product_attention``, GELU MLP, residuals, dropout) under every engine
that supports it, against float64 references from ``torch.autograd.functional``
(``torch.func.hessian`` is wrong for affine LayerNorm in torch 2.13)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

import hesskit as hk
from hesskit.engines import FuncEngine
from hesskit.engines.base import differentiable_attention

VOCAB, WIDTH, LENGTH, HEADS, DROPOUT = 7, 4, 5, 2, 0.1


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(self, width, heads, dropout):
        super().__init__()
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.heads, self.dropout = heads, dropout

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(n, t, d))


class Decoder(nn.Module):
    """Token embedding tied to the output head, learned positions, two pre-LayerNorm
    attention sublayers (``nn.MultiheadAttention`` with a boolean causal mask, which
    takes PyTorch's fast path in eval mode, and SDPA) and a GELU MLP, with residuals.
    Outputs ``(N, vocab, T)`` logits for ``nn.CrossEntropyLoss`` over ``(N, T)`` tokens."""

    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, WIDTH)
        self.pos = nn.Parameter(0.1 * torch.randn(LENGTH, WIDTH))
        self.ln1, self.ln2, self.ln3, self.lnf = (nn.LayerNorm(WIDTH) for _ in range(4))
        self.mha = nn.MultiheadAttention(WIDTH, HEADS, dropout=DROPOUT, batch_first=True)
        self.sdpa = CausalSelfAttention(WIDTH, HEADS, DROPOUT)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 2 * WIDTH), nn.GELU(), nn.Dropout(DROPOUT),
                                 nn.Linear(2 * WIDTH, WIDTH))
        self.head = nn.Linear(WIDTH, VOCAB, bias=False)
        self.head.weight = self.tok.weight
        self.register_buffer("causal", torch.ones(LENGTH, LENGTH, dtype=torch.bool).triu(1))

    def forward(self, tokens):
        t = tokens.shape[1]
        x = self.tok(tokens) + self.pos[:t]
        h = self.ln1(x)
        x = x + self.mha(h, h, h, attn_mask=self.causal[:t, :t], need_weights=False)[0]
        x = x + self.sdpa(self.ln2(x))
        x = x + self.mlp(self.ln3(x))
        return self.head(self.lnf(x)).transpose(1, 2)


def _perturb_layer_norms(model):
    """Non-trivial affine LayerNorm parameters (the default 1 and 0 hide errors)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.add_(0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.add_(0.3 * torch.randn(m.bias.shape, generator=g))


@pytest.fixture(scope="module")
def problem():
    """The decoder in float64 with its data and reference Hessian and GGN (eval mode)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        model = Decoder()
        _perturb_layer_norms(model)
        X = torch.randint(0, VOCAB, (6, LENGTH))
        y = torch.randint(0, VOCAB, (6, LENGTH))
        loss_fn = nn.CrossEntropyLoss()
        # named_parameters() lists the tied embedding once; functional_call ties the
        # head to it again (tie_weights=True), so the reference sees one parameter.
        named = list(model.named_parameters())
        names = [n for n, _ in named]
        assert "head.weight" not in names
        shapes, sizes = [p.shape for _, p in named], [p.numel() for _, p in named]
        flat = torch.cat([p.detach().reshape(-1) for _, p in named])

        def outputs(theta):
            params = {n: t.view(s) for n, t, s in zip(names, theta.split(sizes), shapes)}
            return functional_call(model, params, (X,))

        model.eval()
        with sdpa_kernel(SDPBackend.MATH):
            H = torch.autograd.functional.hessian(lambda t: loss_fn(outputs(t), y), flat)
            out = outputs(flat).detach()
            J = torch.autograd.functional.jacobian(outputs, flat).reshape(out.numel(), -1)
            H_out = torch.autograd.functional.hessian(
                lambda o: loss_fn(o.view_as(out), y), out.reshape(-1))
        model.train()  # the objective must evaluate in eval mode whatever the model's mode
        yield model, loss_fn, X, y, H, J.T @ H_out @ J
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("engine", ["func", "autograd", "auto"])
@pytest.mark.parametrize("operator", ["hessian", "ggn"])
def test_decoder_block_products_match_the_reference(problem, engine, operator):
    model, loss_fn, X, y, H, G = problem
    obj = hk.Objective(model, loss_fn, (X, y), mode="eval")
    op = (hk.HessianOperator if operator == "hessian" else hk.GGNOperator)(obj, engine=engine)
    assert op.shape[0] == H.shape[0]
    # one narrow block and one of FuncEngine.min_columns (auto: autograd, then func)
    for k in (1, FuncEngine.min_columns):
        V = torch.randn(op.shape[0], k, generator=torch.Generator().manual_seed(k),
                        dtype=torch.float64)
        expected = (H if operator == "hessian" else G) @ V
        torch.testing.assert_close(op @ V, expected, rtol=1e-9, atol=1e-10)
    assert model.training  # the model's mode is restored


def test_decoder_block_leaves_the_attention_settings_unchanged(problem):
    model, loss_fn, X, y, H, _ = problem
    before = (torch.backends.mha.get_fastpath_enabled(),
              torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled())
    op = hk.HessianOperator(hk.Objective(model, loss_fn, (X, y)), engine="func")
    v = torch.zeros(op.shape[0], dtype=torch.float64)
    v[0] = 1
    torch.testing.assert_close(op @ v, H[:, 0], rtol=1e-9, atol=1e-10)
    after = (torch.backends.mha.get_fastpath_enabled(),
             torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled())
    assert after == before


def test_differentiable_attention_restores_the_fast_path_after_an_error():
    torch.backends.mha.set_fastpath_enabled(True)
    with pytest.raises(KeyError):
        with differentiable_attention():
            assert not torch.backends.mha.get_fastpath_enabled()
            raise KeyError("inside")
    assert torch.backends.mha.get_fastpath_enabled()


def test_decoder_block_in_train_mode_draws_the_same_dropout_masks_for_every_engine(problem):
    """mode="train": dropout in both attentions and the MLP is active, its masks drawn
    from the objective's seed, so repeated products and the two engines agree."""
    model, loss_fn, X, y, H, _ = problem
    obj = hk.Objective(model, loss_fn, (X, y), mode="train")
    V = torch.randn(obj.n_params, 2, generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)
    products = {}
    for engine in ("func", "autograd"):
        op = hk.HessianOperator(obj, engine=engine)
        products[engine] = op @ V
        assert torch.equal(op @ V, products[engine])
    torch.testing.assert_close(products["func"], products["autograd"], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(products["func"], H @ V)  # dropout is really active
