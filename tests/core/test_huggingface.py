"""A Hugging Face causal language model through the ``batch=``/``output=`` adapters.

A GPT-2 built from a tiny local config (2 layers, 64 wide; nothing downloaded),
token cross-entropy over right-padded batches (``-100`` labels on padding): the
objective must be the loss of one batch holding every sequence, however the data
is batched, and its Hessian the float64 ``torch.autograd.functional.hessian`` of
that loss. Attention runs in the "eager" implementation (plain matmul + softmax),
whose double backward every engine can take.
"""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import hesskit as hk

transformers = pytest.importorskip("transformers")

PARAMS = ["transformer.ln_f", "transformer.h.1.attn.c_attn.bias"]
LENGTHS = [8, 3, 5, 8, 2, 6, 4]


def _model():
    config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=64, n_layer=2,
                                     n_head=2, bos_token_id=1, eos_token_id=1,
                                     attn_implementation="eager")
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).double().eval()


def _sequences():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(1, 50, (n,), generator=g) for n in LENGTHS]


def _pad(sequences):
    """A tokenizer-style batch: right padding with token 0, labels -100 on padding."""
    width = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(sequences):
        ids[i, :len(s)], mask[i, :len(s)] = s, 1
    return {"input_ids": ids, "attention_mask": mask,
            "labels": ids.masked_fill(mask == 0, -100)}


def _batch(b):
    """Model keyword arguments and the next-token targets."""
    return {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}, b["labels"][:, 1:]


def _logits(out):
    """Next-token logits as (N, vocab, T - 1), the layout nn.CrossEntropyLoss takes."""
    return out.logits[:, :-1].transpose(1, 2)


def _reference(model):
    """Loss and float64 Hessian (selected parameters) of the whole padded dataset."""
    whole = _pad(_sequences())
    names = [n for n, _ in model.named_parameters()
             if any(n == p or n.startswith(p + ".") for p in PARAMS)]
    params = [dict(model.named_parameters())[n].detach() for n in names]
    sizes = [p.numel() for p in params]

    def loss(flat):
        state = {n: t.view_as(p) for n, t, p in zip(names, flat.split(sizes), params)}
        inputs, targets = _batch(whole)
        out = torch.func.functional_call(model, state, (), inputs)
        return nn.CrossEntropyLoss()(_logits(out), targets)

    flat = torch.cat([p.reshape(-1) for p in params])
    with torch.no_grad():
        value = loss(flat)
        hf_loss = model(**whole).loss  # Hugging Face's own shifted, padding-aware mean
    torch.testing.assert_close(value.float(), hf_loss, rtol=1e-6, atol=0)  # it takes float32
    return value, torch.autograd.functional.hessian(loss, flat)


def _objectives(model):
    loader = DataLoader(_sequences(), batch_size=4, collate_fn=_pad)  # each batch its own width
    kwargs = dict(params=PARAMS, batch=_batch, output=_logits)
    return {"one_batch": hk.Objective(model, nn.CrossEntropyLoss(), _pad(_sequences()), **kwargs),
            "batch_size=3": hk.Objective(model, nn.CrossEntropyLoss(), _pad(_sequences()),
                                         batch_size=3, **kwargs),
            "loader": hk.Objective(model, nn.CrossEntropyLoss(), loader, **kwargs)}


@pytest.fixture(scope="module")
def gpt2():
    model = _model()
    return model, _reference(model)


@pytest.mark.parametrize("engine", ["func", "autograd"])
def test_gpt2_padded_token_loss_and_hessian_match_one_batch(gpt2, engine):
    model, (loss, hessian) = gpt2
    for name, obj in _objectives(model).items():
        assert obj.n_samples == len(LENGTHS) and not obj.plain_batches, name
        torch.testing.assert_close(obj.loss(), loss, rtol=1e-12, atol=0, msg=name)
        H = hk.HessianOperator(obj, engine=engine).dense()
        torch.testing.assert_close(H, hessian, rtol=1e-8, atol=1e-10, msg=name)


def test_gpt2_without_adapters_is_refused_by_name(gpt2):
    model, _ = gpt2
    with pytest.raises(TypeError, match=r"batch 0 is a dict .*'input_ids'.*batch="):
        hk.Objective(model, nn.CrossEntropyLoss(), _pad(_sequences()))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), _pad(_sequences()), batch=_batch,
                       reduction="mean")
    with pytest.raises(TypeError, match=r"output: the model returned a CausalLMOutput.*output="):
        obj.loss()
