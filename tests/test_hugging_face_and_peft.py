"""Hugging Face models as they come (GPT-2, BERT, ViT with random weights), and rankings turned into PEFT LoRA
configurations whose trainable parameters are exactly the adapters of the chosen layers."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from macattr import LayerScores, rank_layers
from macattr.targets import pick_output

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
from macattr.peft import lora_config  # noqa: E402  (needs peft)

transformers.logging.set_verbosity_error()


def _gpt2() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=50, n_positions=16, bos_token_id=0,
                                     eos_token_id=0)  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def _bert() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2)  # fmt: skip
    return transformers.BertForSequenceClassification(config)


def _vit() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=32, num_labels=3)  # fmt: skip
    return transformers.ViTForImageClassification(config)


def _ids() -> torch.Tensor:
    return torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))


def test_gpt2_ranks_with_its_default_candidates_conv1d_included_and_skips_its_position_embedding() -> None:
    model = _gpt2()
    embeddings = model.get_input_embeddings()(_ids()).detach()
    skipped = r"transformer.wpe: its output does not follow the batch \(forward passes of 2 and 3 samples gave it 1 "
    with pytest.warns(UserWarning, match=skipped):
        scores = rank_layers(model, [embeddings], input_name="inputs_embeds", target=(7, 3), mask_dims="sequence",
                             n_steps=4, progress=False)  # fmt: skip
    assert "transformer.h.0.attn.c_attn" in scores and type(model.transformer.h[0].attn.c_attn).__name__ == "Conv1D"
    assert set(scores.skipped) == {"transformer.wte", "transformer.wpe"}  # inputs_embeds bypasses the embedding
    assert scores.config["input_name"] == "inputs_embeds"

    def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten())

    by_loss = rank_layers(model, [(_ids(), _ids())], "fisher", loss=next_token_loss, progress=False)
    assert by_loss.images == 2 and by_loss["transformer.wte"] > 0


def test_vit_and_bert_outputs_need_no_wrapper() -> None:
    vit = _vit()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    scores = rank_layers(vit, [images], target=1, n_steps=4, progress=False)
    assert "vit.layers.0.attention.q_proj" in scores and scores["classifier"] > 0  # transformers 5 naming
    bert = _bert()
    embeddings = bert.get_input_embeddings()(_ids()).detach()
    logits = rank_layers(bert, [embeddings], input_name="inputs_embeds", target=1, mask_dims="sequence", n_steps=4,
                         progress=False)  # fmt: skip
    pooled = rank_layers(bert, [embeddings], input_name="inputs_embeds", output=lambda out: out.logits[:, 1],
                         target="sum", mask_dims="sequence", n_steps=4, progress=False)  # fmt: skip
    assert dict(logits) == pytest.approx(dict(pooled), rel=1e-6)  # target=1 of the logits, or a function of them
    with pytest.raises(ValueError, match=r"output='pooled' is not a key of the model's output \(keys: \['logits'\]\)"):
        rank_layers(bert, [embeddings], input_name="inputs_embeds", output="pooled", target=0, mask_dims="sequence",
                    n_steps=2, progress=False)  # fmt: skip


def test_model_outputs_are_picked_by_key_index_or_function() -> None:
    out = transformers.modeling_outputs.SequenceClassifierOutput(logits=torch.ones(2, 3))
    assert pick_output(out) is out.logits and pick_output(out, "logits") is out.logits
    assert pick_output(out, 0) is out.logits and pick_output(out, lambda o: o.logits * 2).sum() == 12
    with pytest.raises(TypeError, match=r"returns tuple, not a tensor; pass output="):
        pick_output((torch.zeros(1),))
    with pytest.raises(ValueError, match="output=3 does not index"):
        pick_output((torch.zeros(1),), 3)


def _trainable_modules(peft_model: nn.Module) -> set:
    """The modules whose LoRA weights train, named as in the base model."""
    names = set()
    for name, parameter in peft_model.named_parameters():
        if parameter.requires_grad:
            match = re.fullmatch(r"base_model\.model\.(.+)\.lora_(?:A|B|embedding_A|embedding_B)\.default(?:\.weight)?",
                                 name)  # fmt: skip
            assert match, name  # nothing else trains
            names.add(match.group(1))
    return names


@pytest.mark.parametrize("build", [_gpt2, _bert, _vit])
def test_a_ranking_becomes_a_lora_config_on_exactly_its_layers(build) -> None:
    model = build()
    names = [n for n, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None]
    scores = LayerScores({n: float(len(names) - i) for i, n in enumerate(reversed(names))}, "mac")
    with pytest.warns(UserWarning, match="LoRA cannot adapt"):  # LayerNorms among the top 40 %
        chosen = lora_config(scores, model, k=0.4, r=2)
    assert chosen.skipped and all("LoRA adapts" in why for why in chosen.skipped.values())
    assert set(chosen.targets) | set(chosen.skipped) == set(scores.top_k(0.4))
    wrapped = peft.get_peft_model(build(), chosen.config)
    assert _trainable_modules(wrapped) == set(chosen.targets)
    only = lora_config(scores, model, k=5, among_adaptable=True)  # the top 5 of the layers LoRA can adapt
    assert len(only.targets) == 5 and not only.skipped


def test_names_of_a_wrapper_blocks_and_shared_ranks() -> None:
    bert = _bert()

    class OnEmbeddings(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.model = inner

        def forward(self, e):
            return self.model(inputs_embeds=e).logits

    wrapper = OnEmbeddings(bert)
    scores = LayerScores({"model.bert.encoder.layer.1.output.dense": 3.0, "model.classifier": 1.0,
                          "model.bert.encoder.layer.0.attention.self.query": 2.0}, "mac")  # fmt: skip
    for chosen in (lora_config(scores, bert, total_rank=12), lora_config(scores, bert, total_rank=12,
                                                                         ranked_model=wrapper)):  # fmt: skip
        assert chosen.targets == ["bert.encoder.layer.1.output.dense", "bert.encoder.layer.0.attention.self.query",
                                  "classifier"]  # fmt: skip
        assert chosen.ranks == {"bert.encoder.layer.1.output.dense": 6, "bert.encoder.layer.0.attention.self.query": 4,
                                "classifier": 2}  # fmt: skip
    wrapped = peft.get_peft_model(_bert(), chosen.config)
    ranks = {n.split(".lora_A")[0].removeprefix("base_model.model."): p.shape[0]
             for n, p in wrapped.named_parameters() if ".lora_A." in n}  # fmt: skip
    assert ranks == chosen.ranks
    gpt2 = _gpt2()
    blocks = lora_config(["transformer.h.1"], gpt2, r=4)
    assert blocks.blocks == [1] and blocks.config.layers_pattern == "h"
    assert set(blocks.targets) == {"c_attn", "c_proj", "c_fc"}
    adapted = _trainable_modules(peft.get_peft_model(_gpt2(), blocks.config))
    assert adapted == {f"transformer.h.1.{m}" for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}


def test_bad_lora_requests_are_refused() -> None:
    model = _vit()
    with pytest.raises(ValueError, match="not a module of the model PEFT wraps"):
        lora_config(["encoder.nothing"], model)
    with pytest.raises(ValueError, match="need a ranking"):
        lora_config(["classifier"], model, k=1)
    with pytest.raises(ValueError, match="none of the chosen layers can take"), pytest.warns(UserWarning):
        lora_config(["vit.layernorm"], model)
    with pytest.raises(ValueError, match="cannot give each of the 2 targets a rank of 1"):
        lora_config(LayerScores({"classifier": 1.0, "vit.layers.0.attention.q_proj": 1.0}, "mac"), model, total_rank=1)


def test_peft_adapts_a_chosen_name_and_not_the_modules_whose_names_end_with_it() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)))  # "1.0" ends with "0"
    chosen = lora_config(LayerScores({"0": 3.0, "1.0": 2.0, "1.1": 1.0}, "mac"), net, k=1, r=2)
    assert chosen.targets == ["0"]
    assert _trainable_modules(peft.get_peft_model(net, chosen.config)) == {"0"}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.01, 100.0), min_size=1, max_size=6), st.integers(0, 40))
def test_total_rank_is_shared_in_proportion_to_the_scores(scores, extra) -> None:
    net = nn.Sequential(*[nn.Linear(64, 64) for _ in scores])
    total = len(scores) + extra
    ranking = LayerScores({str(i): s for i, s in enumerate(scores)}, "mac")
    ranks = lora_config(ranking, net, total_rank=total).ranks
    assert sum(ranks.values()) == total and min(ranks.values()) >= 1
    shares = {str(i): total * s / sum(scores) for i, s in enumerate(scores)}
    if min(shares.values()) >= 1:  # nothing held at 1: every rank is its share rounded down or up
        assert all(abs(ranks[n] - shares[n]) < 1 for n in shares)
    assert all(ranks[a] >= ranks[b] for a in shares for b in shares if shares[a] > shares[b])  # never fewer


def test_no_target_gets_more_ranks_than_its_weight_can_use() -> None:
    net = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 3))  # the second can use 3 ranks
    chosen = lora_config(LayerScores({"0": 1.0, "1": 3.0}, "mac"), net, total_rank=20)
    assert chosen.ranks == {"1": 3, "0": 17}
    wrapped = peft.get_peft_model(net, chosen.config)
    assert {n.split(".lora_A")[0].removeprefix("base_model.model."): p.shape[0] for n, p in wrapped.named_parameters()
            if ".lora_A." in n} == chosen.ranks  # fmt: skip


class _Blocks(nn.Module):
    """Three blocks of two 8×8 linear layers in a ModuleList, and a head 8 → 4 (it can use 4 ranks)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)) for _ in range(3)])
        self.head = nn.Linear(8, 4)


