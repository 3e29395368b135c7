"""``PruningTrainerCallback`` with the real PaddleFormers ``Trainer`` on CPU: a tiny random Llama trained for
several epochs, masks checked after every update, accumulation, VisualDL, Trainer checkpoint and resume.

PaddleFormers pins numpy <= 1.26, so these tests run in the second virtual environment of ``.ci/run``
(``pip install -e ".[paddleformers,test]"``); in an environment without it they skip."""
from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

pytest.importorskip("paddleformers.trainer", reason="PaddleFormers is not installed: .ci/run tests it in its own "
                                                    "venv (pip install -e '.[cpu,paddleformers,test]')")
from paddleformers.trainer import Trainer, TrainerCallback, TrainingArguments  # noqa: E402
from paddleformers.transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from paddle_prune_callback.checkpoint import STATE_FILE  # noqa: E402
from paddle_prune_callback.integrations.paddleformers import PruningTrainerCallback  # noqa: E402

PROJECTIONS = [f"model.layers.{i}.{p}.weight" for i in range(2) for p in (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
TOTAL = 2 * (4 * 64 * 64 + 3 * 64 * 128)      # 81,920 projection weights


def tiny_llama():
    paddle.seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=4, fuse_rms_norm=False))


class NextToken(paddle.io.Dataset):
    """Generated next-token data: each sequence counts up by one, modulo the vocabulary."""

    def __init__(self, n=32, length=16):
        self.x = np.random.default_rng(0).integers(0, 128, (n, 1)) + np.arange(length)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = (self.x[i] % 128).astype("int64")
        return {"input_ids": x, "labels": (x + 1) % 128}


class MaskProbe(TrainerCallback):
    """After the pruning callback: at every optimizer step, the gradients at pruned positions (before the
    step) and the weights at pruned positions (after it) are exactly zero; records the zeros."""

    def __init__(self, pruning, stop_after=None):
        self.pruning, self.stop_after = pruning, stop_after
        self.zeros, self.steps = [], []

    def on_optimizer_begin(self, args, state, control, model=None, **kwargs):
        params = dict(model.named_parameters())
        for n, keep in self.pruning.pruner.keep.items():
            assert not params[n].grad.numpy().reshape(-1)[~keep].any(), n

    def on_optimizer_end(self, args, state, control, model=None, **kwargs):
        params = dict(model.named_parameters())
        for n, keep in self.pruning.pruner.keep.items():
            assert not params[n].numpy().reshape(-1)[~keep].any(), n
        self.steps.append(state.global_step)
        self.zeros.append(sum(int(params[n].numpy().size - np.count_nonzero(params[n].numpy())) for n in PROJECTIONS))

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop_after is not None and state.global_step >= self.stop_after:
            control.should_training_stop = True


def train(tmp_path, pruning, epochs=3, resume=None, stop_after=None, model=None, **args):
    model = model or tiny_llama()
    probe = MaskProbe(pruning, stop_after)
    defaults = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_train_epochs=epochs,
                    learning_rate=1e-3, lr_scheduler_type="constant", max_grad_norm=1.0, weight_decay=0.01,
                    logging_steps=1000, save_strategy="no", amp_master_grad=False, report_to=[],
                    disable_tqdm=True, seed=0, dataloader_shuffle=False,
                    # the default "flex_checkpoint" cannot be loaded without fleet's hybrid-parallel setup
                    save_checkpoint_format="unified_checkpoint", load_checkpoint_format="unified_checkpoint")
    defaults.update(args)
    trainer = Trainer(model=model, args=TrainingArguments(**defaults), train_dataset=NextToken(),
                      callbacks=[pruning, probe])
    trainer.train(resume_from_checkpoint=resume)
    return model, probe


