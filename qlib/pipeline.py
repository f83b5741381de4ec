"""The one-command pipeline: notebooks 01 → 05 executed with papermill.

    python -m qlib.pipeline demo                              # synthetic data, "demo" preset
    python -m qlib.pipeline smoke --run-root /tmp/smoke       # the same in seconds (tests)
    python -m qlib.pipeline reproduce --root /data/stanford_cars [--seeds 0 1 2]

`plan(...)` lists the notebook executions of a mode (a pure function); `run_pipeline(...)`
executes them in order, stops at the first failure with a `PipelineError` naming the notebook
and the cell, and prints the elapsed time per notebook and in total. `reproduce` is resumable:
a training run whose metrics.json is final is skipped (notebook 03 also resumes a run it finds
unfinished, through `train(config)`'s own resume).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .utils import experiment_root, repo_root, write_json

__all__ = [
    "METHODS",
    "MODES",
    "NOTEBOOKS",
    "NOTEBOOK_DIR",
    "PipelineError",
    "Step",
    "declared_parameters",
    "main",
    "plan",
    "run_finished",
    "run_pipeline",
]

NOTEBOOK_DIR = repo_root() / "notebooks"
NOTEBOOKS = (
    "01_data_prep.ipynb",
    "02_mining_toy.ipynb",
    "03_train.ipynb",
    "04_evaluate.ipynb",
    "05_table1.ipynb",
)
MODES = ("demo", "smoke", "reproduce")
# Every method qlib.train builds ("clustering" of the paper's Table 1 is not built).
METHODS = ("random", "method1", "method2", "semihard", "lifted", "npairs", "triplet_global")

# Per mode: where runs go, the training preset, the data, the default seeds and which trained
# methods notebook 04 evaluates (the first seed of each).
_MODE_SETTINGS = {
    "demo": {
        "run_root": "runs/demo",
        "preset": "demo",
        "dataset": "synthetic",
        "size": "demo",
        "smoke": False,
        "seeds": (0,),
        # ~30 s each on 2 CPU cores: the three quadruplet selections side by side.
        "evaluate": ("random", "method1", "method2"),
    },
    "smoke": {
        "run_root": "runs/smoke",
        "preset": "smoke",
        "dataset": "synthetic",
        "size": "smoke",
        "smoke": True,
        "seeds": (0,),
        "evaluate": ("method2",),
    },
    "reproduce": {
        "run_root": "runs/paper",
        "preset": "paper",
        "dataset": "stanford_cars",
        "size": "cars196",
        "smoke": False,
        "seeds": (0, 1, 2),
        "evaluate": ("random", "method1", "method2"),
    },
}


class PipelineError(RuntimeError):
    """A notebook of the pipeline failed; the message names the notebook and the cell."""


@dataclass(frozen=True)
class Step:
    """One notebook execution: `notebook` (file name in notebooks/), its papermill
    `parameters`, the executed copy's file `name`, and the training run it produces (03) or
    reads (04) as `run_dir` (None for the others)."""

    notebook: str
    parameters: dict = field(hash=False)
    name: str
    run_dir: Path | None = None


def plan(
    mode: str,
    run_root: str | Path | None = None,
    *,
    root: str | None = None,
    seeds: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    evaluate: Sequence[str] | None = None,
    coarse: str = "suffix22",
    resume: bool | None = None,
) -> list[Step]:
    """The notebook executions of `mode` in order: 01, 02, 03 once per method and seed, 04 on
    the first seed of each method in `evaluate` (that is also trained), 05 once. Every notebook
    saves its figures to figures/ in demo mode, and to `<run_root>/figures` in smoke and
    reproduce modes (the committed figures are the demo's). `resume` (default:
    only in reproduce) lets notebook 03 continue an interrupted run instead of starting over."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is unknown; expected one of {MODES}.")
    settings = _MODE_SETTINGS[mode]
    if mode == "reproduce" and not root:
        raise ValueError(
            "reproduce needs the Stanford Cars folder: pass --root /path/to/stanford_cars."
        )
    methods = tuple(methods) if methods else METHODS
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected some of {METHODS}.")
    seeds = tuple(seeds) if seeds else settings["seeds"]
    if not seeds or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative ints, got {seeds!r}.")
    evaluate = settings["evaluate"] if evaluate is None else tuple(evaluate)
    run_root = Path(run_root if run_root is not None else repo_root() / settings["run_root"])
    run_root = run_root if run_root.is_absolute() else repo_root() / run_root
    if settings["smoke"]:  # where notebooks 03/04 put smoke runs: every notebook must agree
        run_root = experiment_root(run_root, smoke=True)
    common = {"run_root": str(run_root), "smoke": settings["smoke"]}
    if mode == "reproduce":
        # The committed figures/ are the demo's: Stanford Cars figures stay with their runs.
        common["figures_dir"] = str(run_root / "figures")
    several_seeds = len(seeds) > 1

    def suffix(method: str, seed: int) -> str:
        return f"_{method}_seed{seed}" if several_seeds else f"_{method}"

    steps = [
        Step(
            "01_data_prep.ipynb",
            {
                **common,
                "dataset": settings["dataset"],
                "root": root or "",
                "coarse": coarse,
                "size": settings["size"],
                "seed": seeds[0],
            },
            "01_data_prep.ipynb",
        ),
        Step("02_mining_toy.ipynb", {**common, "seed": seeds[0]}, "02_mining_toy.ipynb"),
    ]
    for method in methods:
        for seed in seeds:
            params = {
                **common,
                "preset": settings["preset"],
                "method": method,
                "seed": seed,
                "resume": mode == "reproduce" if resume is None else bool(resume),
            }
            if root:
                params["root"] = root
            steps.append(
                Step(
                    "03_train.ipynb",
                    params,
                    f"03_train{suffix(method, seed)}.ipynb",
                    run_root / f"{method}_seed{seed}",
                )
            )
    for method in (m for m in evaluate if m in methods):
        run_name = f"{method}_seed{seeds[0]}"
        steps.append(
            Step(
                "04_evaluate.ipynb",
                {**common, "run_name": run_name, "seed": seeds[0]},
                f"04_evaluate{suffix(method, seeds[0])}.ipynb",
                run_root / run_name,
            )
        )
    steps.append(Step("05_table1.ipynb", dict(common), "05_table1.ipynb"))
    return steps


