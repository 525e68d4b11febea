"""The gradient-and-update phase of a VMC step, replayed from a CUDA graph on the GPU.

After sampling and the local energies, a VMC step evaluates ``log psi`` of the batch
with autograd (PyTorch's convolutions), builds the surrogate loss of eq. 6
(:func:`naqs.vmc.vmc_loss`), runs the backward and the optimizer's update. On the GPU
this phase is ~2000 small GPU operations (weight normalization, pads, convolutions,
their backward, the optimizer's per-tensor updates), and launching them from Python
costs more than running them: at 12x12, 10 blocks, 1000 samples on an H100 the eager
phase took 17-22 ms, the same kernels replayed from one CUDA graph 10.3 ms
(``bench/grad_phase_ab.py``, docs/engine.md).

:class:`GradientStep` runs the phase eagerly the first time it sees a (optimizer,
batch shape) pair (this is also the warm-up a capture needs: lazily created optimizer
state, cuDNN handles, autotuning), captures it on the second call and replays the graph
from then on; the batch is copied into static input buffers first. The graph is the
same arithmetic as the eager phase: replaying it gives the same parameters. Anything
that cannot be captured (a host synchronization inside the model, an optimizer without
graph support) falls back to the eager phase for good, with a warning; ``path`` says
which one ran.

Requirements the VMC driver meets: the learning rate is fixed while a graph lives (one
per schedule stage: a new optimizer object or a new batch size starts a new graph), and
:meth:`reset` is called whenever the optimizer's state tensors are replaced (a
checkpoint load). The graph keeps its activations in a private memory pool between
steps (the price of the saved launches: about one forward+backward's activations); when
another part of the step then runs out of GPU memory, :meth:`release` gives that pool
back and the phase runs eagerly from then on (the VMC driver does this and retries the
step once, with a warning).
"""

from __future__ import annotations

import gc
import warnings

import torch

__all__ = ["GradientStep", "make_capturable", "set_capturable"]


def set_capturable(optimizer: torch.optim.Optimizer, capturable: bool) -> None:
    """Set an Adam-like optimizer's ``capturable`` flag and move its step counters to
    where the flag wants them (the parameters' device when capturable, else the CPU).
    A loaded state dict carries the flag of the run that saved it: a checkpoint of a
    graph-replayed CUDA run resumed on the CPU would otherwise fail in Adam's step. A
    no-op for optimizers without the flag (SGD: its momentum buffers are plain tensors,
    graph-safe once created)."""
    for group in optimizer.param_groups:
        if "capturable" not in group or bool(group["capturable"]) == capturable:
            continue
        group["capturable"] = capturable
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state and torch.is_tensor(state.get("step")):
                device = p.device if capturable else torch.device("cpu")
                state["step"] = state["step"].to(device=device, dtype=torch.float32)


def make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Let ``optimizer`` run inside a CUDA graph (``set_capturable(optimizer, True)``)."""
    set_capturable(optimizer, True)


class GradientStep:
    """``step(optimizer, spins, eloc)``: forward of ``model.log_psi(spins)``, surrogate
    loss, backward, ``optimizer.step()``; through a CUDA graph when ``use_graph`` and the
    model is on a CUDA device."""

    def __init__(self, model: torch.nn.Module, loss_fn, use_graph: bool = True):
        self.model = model
        self.loss_fn = loss_fn  # (eloc, log_psi) -> scalar surrogate loss
        self.use_graph = bool(use_graph)
        self.path = "none"
        self._disabled_reason = None
        self.reset()

    def reset(self) -> None:
        """Forget the captured graph (the next call runs eagerly, the one after captures)."""
        self._key = None
        self._optimizer = None  # held (not its id: a collected optimizer's id can come back)
        self._graph = None
        self._spins = self._eloc = None

    @property
    def holds_graph(self) -> bool:
        """Whether a captured graph (and its memory pool) is alive."""
        return self._graph is not None

    def release(self, reason: str) -> bool:
        """Drop the captured graph and its memory pool, and run the phase eagerly from now
        on (``reason`` is kept for the warning and :attr:`disabled_reason`). Returns
        whether a graph was held (i.e. whether memory was given back)."""
        held = self.holds_graph
        self._disabled_reason = reason
        self.reset()
        if held:
            gc.collect()  # the graph's pool is freed with the last reference to it
            torch.cuda.empty_cache()
        return held

    @property
    def disabled_reason(self):
        """Why graphs are off for this object (a failed capture, a release), else None."""
        return self._disabled_reason

    def _eager(self, optimizer, spins, eloc) -> None:
        loss = self.loss_fn(eloc, self.model.log_psi(spins))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def _graph_allowed(self, spins) -> bool:
        return self.use_graph and self._disabled_reason is None and spins.is_cuda

    def __call__(self, optimizer: torch.optim.Optimizer, spins: torch.Tensor, eloc: torch.Tensor) -> None:
        if not self._graph_allowed(spins):
            self._eager(optimizer, spins, eloc)
            self.path = "eager"
            return
        key = (tuple(spins.shape), spins.dtype, tuple(eloc.shape), eloc.dtype, spins.device)
        if key != self._key or optimizer is not self._optimizer:
            # first call for this optimizer and shape: eager, on a side stream (the
            # warm-up a capture needs), and it is this step's real update
            self.reset()
            make_capturable(optimizer)
            side = torch.cuda.Stream(device=spins.device)
            side.wait_stream(torch.cuda.current_stream(spins.device))
            with torch.cuda.stream(side):
                self._eager(optimizer, spins, eloc)
            torch.cuda.current_stream(spins.device).wait_stream(side)
            self._key, self._optimizer = key, optimizer
            self.path = "eager"
            return
        if self._graph is None:
            self._spins, self._eloc = spins.clone(), eloc.clone()
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    self._eager(optimizer, self._spins, self._eloc)
            except Exception as err:  # nothing ran during the failed capture: run it eagerly
                self._disabled_reason = f"{type(err).__name__}: {err}"
                warnings.warn(f"the gradient step could not be captured in a CUDA graph ({self._disabled_reason}); "
                              "running it eagerly from now on", RuntimeWarning, stacklevel=2)
                self.reset()
                torch.cuda.synchronize(spins.device)
                self._eager(optimizer, spins, eloc)
                self.path = "eager"
                return
            self._graph = graph
        else:
            self._spins.copy_(spins)
            self._eloc.copy_(eloc)
        self._graph.replay()
        self.path = "cuda-graph"