def test_prunes_the_projections_at_the_listed_steps_and_masks_hold_after_every_update(tmp_path):
    cb = PruningTrainerCallback(target_sparsity=0.5, prune_steps=[1, 3, 5, 7], criterion="fisher",
                                schedule="linear", verbose=0)
    model, probe = train(tmp_path, cb)
    assert list(cb.pruner.parameters) == PROJECTIONS          # no embedding, no norm, no lm_head
    assert probe.steps == list(range(12))                     # 3 epochs of 4 steps
    expected, zeros = [], 0
    for step in range(12):
        if step in (1, 3, 5, 7):
            zeros = round(0.5 * (1 + (1, 3, 5, 7).index(step)) / 4 * TOTAL)
        expected.append(zeros)
    assert probe.zeros == expected and cb.sparsity()["global"] == 0.5
    params = dict(model.named_parameters())
    assert np.count_nonzero(params["model.embed_tokens.weight"].numpy()) == 128 * 64
    assert [(h["epoch"], h["step"], h["pruned"]) for h in cb.history] == [(0, 4, True), (1, 8, True), (2, 12, False)]
    assert cb.not_reached == []


def test_gradient_accumulation_counts_every_backward(tmp_path, monkeypatch):
    # PaddleFormers 1.2.0 calls paddle.device.synchronize() when accumulating, which raises on CPU.
    monkeypatch.setattr(paddle.device, "synchronize", lambda *a, **k: None)
    model = tiny_llama()
    name = PROJECTIONS[0]
    per_batch = []
    dict(model.named_parameters())[name].register_hook(lambda g: per_batch.append(np.square(g.numpy()).reshape(-1)))
    cb = PruningTrainerCallback(target_sparsity=0.5, prune_steps=[0, 2], criterion="fisher", verbose=0)
    _, probe = train(tmp_path, cb, epochs=2, model=model, gradient_accumulation_steps=2)
    assert probe.steps == [0, 1, 2, 3] and len(per_batch) == 8    # 4 batches per epoch, 2 per step
    # since the prune after step 2 (batch 5): batches 6 and 7, one step
    np.testing.assert_allclose(cb.pruner.mean_sq_grads()[name], np.mean(per_batch[6:], axis=0), rtol=1e-5)
    assert cb.sparsity()["global"] == 0.5


def test_visualdl_through_report_to(tmp_path):
    cb = PruningTrainerCallback(target_sparsity=0.5, prune_steps=[1, 3], criterion="magnitude", verbose=0)
    train(tmp_path, cb, epochs=1, report_to=["visualdl"], logging_dir=str(tmp_path / "vdl"))
    from visualdl import LogReader

    reader = LogReader(file_path=glob.glob(str(tmp_path / "vdl" / "pruning" / "vdlrecords.*"))[0])
    assert [(r.id, round(r.value, 4)) for r in reader.get_data("scalar", "pruning/sparsity_by_step")] == \
        [(1, round(round(0.5 * (1 - (1 - 1 / 2) ** 3) * TOTAL) / TOTAL, 4)), (3, 0.5)]
    assert glob.glob(str(tmp_path / "vdl" / "vdlrecords.*"))      # the Trainer's own log beside it


def test_trainer_checkpoint_and_resume_continue_exactly(tmp_path):
    kwargs = dict(target_sparsity=0.6, prune_steps=[1, 5, 9], criterion="fisher", verbose=0)
    full = PruningTrainerCallback(**kwargs)
    full_model, full_probe = train(tmp_path / "full", full, save_strategy="epoch")
    stopped = PruningTrainerCallback(**kwargs)
    with pytest.warns(UserWarning, match=r"target sparsity 60.00% not reached, .*prune steps \[5, 9\] did not run"):
        train(tmp_path / "run", stopped, save_strategy="epoch", stop_after=4)     # stops after epoch 0: step 4
    checkpoint = tmp_path / "run" / "out" / "checkpoint-4"
    assert (checkpoint / STATE_FILE).is_file() and stopped.not_reached == [5, 9]
    resumed = PruningTrainerCallback(**kwargs)
    model, probe = train(tmp_path / "run", resumed, save_strategy="epoch", resume=str(checkpoint))
    assert full.not_reached == resumed.not_reached == []
    assert probe.steps == list(range(4, 12)) and resumed.pruning.steps_completed == 12
    assert probe.zeros == full_probe.zeros[4:]
    for n in PROJECTIONS:
        np.testing.assert_array_equal(resumed.pruner.keep[n], full.pruner.keep[n])
    for (n, p), q in zip(model.named_parameters(), full_model.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]


