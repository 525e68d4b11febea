"""The ``naqs`` command: ``demo``, ``train``, ``sample``, ``ed``, ``study``, ``figure``,
``bench``.

Each sub-command is a thin layer over the library; ``--json`` prints one JSON object
whose keys are part of the contract (docs/cli.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .vmc import VMCConfig

__all__ = ["main", "build_parser"]


# ---------------------------------------------------------------------- train
def _add_system_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("system")
    g.add_argument("--model", choices=["ising", "heisenberg"], help="Hamiltonian (default ising)")
    g.add_argument("--lattice", help="square | triangle (grid lattices)")
    g.add_argument("--size", help="Lx x Ly, e.g. 4x4")
    g.add_argument("--pbc", action="store_true", default=None, help="periodic boundaries (default open)")
    g.add_argument("--gamma", type=float, help="Ising transverse field (Pauli units)")
    g.add_argument("--j1", type=float, help="Heisenberg J1")
    g.add_argument("--j2", type=float, help="Heisenberg J2")
    g.add_argument("--units", choices=["S", "pauli"], help="Heisenberg units (default S = sigma/2)")
    g.add_argument("--sz", type=int, help="sector: sum of spins (2 S^z); Heisenberg default 0")
    g.add_argument("--marshall", action=argparse.BooleanOptionalAction, default=None, help="Marshall sign prefactor")


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    _add_system_arguments(p)
    g = p.add_argument_group("network")
    g.add_argument("--blocks", dest="n_blocks", type=int, help="PixelCNN blocks (default 10)")
    g.add_argument("--channels", type=int, help="channels per branch (default 32)")
    g.add_argument("--symmetrize", action="store_true", default=None, help="self-ensemble over the lattice symmetries")
    g.add_argument("--spin-flip", action="store_true", default=None, help="include spin inversion in the ensemble (alone: the group {1, inversion})")
    g = p.add_argument_group("optimization")
    g.add_argument("--config", help="TOML or JSON file with VMCConfig keys (command-line flags win)")
    g.add_argument("--steps", type=int, help="total steps; the stage lengths are scaled to it")
    g.add_argument("--batch", help="batch size of every stage, or one per stage: 128,1024,8192")
    g.add_argument("--lr", help="learning rate of every stage, or one per stage")
    g.add_argument("--sampler", choices=["exact", "mcmc"], help="exact autoregressive (default) or Metropolis")
    g.add_argument("--mcmc-chains", type=int)
    g.add_argument("--mcmc-thin", type=int, help="Metropolis steps between kept samples (the paper's k)")
    g.add_argument("--mcmc-burn-in", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="cpu or cuda")
    g.add_argument("--dtype", choices=["float32", "float64"])
    g.add_argument("--engine-math", choices=["ffma", "3xtf32", "tf32"],
                   help="CUDA kernel arithmetic for sampling and local energies: ffma (default, within 1e-6 of "
                        "float64), 3xtf32 or tf32 (tensor cores; a faster training mode, docs/engine.md Precision)")
    g.add_argument("--no-gradient-graph", dest="gradient_graph", action="store_false", default=None,
                   help="run the gradient and update eagerly instead of replaying them from a CUDA graph "
                        "(CUDA only; the graph keeps one forward+backward's activations between steps)")
    g.add_argument("--checkpoint-every", type=int)
    g.add_argument("--eval-batch", type=int, help="samples of the final evaluation")
    g.add_argument("--no-exact", dest="exact", action="store_false", default=None, help="skip exact diagonalization")
    p.add_argument("--out", required=True, help="run directory (metrics, checkpoints, summary, plots)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("data parallelism (under torchrun; docs/distributed.md)")
    g.add_argument(
        "--dist-timeout",
        type=float,
        default=10.0,
        metavar="MINUTES",
        help="process-group timeout: a rank that dies or hangs stops the others after this long (default 10)",
    )


def _per_stage(text: str, n: int, cast, name: str):
    values = [cast(v) for v in str(text).split(",")]
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ValueError(f"--{name} takes one value or one per stage ({n}), got {len(values)}")
    return values


def config_from_args(args) -> "VMCConfig":
    from .vmc import VMCConfig, default_stages, load_config

    data: dict = {}
    if getattr(args, "config", None):
        data.update(load_config(args.config))
    keys = [
        "model", "lattice", "size", "pbc", "gamma", "j1", "j2", "units", "sz", "marshall", "n_blocks", "channels",
        "symmetrize", "spin_flip", "sampler", "mcmc_chains", "mcmc_thin", "mcmc_burn_in", "seed", "device", "dtype",
        "engine_math", "gradient_graph", "checkpoint_every", "eval_batch", "exact",
    ]  # fmt: skip
    for key in keys:
        value = getattr(args, key, None)
        if value is not None:
            data[key] = value
    config = VMCConfig.from_dict(data)
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        if "stages" in data:
            total = config.total_steps or 1
            for s in config.stages:
                s.steps = max(1, round(s.steps * args.steps / total))
        else:
            config.stages = default_stages(args.steps)
    n = len(config.stages)
    if args.batch is not None:
        for s, b in zip(config.stages, _per_stage(args.batch, n, int, "batch")):
            s.batch = b
    if args.lr is not None:
        for s, lr in zip(config.stages, _per_stage(args.lr, n, float, "lr")):
            s.lr = lr
    config.validate()
    return config


def _print_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    n = summary["n_sites"]
    units = summary["units"]
    print(f"energy           {summary['energy']:.8f} +- {summary['energy_error']:.8f} [{units}]")
    print(f"energy per site  {summary['energy_per_site']:.8f}")
    if "exact_energy" in summary:
        print(f"exact energy     {summary['exact_energy']:.8f} (per site {summary['exact_energy'] / n:.8f})")
        print(f"relative error   {summary['relative_error']:.3e}")
    print(f"variance         {summary['variance']:.3e}")
    print(f"<m>, <|m|>       {summary['magnetization']:.5f}, {summary['abs_magnetization']:.5f}")
    print(f"steps, seconds   {summary['steps']}, {summary['seconds']:.1f}")


def _saved_config(args) -> dict | None:
    """The run's own config.json when resuming without new system flags."""
    saved = Path(args.out) / "config.json"
    if args.resume and saved.exists() and not args.config and args.model is None:
        return json.loads(saved.read_text())
    return None


