"""Rank the blocks of a Hugging Face transformer by MAC over its input embeddings, then fine-tune the top ones.

    pip install -e '.[transformers]'
    python examples/transformers/rank_blocks.py        # about 20 s on a 2-core CPU

A small BERT (``BertConfig``, random weights: nothing is downloaded) classifies
token sequences. The mask attribute path runs over the input word embeddings:
it starts with a fraction r of the tokens replaced by the embedding of the
``[MASK]`` token and ends at the whole sequence (``mask_dims="sequence"``: a
token's whole embedding is masked at once). The target is the logit of class 1.
Every encoder block is scored in one sweep per batch; the top ones are then
fine-tuned with ``freeze_except(..., recurse=True)`` (a block owns no parameters
itself; its attention and feed-forward layers do).

With random weights the ranking says nothing about the model: it only shows the
mechanics. For a trained model, load it with ``from_pretrained`` from your own
files, feed embeddings of your own sequences, and pick the target you fine-tune
for (the class logit, or the next-token logit of a causal model).
"""

from __future__ import annotations

import argparse
import re
import time

import torch
from torch import Tensor, nn

import macattr

MASK_TOKEN = 103  # BERT's [MASK] in its usual vocabulary


class OnEmbeddings(nn.Module):
    """The classifier as a function of the word embeddings (N, T, D) → logits (N, classes)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.model(inputs_embeds=embeddings).logits


def main() -> None:
    from transformers import BertConfig, BertForSequenceClassification

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6, help="encoder blocks")
    parser.add_argument("--k", type=int, default=2, help="blocks to fine-tune")
    parser.add_argument("--n-steps", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=args.layers, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64, num_labels=2)  # fmt: skip
    model = OnEmbeddings(BertForSequenceClassification(config)).eval()
    words = model.model.bert.embeddings.word_embeddings
    ids = torch.randint(200, 512, (4, 8, 24), generator=torch.Generator().manual_seed(0))  # 4 batches of 8 × 24
    with torch.no_grad():
        batches = [words(batch) for batch in ids]
        mask_embedding = words.weight[MASK_TOKEN].clone()  # the baseline: every token replaced by [MASK]

    started = time.perf_counter()
    scores = macattr.rank_layers(
        model, batches, "mac", layers=re.compile(r"model\.bert\.encoder\.layer\.\d+"), target=1,
        mask_dims="sequence", baselines=mask_embedding, n_steps=args.n_steps, seed=0, progress=False,
    )  # fmt: skip
    print(f"MAC over {scores.images} sequences, {len(scores)} blocks, {time.perf_counter() - started:.1f} s")
    for name, score in scores.ranked():
        print(f"  {name:34s} {score:.4g}")

    # padded batches: keep padding out of the path (never masked, never counted)
    attention = torch.ones(8, 24, dtype=torch.bool)
    attention[:, 18:] = False
    blocks = [model.model.bert.encoder.layer[i] for i in range(args.layers)]
    with torch.no_grad():
        padded = batches[0].masked_fill(~attention[..., None], 0.0)
    macattr.LayerMAC(model, blocks).attribute(
        padded, mask_embedding, target=1, n_steps=args.n_steps, seed=0, mask_dims="sequence", exclude=~attention
    )

    top = scores.top_k(args.k)
    labels = (ids[0, :, 0] % 2).long()  # a toy task, just to show that only the chosen blocks learn
    with macattr.freeze_except(model, top, recurse=True) as trainable:
        print(f"fine-tuning {top}: {trainable.trainable:,} of {trainable.total:,} parameters "
              f"({100 * trainable.fraction:.1f} %)")  # fmt: skip
        optimizer = torch.optim.Adam(trainable, lr=1e-3)
        model.train()
        losses = []
        for _ in range(30):
            loss = nn.functional.cross_entropy(model(batches[0]), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()
    print(f"cross-entropy {losses[0]:.3f} -> {losses[-1]:.3f} in 30 steps")


if __name__ == "__main__":
    main()