def test_a_mid_epoch_checkpoint_resumes_the_squared_gradient_window_exactly(tmp_path):
    # saved after step 5 (in epoch 1), between the prunes after steps 2 and 8: the resumed run must score
    # the prune after step 8 with the g² of steps 3-8, half of them from before the checkpoint
    kwargs = dict(target_sparsity=0.6, prune_steps=[2, 8], criterion="fisher", verbose=0)
    full = PruningTrainerCallback(**kwargs)
    full_model, full_probe = train(tmp_path / "full", full)
    with pytest.warns(UserWarning, match=r"prune steps \[8\] did not run"):
        train(tmp_path / "run", PruningTrainerCallback(**kwargs), save_strategy="steps", save_steps=6, stop_after=6)
    resumed = PruningTrainerCallback(**kwargs)
    model, probe = train(tmp_path / "run", resumed, resume=str(tmp_path / "run" / "out" / "checkpoint-6"))
    assert probe.steps == list(range(6, 12)) and probe.zeros == full_probe.zeros[6:]
    for (n, p), q in zip(model.named_parameters(), full_model.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)
    assert [(h["epoch"], h["pruned"]) for h in resumed.history] == [(0, True), (1, False), (2, True)]
    assert resumed.history == full.history


def test_resume_without_pruning_state_is_refused(tmp_path):
    train(tmp_path, PruningTrainerCallback(target_sparsity=0.5, prune_steps=[1], verbose=0), epochs=1,
          save_strategy="epoch")
    checkpoint = tmp_path / "out" / "checkpoint-4"
    os.remove(checkpoint / STATE_FILE)
    with pytest.raises(FileNotFoundError, match=r"the Trainer resumed at global step 4, but none of .* holds a "
                                                r"pruning_state.npz"):
        train(tmp_path, PruningTrainerCallback(target_sparsity=0.5, prune_steps=[1], verbose=0), epochs=2,
              resume=str(checkpoint))


def test_schedule_beyond_max_steps_is_refused_before_training(tmp_path):
    model = tiny_llama()
    before = {n: p.numpy().copy() for n, p in model.named_parameters()}
    cb = PruningTrainerCallback(target_sparsity=0.5, prune_steps=[1, 10], verbose=0)
    with pytest.raises(ValueError, match=r"`prune_steps` asks to prune after step\(s\) \[10\], but this run's last "
                                         r"optimizer step is 5"):
        train(tmp_path, cb, model=model, max_steps=6)
    for n, p in model.named_parameters():
        np.testing.assert_array_equal(p.numpy(), before[n])


def test_state_dir_is_refused():
    with pytest.raises(TypeError, match=r"saves its state in the Trainer's checkpoints"):
        PruningTrainerCallback(target_sparsity=0.5, prune_steps=[1], state_dir="x")


def test_example_prunes_a_tiny_llama_to_half(tmp_path):
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "examples" / "paddleformers_llama.py"), "--epochs", "2",
                           "--output-dir", str(tmp_path / "runs")], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, GLOG_minloglevel="2"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    before, after = map(float, re.search(r"eval loss ([\d.]+) before training, ([\d.]+) after", done.stdout).groups())
    assert after < before / 2
    assert "projection sparsity 0.500 over 14 weight matrices" in done.stdout
    dense, sparse = (int(n.replace(",", "")) for n in re.search(
        r"save_pretrained: ([\d,]+) bytes of safetensors; save_sparse: ([\d,]+) bytes", done.stdout).groups())
    assert sparse == os.path.getsize(tmp_path / "runs" / "llama_sparse.npz") < dense
    assert glob.glob(str(tmp_path / "runs" / "vdl" / "pruning" / "vdlrecords.*"))


def test_fp16_loss_scaling_with_a_gradient_criterion_is_refused(tmp_path):
    model = tiny_llama()
    before = {n: p.numpy().copy() for n, p in model.named_parameters()}
    cb = PruningTrainerCallback(target_sparsity=0.5, prune_steps=[1], criterion="fisher", verbose=0)
    with pytest.raises(ValueError, match=r"criterion 'fisher' reads gradients, but with fp16 loss scaling .*use bf16 "
                                         r"\(no loss scaling\) or criterion='magnitude'"):
        train(tmp_path, cb, model=model, epochs=1, fp16=True)
    for n, p in model.named_parameters():
        np.testing.assert_array_equal(p.numpy(), before[n])