def test_a_block_chosen_beside_single_layers_shares_its_score_evenly_among_its_layers() -> None:
    scores = LayerScores({"blocks.0": 4.0, "head": 2.0, "blocks.1.0": 2.0}, "mac")
    chosen = lora_config(scores, _Blocks(), total_rank=16)
    assert chosen.ranks == {"blocks.0.0": 4, "blocks.0.2": 4, "head": 4, "blocks.1.0": 4}  # 2, 2, 2, 2 of 8
    assert _trainable_modules(peft.get_peft_model(_Blocks(), chosen.config)) == set(chosen.ranks)
    both = lora_config(LayerScores({"blocks.1": 4.0, "blocks.1.0": 3.0, "head": 1.0}, "mac"), _Blocks(), total_rank=12)
    assert both.targets == ["blocks.1.0", "blocks.1.2", "head"]  # the layer chosen twice is adapted once
    assert both.ranks == {"blocks.1.0": 8, "blocks.1.2": 3, "head": 1}  # scores 3 + 2, 2 and 1 of 8: 7.5, 3, 1.5


def test_a_budget_in_parameters_is_counted_on_the_model_when_the_ranking_holds_no_counts() -> None:
    model = _Blocks()  # a block holds 144 parameter elements, the head 36, one layer of a block 72; all 468
    scores = LayerScores({"blocks.0": 4.0, "head": 3.0, "blocks.1.0": 2.0, "blocks.2": 1.0}, "mac")
    assert lora_config(scores, model, k=180, budget="parameters").targets == ["blocks.0.0", "blocks.0.2", "head"]
    assert lora_config(scores, model, k=110, budget="parameters").targets == ["head", "blocks.1.0"]
    with pytest.raises(ValueError, match="k=2 allows 2 parameters, fewer than the smallest unit's 36"):
        lora_config(scores, model, k=2, budget="parameters")