def run_finished(run_dir: str | Path) -> bool:
    """Whether a training run is complete: its metrics.json holds the final evaluation (train's
    own test, `qlib.train.run_is_finished`)."""
    from . import train

    return bool(train.run_is_finished(Path(run_dir)))


def declared_parameters(notebook: str | Path) -> list[str]:
    """The names assigned at the top level of a notebook's cell tagged `parameters` (read with
    `ast`: papermill's own parser skips lines whose comments hold quotes)."""
    import ast

    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise PipelineError(
            f"Notebook {Path(notebook).name} has {len(cells)} cells tagged 'parameters'; "
            "expected exactly one."
        )
    names = []
    for node in ast.parse(cells[0].source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


class _QuietParameterWarnings:
    """Drops papermill's own parameter-cell warnings ("Unable to parse line", "Passed unknown
    parameter"): its regex parser misreads comments holding quotes, and `declared_parameters`
    already checks every parameter with `ast`."""

    def filter(self, record) -> bool:
        message = record.getMessage()
        return not message.startswith(("Unable to parse line", "Passed unknown parameter"))


def _use_this_interpreter() -> None:
    """Make the "python3" kernel the interpreter running this process (the venv), and let the
    executed notebooks keep their inline figures."""
    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + path
    # `make` exports MPLBACKEND=Agg for scripts; kernels should draw inline (figures are saved
    # to files either way).
    if os.environ.get("MPLBACKEND", "").lower() == "agg":
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"


def _execute(
    step: Step, output: Path, *, log_output: bool, progress_bar: bool, start_timeout: int
) -> None:
    import papermill as pm

    source = NOTEBOOK_DIR / step.notebook
    if not source.is_file():
        raise PipelineError(f"Notebook {step.notebook} does not exist in {NOTEBOOK_DIR}.")
    declared = declared_parameters(source)
    undeclared = sorted(set(step.parameters) - set(declared))
    if undeclared:
        raise PipelineError(
            f"Notebook {step.notebook} does not declare the parameters {undeclared} in its "
            f"'parameters' cell (it declares {sorted(declared)})."
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(
            str(source),
            str(output),
            parameters=step.parameters,
            kernel_name="python3",
            log_output=log_output,
            progress_bar=progress_bar,
            start_timeout=start_timeout,
            cwd=str(NOTEBOOK_DIR),
        )
    except pm.PapermillExecutionError as err:
        first_line = str(err.evalue).strip().splitlines()[0] if str(err.evalue).strip() else ""
        first_line = first_line.rstrip(".")
        source_line = next((ln for ln in err.source.splitlines() if ln.strip()), "")
        raise PipelineError(
            f"Notebook {step.name[:-6]} failed in cell {err.cell_index} "
            f"(In [{err.exec_count}], starting {source_line.strip()!r}): "
            f"{err.ename}: {first_line}. Executed copy: {output}"
        ) from err
    except Exception as err:  # kernel death, timeouts, bad parameters
        raise PipelineError(
            f"Notebook {step.name[:-6]} could not be executed: {type(err).__name__}: "
            f"{str(err).rstrip('.')}. "
            f"Executed copy: {output}"
        ) from err


def run_pipeline(
    steps: Sequence[Step],
    executed_dir: str | Path,
    *,
    resume: bool = False,
    log_output: bool = False,
    progress_bar: bool = True,
    start_timeout: int = 120,
    echo: Callable[[str], None] = print,
) -> list[dict]:
    """Execute `steps` in order, the executed copies into `executed_dir`. With `resume`, a
    training step whose run is finished is skipped. Returns one record per step
    (`notebook`, `name`, `seconds`, `status`); raises `PipelineError` at the first failure.
    The timings are also written to `<run_root>/pipeline_timings.json`."""
    import logging

    _use_this_interpreter()
    quiet = _QuietParameterWarnings()
    for name in ("papermill", "papermill.translators"):
        if not any(isinstance(f, _QuietParameterWarnings) for f in logging.getLogger(name).filters):
            logging.getLogger(name).addFilter(quiet)
    executed_dir = Path(executed_dir)
    records: list[dict] = []
    start = time.perf_counter()
    for i, step in enumerate(steps, 1):
        label = f"[{i}/{len(steps)}] {step.name[:-6]}"
        if resume and step.notebook == "03_train.ipynb" and run_finished(step.run_dir):
            echo(f"{label}: skipped, {step.run_dir} is finished")
            records.append(
                {"notebook": step.notebook, "name": step.name, "seconds": 0.0, "status": "skipped"}
            )
            continue
        echo(f"{label} ...")
        tic = time.perf_counter()
        _execute(
            step,
            executed_dir / step.name,
            log_output=log_output,
            progress_bar=progress_bar,
            start_timeout=start_timeout,
        )
        seconds = time.perf_counter() - tic
        echo(f"{label}: {seconds:.1f} s")
        records.append(
            {"notebook": step.notebook, "name": step.name, "seconds": seconds, "status": "ran"}
        )
    total = time.perf_counter() - start
    echo("\nElapsed per notebook:")
    for record in records:
        echo(f"  {record['name'][:-6]:<40} {record['seconds']:8.1f} s  {record['status']}")
    echo(f"Total: {total:.1f} s ({total / 60:.1f} min) for {len(steps)} notebooks")
    run_roots = {step.parameters.get("run_root") for step in steps} - {None}
    for run_root in run_roots:
        write_json(
            Path(run_root) / "pipeline_timings.json", {"steps": records, "total_seconds": total}
        )
    return records


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m qlib.pipeline", description="Run notebooks 01 → 05 with papermill."
    )
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--root", help="Stanford Cars folder (reproduce)")
    parser.add_argument("--run-root", help="experiment folder (default runs/<demo|smoke|paper>)")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds")
    parser.add_argument("--methods", nargs="+", choices=METHODS, help="methods to train")
    parser.add_argument("--evaluate", nargs="*", help="methods notebook 04 evaluates")
    parser.add_argument("--coarse", default="suffix22", help="coarse vocabulary (Stanford Cars)")
    parser.add_argument("--executed-dir", help="where executed notebooks go")
    parser.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    parser.add_argument("--no-resume", action="store_true", help="reproduce: retrain finished runs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        steps = plan(
            args.mode,
            args.run_root,
            root=args.root,
            seeds=args.seeds,
            methods=args.methods,
            evaluate=args.evaluate,
            coarse=args.coarse,
            resume=args.mode == "reproduce" and not args.no_resume,
        )
        executed_dir = args.executed_dir or NOTEBOOK_DIR / "executed" / args.mode
        run_pipeline(
            steps,
            executed_dir,
            resume=args.mode == "reproduce" and not args.no_resume,
            log_output=args.log_output,
        )
    except (PipelineError, ValueError) as err:
        print(f"\nPipeline stopped: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
