"""Prune a tiny Llama's attention and MLP projections to 50 % with PaddleFormers' ``Trainer``.

The model is a random 2-layer ``LlamaForCausalLM`` (nothing is downloaded); the task is generated:
each sequence counts up by one modulo the vocabulary, so the next token is learnable. Pruning runs on a
step schedule over the first three quarters of training; the rest recovers at the final sparsity.
At the end the model is saved twice: ``save_pretrained`` (dense safetensors, zeros included) and
``save_sparse`` (the pruned weights as a bit-mask and their non-zero values).

    pip install -e ".[cpu,paddleformers]"      # PaddleFormers pins numpy <= 1.26: use its own venv
    GLOG_minloglevel=2 python examples/paddleformers_llama.py [--epochs 6] [--output-dir runs/llama]
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402
import paddle  # noqa: E402
from paddleformers.trainer import Trainer, TrainingArguments  # noqa: E402
from paddleformers.transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from paddleformers.utils.log import logger  # noqa: E402

from paddle_prune_callback import save_sparse  # noqa: E402
from paddle_prune_callback.integrations.paddleformers import PruningTrainerCallback  # noqa: E402

VOCAB, LENGTH, BATCH = 128, 32, 16


class CountingSequences(paddle.io.Dataset):
    """Sequences ``s, s+1, s+2, ...`` modulo the vocabulary; the labels are the next tokens."""

    def __init__(self, n: int, seed: int):
        self.start = np.random.default_rng(seed).integers(0, VOCAB, (n, 1))

    def __len__(self) -> int:
        return len(self.start)

    def __getitem__(self, i: int) -> dict:
        x = ((self.start[i] + np.arange(LENGTH)) % VOCAB).astype("int64")
        return {"input_ids": x, "labels": (x + 1) % VOCAB}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--output-dir", default="runs/llama")
    opts = parser.parse_args()
    logger.set_level("WARNING")
    paddle.seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                         fuse_rms_norm=False))   # fuse_rms_norm needs a GPU kernel
    train_data, eval_data = CountingSequences(256, seed=0), CountingSequences(64, seed=1)
    total_steps = opts.epochs * len(train_data) // BATCH
    every = max(total_steps // 16, 1)
    prune_steps = range(every, max(3 * total_steps // 4, every + 1), every)
    cb = PruningTrainerCallback(target_sparsity=0.5, prune_steps=prune_steps, criterion="fisher", verbose=0)
    args = TrainingArguments(output_dir=opts.output_dir, per_device_train_batch_size=BATCH,
                             per_device_eval_batch_size=BATCH, num_train_epochs=opts.epochs, learning_rate=3e-3,
                             lr_scheduler_type="constant", logging_steps=total_steps, save_strategy="no",
                             report_to=["visualdl"], logging_dir=os.path.join(opts.output_dir, "vdl"),
                             amp_master_grad=False,     # needed on CPU
                             disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data, callbacks=[cb])
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    print(f"prune steps {list(prune_steps)} of {total_steps}")
    for h in cb.history:
        print(f"epoch {h['epoch']}: step {h['step']:3d}  sparsity {h['sparsity']:.3f}")
    print(f"eval loss {before:.3f} before training, {after:.3f} after")
    print(f"projection sparsity {cb.sparsity()['global']:.3f} over {len(cb.pruner.parameters)} weight matrices")
    dense_dir = os.path.join(opts.output_dir, "dense")
    model.save_pretrained(dense_dir)
    dense = sum(os.path.getsize(os.path.join(dense_dir, f)) for f in os.listdir(dense_dir) if f.endswith(".safetensors"))
    sparse = save_sparse(model, os.path.join(opts.output_dir, "llama_sparse.npz")).file_bytes
    print(f"save_pretrained: {dense:,} bytes of safetensors; save_sparse: {sparse:,} bytes ({dense / sparse:.2f}x smaller)")


if __name__ == "__main__":
    main()
