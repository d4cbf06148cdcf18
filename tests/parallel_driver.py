"""Checks of the sharded optimizer and of activation checkpointing inside a process group.

Run with ``torchrun --nproc_per_node=2 parallel_driver.py OUT``; process 0 writes ``OUT/results.pt``
with Muon's parameters after two steps split across the processes (whole parameters as under DDP,
and ``Shard(0)`` DTensors as under FSDP2), how many Newton-Schulz runs each process did, and the
gradients of an FSDP2 model with and without activation checkpointing, and a DDP-layout optimizer
state converted into an FSDP2 run; processes also run different numbers of forwards with the
parameters gathered (evaluation, rollouts), which must not hang; and a sharded model's weights go
to Hugging Face files and back. The test compares them with
one process (``muon_case`` run in the test).
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.tensor import distribute_tensor

from llmkit.config import ModelConfig
from llmkit.model.transformer import Transformer
from llmkit.train import optim
from llmkit.train.optim import Muon
from llmkit.train.parallel import set_activation_checkpointing

SHAPES = [(16, 8), (8, 16), (12, 12), (24, 8), (8, 8)]  # tall, wide, square; an odd count: uneven split


def muon_case(shard=None) -> list[torch.Tensor]:
    """Two Muon steps on fixed matrices and gradients; ``shard(t)`` turns a tensor into a DTensor."""
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g) for s in SHAPES]
    grads = [[torch.randn(s, generator=g) for s in SHAPES] for _ in range(2)]
    if shard is not None:
        params = [shard(p) for p in params]
    params = [torch.nn.Parameter(p) for p in params]
    opt = Muon(params, lr=0.02, weight_decay=0.1)
    for step in range(2):
        for p, gr in zip(params, grads[step], strict=True):
            p.grad = shard(gr) if shard is not None else gr.clone()
        opt.step()
    return [p.full_tensor() if shard is not None else p.detach().clone() for p in params]


def tiny_model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(
        ModelConfig(
            vocab_size=64,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=32,
        )
    )


def fsdp_grads(checkpointing: bool) -> dict[str, torch.Tensor]:
    from torch.distributed.fsdp import fully_shard

    from llmkit.model.transformer import DecoderLayer

    model = tiny_model()
    set_activation_checkpointing(model, checkpointing)
    for block in [m for m in model.modules() if isinstance(m, DecoderLayer)]:
        fully_shard(block)
    fully_shard(model)
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(dist.get_rank()))
    logits = model(ids[:, :-1])  # (2, 15, 64)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
    return {n: p.grad.full_tensor() for n, p in model.named_parameters()}


def converted_optimizer_state() -> tuple[dict, dict]:
    """AdamW state of a whole model after one step (as a DDP checkpoint keeps it), and the same state
    read back, gathered, from an FSDP2 model that loaded it with ``load_whole_optimizers``."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    from torch.distributed.fsdp import fully_shard

    from llmkit.config import TrainConfig
    from llmkit.model.transformer import DecoderLayer
    from llmkit.train.optim import build_optimizers
    from llmkit.train.parallel import load_whole_optimizers

    whole = tiny_model()
    (opt,) = build_optimizers(whole, TrainConfig())
    whole(torch.arange(8)[None]).sum().backward()
    opt.step()
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    expected = get_optimizer_state_dict(whole, opt, options=full)
    sharded = tiny_model()
    for block in [m for m in sharded.modules() if isinstance(m, DecoderLayer)]:
        fully_shard(block)
    fully_shard(sharded)
    (opt2,) = build_optimizers(sharded, TrainConfig())
    load_whole_optimizers(sharded, [opt2], [opt.state_dict()])
    converted = get_optimizer_state_dict(sharded, opt2, options=full)  # gathered on process 0 only
    return expected.get("state"), converted.get("state")


def uneven_forwards_while_gathered() -> int:
    """Processes run different numbers of forwards (their shares of evaluation items, rollouts of
    different lengths) inside ``gathered``: that must need no collective, or it would hang."""
    from llmkit.config import TrainConfig
    from llmkit.train import parallel
    from llmkit.train.distributed import DistInfo

    model = tiny_model()
    parallel.wrap(model, TrainConfig(parallel="fsdp"), DistInfo(rank=dist.get_rank(), world_size=2), torch.float32)
    model(torch.arange(8)[None]).sum().backward()  # a training step first, as in the loop
    with torch.no_grad(), parallel.gathered(model):
        for _ in range(3 if dist.get_rank() == 0 else 1):
            model(torch.arange(4)[None])
            model.head(model.hidden_states(torch.arange(4)[None]))  # the engine's entry points
    dist.barrier()
    return 3 if dist.get_rank() == 0 else 1


def weights_round_trip(directory: Path) -> float:
    """Gather a trained FSDP2 model into Hugging Face files (as checkpoints do), load them into a
    fresh sharded model (as a resume does: read on process 0, broadcast); the largest difference."""
    from llmkit.checkpoint import save_checkpoint
    from llmkit.config import TrainConfig
    from llmkit.train import parallel
    from llmkit.train.distributed import DistInfo

    info = DistInfo(rank=dist.get_rank(), world_size=2)
    trained = tiny_model()
    parallel.wrap(trained, TrainConfig(parallel="fsdp"), info, torch.float32)
    trained(torch.arange(8)[None]).sum().backward()
    torch.optim.SGD(trained.parameters(), lr=0.1).step()  # weights no fresh model has
    full = parallel.full_state_dict(trained)
    if info.is_main:
        save_checkpoint(directory / "ckpt", trained, state_dict=full)
    dist.barrier()
    fresh = tiny_model()
    parallel.wrap(fresh, TrainConfig(parallel="fsdp"), info, torch.float32)
    parallel.load_full_weights(fresh, directory / "ckpt", info)
    pairs = zip(trained.parameters(), fresh.parameters(), strict=True)
    return max((a.full_tensor() - b.full_tensor()).abs().max().item() for a, b in pairs)


if __name__ == "__main__":
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    mesh = dist.device_mesh.init_device_mesh("cpu", (dist.get_world_size(),))
    from torch.distributed.tensor import Shard

    calls = []
    real = optim.newton_schulz
    optim.newton_schulz = lambda G, steps: calls.append(G.shape) or real(G, steps)  # count this process's share
    whole = muon_case()
    optim.newton_schulz = real
    shares = [None] * dist.get_world_size()
    dist.all_gather_object(shares, len(calls))
    results = {
        "newton_schulz_calls": shares,
        "muon_whole": whole,
        "muon_sharded": muon_case(lambda t: distribute_tensor(t, mesh, [Shard(0)])),
        "grads_plain": fsdp_grads(False),
        "grads_checkpointed": fsdp_grads(True),
        "optimizer_whole_and_converted": converted_optimizer_state(),
        "uneven_forwards": uneven_forwards_while_gathered(),
        "weights_round_trip": weights_round_trip(Path(sys.argv[1])),
    }
    if dist.get_rank() == 0:
        torch.save(results, Path(sys.argv[1]) / "results.pt")
    dist.destroy_process_group()
    print("DONE", flush=True)