def cmd_train(args) -> int:
    from . import distributed
    from .vmc import VMC, VMCConfig

    config = config_from_args(args)
    saved = _saved_config(args)
    # torchrun sets RANK/WORLD_SIZE/LOCAL_RANK: then this process is one rank of a
    # data-parallel run. The backend follows the device, so pick the device first
    # (a resumed run's own device unless --device says otherwise).
    device = args.device or (saved or {}).get("device") or config.device
    if args.dist_timeout is None or not args.dist_timeout > 0:
        raise ValueError(f"--dist-timeout must be a positive number of minutes, got {args.dist_timeout}")
    ctx = distributed.init_from_environment(device, timeout_s=args.dist_timeout * 60.0)
    if ctx is None:
        if saved is not None:
            config = VMCConfig.from_dict(saved)
        summary = VMC(config, args.out, progress=not args.quiet).run(resume=args.resume)
        _print_summary(summary, args.json)
        return 0
    try:
        if args.resume:
            # rank 0's config.json wins on every rank (other hosts may not see --out)
            saved = ctx.broadcast_object(saved)
            if saved is not None:
                config = VMCConfig.from_dict(saved)
        summary = VMC(config, args.out, progress=not args.quiet and ctx.is_main, dist=ctx).run(resume=args.resume)
    except distributed.RankFailure as err:
        # every rank saw the failure in the same collective: nothing is pending, a clean
        # teardown is safe; the last checkpoint (written atomically by rank 0) is intact
        print(f"naqs train: rank {ctx.rank}/{ctx.world_size}: error: {err}", file=sys.stderr)
        ctx.shutdown()
        return 1
    except BaseException as err:
        # failed outside the agreement protocol: peers may still be inside a collective,
        # so abort the group instead of waiting for them (their timeout stops them)
        print(f"naqs train: rank {ctx.rank}/{ctx.world_size}: error: {type(err).__name__}: {err}", file=sys.stderr)
        ctx.abort()
        raise
    ctx.shutdown()
    if ctx.is_main:
        _print_summary(summary, args.json)
    return 0


def cmd_demo(args) -> int:
    """4x4 open Ising at Gamma = 3 with a small network, checked against ED."""
    from .vmc import VMC, Stage, VMCConfig

    config = VMCConfig(
        model="ising",
        lattice="square",
        size="4x4",
        gamma=3.0,
        n_blocks=4,
        channels=16,
        stages=[Stage(400, 128, "adam", 3e-3), Stage(300, 512, "adam", 1e-3), Stage(100, 1024, "sgd", 2e-3)],
        eval_batch=16384,
        checkpoint_every=100,
        seed=args.seed,
    )
    if args.steps:
        total = config.total_steps
        for s in config.stages:
            s.steps = max(1, round(s.steps * args.steps / total))
    summary = VMC(config, args.out, progress=not args.quiet).run(resume=args.resume)
    _print_summary(summary, args.json)
    if not args.json:
        print(f"training curve   {Path(args.out) / 'training.png'}")
    return 0


