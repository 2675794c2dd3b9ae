"""Models dispatched by accelerate (transformers' ``device_map``): layers offloaded to disk, whose weights sit on
the meta device and are loaded by a hook for each forward pass, rank as the model in place does; what such a
model cannot give is refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import pytest
import torch

from macattr import rank_layers
from macattr.baselines import token_embedding
from macattr.placement import input_device, offloaded, weight_values
from macattr.records import model_digest

accelerate = pytest.importorskip("accelerate")
transformers = pytest.importorskip("transformers")


def _llama() -> torch.nn.Module:
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                      num_attention_heads=2, num_key_value_heads=2,
                                      max_position_embeddings=32)  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval().double()


def _batch(model: torch.nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(1, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    embeddings = model.get_input_embeddings()(tokens[:, :8]).detach()
    return embeddings, torch.stack([torch.full((2,), 7), tokens[:, 8]], dim=1)


def _options(model: torch.nn.Module) -> Dict[str, Any]:
    return dict(target="label", input_name="inputs_embeds", mask_dims="sequence", baselines=token_embedding(model, 0),
                rule="trapezoid", n_steps=16, progress=False, seed=0)  # fmt: skip


def _dispatched(folder: Path, first_on_disk: bool = False) -> torch.nn.Module:
    """The Llama with layers 1 and 2 (and, with ``first_on_disk``, the embeddings) offloaded to disk."""
    disk = ["model.layers.1", "model.layers.2", *(["model.embed_tokens"] if first_on_disk else [])]
    names = ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.layers.2", "model.norm",
             "model.rotary_emb", "lm_head"]  # fmt: skip
    device_map = {name: "disk" if name in disk else "cpu" for name in names}
    return accelerate.dispatch_model(_llama(), device_map=device_map, main_device="cpu", offload_dir=str(folder))


@pytest.mark.parametrize("first_on_disk", [False, True])
def test_an_offloaded_model_ranks_as_the_model_in_place(tmp_path: Path, first_on_disk: bool) -> None:
    plain = _llama()
    x, labels = _batch(plain)
    expected = rank_layers(plain, [(x, labels)], **_options(plain))
    model = _dispatched(tmp_path, first_on_disk)
    assert model.model.layers[1].self_attn.q_proj.weight.is_meta and input_device(model) == torch.device("cpu")
    scores = rank_layers(model, [(x, labels)], **_options(model))
    assert scores.names == expected.names and scores.images == 2
    for name in expected:
        assert scores[name] == pytest.approx(expected[name], rel=1e-12)
    assert model.model.layers[1].self_attn.q_proj.weight.is_meta  # put back where accelerate keeps it


def test_the_weights_digest_reads_offloaded_weights(tmp_path: Path) -> None:
    model = _dispatched(tmp_path)
    assert model_digest(model) == model_digest(_llama())  # the values behind the meta tensors, not their shapes
    assert len(offloaded(model)) == 2 * 9  # two layers: 7 Linear weights and 2 norms each
    values = dict(weight_values(model))
    assert not values["model.layers.1.mlp.up_proj.weight"].is_meta


def test_kappa_reads_offloaded_weights(tmp_path: Path) -> None:
    plain, model = _llama(), _dispatched(tmp_path)
    x, labels = _batch(plain)
    options = dict(input_name="inputs_embeds", progress=False)
    assert dict(rank_layers(model, [(x, labels)], "kappa", **options)) == pytest.approx(
        dict(rank_layers(plain, [(x, labels)], "kappa", **options)), rel=1e-12
    )


def test_what_an_offloaded_model_cannot_give_is_refused(tmp_path: Path) -> None:
    model = _dispatched(tmp_path)
    x, labels = _batch(_llama())
    with pytest.raises(ValueError, match=r"18 of them \(first: model\.layers\.1\.self_attn\.q_proj\.weight\) are "
                                         r"offloaded"):  # fmt: skip
        rank_layers(model, [(x, x[:, -1:, :1].reshape(2, 1))], "gradnorm", output="logits", progress=False)
    with pytest.raises(ValueError, match="would move a model that accelerate dispatched"):
        rank_layers(model, [(x, labels)], **_options(model), device="cpu")