# ---------------------------------------------------------------------- sample
def cmd_sample(args) -> int:
    import numpy as np
    import torch

    from . import sampling
    from .vmc import VMC, VMCConfig

    run_dir = Path(args.checkpoint)
    checkpoint = run_dir / "checkpoint.pt" if run_dir.is_dir() else run_dir
    if not checkpoint.exists():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    config = VMCConfig.from_dict(state["config"])
    if args.device:
        config.device = args.device
    vmc = VMC(config, checkpoint.parent, progress=False)
    vmc.model.load_state_dict(state["model"])
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    generator = torch.Generator(device=config.device).manual_seed(args.seed)
    if args.method == "exact":
        spins, log_psi = sampling.exact_sample(vmc.model, args.n, generator=generator)
        acceptance = None
    else:
        magnetization = getattr(vmc.model, "magnetization", None)
        result = sampling.metropolis_sample(
            vmc.model.log_psi,
            vmc.lattice.n_sites,
            args.n,
            n_chains=args.chains,
            move="exchange" if magnetization is not None else "flip",
            magnetization=magnetization,
            burn_in=args.burn_in,
            thin=args.thin,
            generator=generator,
            device=config.device,
        )
        spins, log_psi, acceptance = result.samples, result.log_psi, result.acceptance
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"spins": spins.cpu().numpy().astype(np.int8), "log_psi": log_psi.detach().cpu().numpy()}
    if out.suffix == ".npy":
        np.save(out, arrays["spins"])
    else:
        np.savez_compressed(out, **arrays)
    info = {"n": args.n, "method": args.method, "out": str(out), "n_sites": vmc.lattice.n_sites}
    if acceptance is not None:
        info["acceptance"] = acceptance
    print(json.dumps(info))
    return 0


# ---------------------------------------------------------------------- figures
def cmd_figure(args) -> int:
    from . import figures

    if args.figure_command == "pca":
        result = figures.pca_of_samples(
            Path(args.run), args.out, n_samples=args.n, chains=args.chains, thin=args.thin, burn_in=args.burn_in,
            seed=args.seed, device=args.device,
        )  # fmt: skip
    else:
        config = config_from_args(args)
        ks = [int(k) for k in str(args.ks).split(",") if k]
        result = figures.compare_samplers(config, args.out, ks=ks, progress=not args.quiet)
    print(json.dumps(result, indent=2))
    return 0


# ---------------------------------------------------------------------- ed / study / bench
def cmd_ed(args) -> int:
    from .ed import run_ed_cli

    run_ed_cli(args)
    return 0


def cmd_study(args) -> int:
    from .study import run_study_cli

    run_study_cli(args)
    return 0


def cmd_bench(args) -> int:
    import runpy

    script = Path(__file__).resolve().parent.parent / "bench" / f"bench_{args.what}.py"
    if not script.exists():
        raise FileNotFoundError(f"benchmark script {script} not found (benchmarks run from a source checkout)")
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="naqs", description="Neural autoregressive quantum states")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="4x4 Ising at Gamma=3 trained with a small NAQS and checked against ED")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--steps", type=int, help="total steps (default 800)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="VMC ground-state search with a NAQS")
    _add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a trained NAQS")
    p.add_argument("--checkpoint", required=True, help="run directory or checkpoint.pt")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--method", choices=["exact", "mcmc"], default="exact")
    p.add_argument("--out", required=True, help=".npz (spins, log_psi) or .npy (spins)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--thin", type=int, default=10)
    p.add_argument("--burn-in", type=int, default=200)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("ed", help="exact diagonalization")
    try:
        from .ed import add_ed_arguments

        add_ed_arguments(p)
    except ImportError as err:  # pragma: no cover
        p.set_defaults(_unavailable=str(err))
    p.set_defaults(func=cmd_ed)

    p = sub.add_parser("study", help="generalization study of frustrated magnets")
    try:
        from .study import add_study_arguments

        add_study_arguments(p.add_subparsers(dest="study_command", required=True))
    except ImportError as err:  # pragma: no cover
        p.set_defaults(_unavailable=str(err))
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("figure", help="NAQS paper figures: pca (Fig. 2), samplers (Fig. 3)")
    fig_sub = p.add_subparsers(dest="figure_command", required=True)
    q = fig_sub.add_parser("pca", help="Fig. 2: PCA of exact vs Metropolis samples of a trained run")
    q.add_argument("--run", required=True, help="run directory of naqs train")
    q.add_argument("--out", required=True, help="PNG file (a JSON with the magnetizations goes beside it)")
    q.add_argument("--n", type=int, default=2000)
    q.add_argument("--chains", type=int, default=4)
    q.add_argument("--thin", type=int, default=10)
    q.add_argument("--burn-in", type=int, default=500)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--device")
    q = fig_sub.add_parser("samplers", help="Fig. 3: training with exact vs Metropolis samples (thinning k)")
    _add_train_arguments(q)
    q.add_argument("--ks", default="10,50", help="Metropolis thinnings k, comma separated")
    p.set_defaults(func=cmd_figure)

    p = sub.add_parser("bench", help="run a benchmark script from bench/ (engine, ed, study, vmc)")
    p.add_argument("what", help="engine | ed | study | vmc ...")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_unavailable", None):
        parser.error(f"'{args.command}' is unavailable: {args._unavailable}")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, TypeError) as err:
        print(f"naqs {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
