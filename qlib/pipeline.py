"""The one-command pipeline: data, training runs, showcase notebooks and Table 1.

    python -m qlib.pipeline demo [--seeds 0 1 2]              # synthetic data, "demo" preset
    python -m qlib.pipeline figures                           # the demo's figures into figures/
    python -m qlib.pipeline smoke --run-root /tmp/smoke       # the same in seconds (tests)
    python -m qlib.pipeline reproduce --root /data/stanford_cars [--seeds 0 1 2]

A mode's plan (`plan(...)`, a pure function) is a list of steps:

    01_data_prep         notebook: the manifest every later step reads
    warmstart            Python: the init="classifier" warm start, trained once per experiment
    02_mining_toy        notebook: the 2D toy of Fig. 2
    train <method>_seed<s>   Python: `qlib.train.train(config)`, one per method and seed
    04_evaluate          notebook, on seed 0 of the methods in `evaluate`
    03_train             notebook, once, on a finished run (it does not retrain: resume=True)
    05_table1            notebook: Table 1 and the paired differences from the run files

`run_pipeline(steps, ...)` runs them on `workers` processes side by side, each step as soon as
the steps it needs are done (notebooks one at a time, beside trainings), and stops at the
first failure with a `PipelineError` naming the step (and for a notebook the cell). Training
runs are plain Python, not notebook executions: notebook 03 is executed once as a showcase.
Every training process uses `threads` torch threads (1 by default, recorded in each run's
config.json), so a run's numbers do not depend on how many runs share the machine or in which
process they ran.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .utils import experiment_root, repo_root, resolve_path, write_json

__all__ = [
    "METHODS",
    "MODES",
    "NOTEBOOKS",
    "NOTEBOOK_DIR",
    "PipelineError",
    "Step",
    "declared_parameters",
    "default_workers",
    "main",
    "plan",
    "portable_path",
    "run_finished",
    "run_pipeline",
    "train_many",
    "training_config",
]

NOTEBOOK_DIR = repo_root() / "notebooks"
NOTEBOOKS = (
    "01_data_prep.ipynb",
    "02_mining_toy.ipynb",
    "03_train.ipynb",
    "04_evaluate.ipynb",
    "05_table1.ipynb",
)
MODES = ("demo", "figures", "smoke", "reproduce")
# Every row of the paper's Table 1, in its order of training here.
METHODS = (
    "random",
    "method1",
    "method2",
    "semihard",
    "lifted",
    "npairs",
    "clustering",
    "triplet_global",
)

# Per mode: where runs go, the training preset, the data, the default seeds, which trained
# methods notebook 04 evaluates (seed 0 of each), the run notebook 03 shows, and settings every
# training of the mode overrides.
_MODE_SETTINGS: dict[str, dict[str, Any]] = {
    "demo": {
        "run_root": "runs/demo",
        "preset": "demo",
        "dataset": "synthetic",
        "size": "demo",
        "smoke": False,
        "seeds": (0, 1, 2),
        "evaluate": ("random", "method1", "method2"),
        "showcase": "method2",
        "overrides": {},
    },
    "smoke": {
        "run_root": "runs/smoke",
        "preset": "smoke",
        "dataset": "synthetic",
        "size": "smoke",
        "smoke": True,
        "seeds": (0,),
        "evaluate": ("method2",),
        "showcase": "method2",
        # The demo's warm start, at smoke size: the pipeline's every stage in seconds.
        "overrides": {"init": "classifier"},
    },
    "reproduce": {
        "run_root": "runs/paper",
        "preset": "paper",
        "dataset": "stanford_cars",
        "size": "cars196",
        "smoke": False,
        "seeds": (0, 1, 2),
        "evaluate": ("random", "method1", "method2"),
        "showcase": "method2",
        "overrides": {},
    },
}
_MODE_SETTINGS["figures"] = _MODE_SETTINGS["demo"]


class PipelineError(RuntimeError):
    """A step of the pipeline failed; the message names the step (and the notebook cell)."""


@dataclass(frozen=True)
class Step:
    """One unit of work: a notebook execution (`kind` "notebook": `notebook` in notebooks/
    with its papermill `parameters`), a training run (`kind` "train": `parameters` are the
    overrides of `training_config`) or a warm start (`kind` "warmstart"). `name` is unique in a
    plan (the executed notebook's file name for notebooks); `run_dir` the training run made
    (train) or read (03, 04); `after` the names of the steps that must finish first."""

    notebook: str | None
    parameters: dict = field(hash=False)
    name: str
    run_dir: Path | None = None
    kind: str = "notebook"
    after: tuple[str, ...] = ()


def portable_path(path: str | Path) -> str:
    """`path` relative to the repository root when it lies inside it (how run folders record
    their run_root, so that a moved or cloned repository still resumes them), else absolute."""
    path = resolve_path(path)
    try:
        return str(path.relative_to(repo_root()))
    except ValueError:
        return str(path)


def training_config(parameters: dict):
    """The TrainConfig of a "train" or "warmstart" step: `config_from_preset(preset, ...)`
    with the experiment's manifest (notebook 01's) and no progress bars."""
    from . import train as qtrain

    values = dict(parameters)
    preset = values.pop("preset")
    values.setdefault("manifest_path", qtrain.experiment_manifest(values["run_root"]))
    values.setdefault("progress", False)
    return qtrain.config_from_preset(preset, **values)


def _warm_start_group(parameters: dict) -> tuple:
    """The settings the classifier warm start depends on (qlib.train.warmstart's key, without
    the data): runs with the same group share one classifier."""
    config = training_config(parameters)
    if config.init != "classifier":
        return ()
    fields = ("backbone", "embedding_dim", "normalize", "freeze_bn", "classifier_epochs")
    return tuple(getattr(config, f) for f in (*fields, "batch_size", "amp", "image_size"))


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
    figures_dir: str | Path | None = None,
) -> list[Step]:
    """The steps of `mode` in priority order (see the module docstring). Figures go to
    `<run_root>/figures` (demo, smoke, reproduce) or to the repository's figures/ (`figures`
    mode, which also reuses finished runs). `resume` (default: reproduce and figures) lets a
    training continue an interrupted run and skips finished ones; the demo retrains."""
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
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative ints, got {seeds!r}.")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must differ, got {seeds!r}.")
    evaluate = settings["evaluate"] if evaluate is None else tuple(evaluate)
    run_root = resolve_path(run_root if run_root is not None else settings["run_root"])
    if settings["smoke"]:  # where notebooks 03/04 put smoke runs: every notebook must agree
        run_root = experiment_root(run_root, smoke=True)
    if figures_dir is None:
        figures_dir = repo_root() / "figures" if mode == "figures" else run_root / "figures"
    resume = mode in ("reproduce", "figures") if resume is None else bool(resume)
    common = {"run_root": portable_path(run_root), "smoke": settings["smoke"]}
    notebook_common = {**common, "figures_dir": portable_path(figures_dir)}
    overrides = dict(settings["overrides"])

    def train_parameters(method: str, seed: int) -> dict:
        params = {"preset": settings["preset"], "method": method, "seed": seed}
        params |= {"run_root": portable_path(run_root), "resume": resume, **overrides}
        return params | ({"root": root} if root else {})

    data = Step(
        "01_data_prep.ipynb",
        {
            **notebook_common,
            "dataset": settings["dataset"],
            "root": root or "",
            "coarse": coarse,
            "size": settings["size"],
            "seed": seeds[0],
        },
        "01_data_prep.ipynb",
    )
    toy = Step("02_mining_toy.ipynb", {**notebook_common, "seed": seeds[0]}, "02_mining_toy.ipynb")

    # One warm start per group of runs that share it, trained before them (not twice in
    # parallel under the cache's lock).
    groups: dict[tuple, list[str]] = {}
    for method in methods:
        group = _warm_start_group(train_parameters(method, seeds[0]))
        if group:
            groups.setdefault(group, []).append(method)
    warm_starts = {
        group: Step(
            None,
            train_parameters(members[0], seeds[0]),
            f"warmstart for {', '.join(members)}",
            kind="warmstart",
            after=(data.name,),
        )
        for group, members in groups.items()
    }

    def training(method: str, seed: int) -> Step:
        params = train_parameters(method, seed)
        group = _warm_start_group(params)
        after = (warm_starts[group].name,) if group else (data.name,)
        return Step(
            None,
            params,
            f"train {method}_seed{seed}",
            run_root / f"{method}_seed{seed}",
            kind="train",
            after=after,
        )

    trainings = {(m, s): training(m, s) for s in seeds for m in methods}
    first = seeds[0]
    evaluations = [
        Step(
            "04_evaluate.ipynb",
            {**notebook_common, "run_name": f"{m}_seed{first}", "seed": first},
            f"04_evaluate_{m}_seed{first}.ipynb",
            run_root / f"{m}_seed{first}",
            after=(trainings[(m, first)].name,),
        )
        for m in evaluate
        if m in methods
    ]
    showcase = []
    if settings["showcase"] in methods:
        method = settings["showcase"]
        params = {**notebook_common, "preset": settings["preset"], "method": method}
        params |= {"seed": first, "resume": True}
        params |= {k: v for k, v in overrides.items() if k == "init"}
        params |= {"root": root} if root else {}
        showcase.append(
            Step(
                "03_train.ipynb",
                params,
                f"03_train_{method}_seed{first}.ipynb",
                run_root / f"{method}_seed{first}",
                after=(trainings[(method, first)].name,),
            )
        )
    table = Step(
        "05_table1.ipynb",
        dict(notebook_common),
        "05_table1.ipynb",
        after=tuple(t.name for t in trainings.values()),
    )
    # Priority order: the first seed's runs early, so that notebooks 03/04 overlap training.
    firsts = [trainings[(m, first)] for m in methods]
    rest = [t for (m, s), t in trainings.items() if s != first]
    return [data, *warm_starts.values(), toy, *firsts, *evaluations, *showcase, *rest, table]


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


_HEADLESS_MESSAGE = "ipywidgets is off in pipeline kernels (headless runs draw no widgets)"


def _headless_widgets() -> None:
    """Make `import ipywidgets` fail in the kernels this process starts, as in an install
    without the `lab` extra: executing an `ipywidgets.interact` cell headless can hang nbclient
    forever at random (papermill issue 723, nbclient issue 312; seen here in notebook 02). The
    notebooks already handle a missing ipywidgets; tqdm falls back to text bars."""
    import atexit
    import shutil
    import tempfile

    if os.environ.get("QLIB_HEADLESS_WIDGETS"):
        return
    folder = tempfile.mkdtemp(prefix="qlib-headless-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    shim = Path(folder) / "ipywidgets"
    shim.mkdir()
    (shim / "__init__.py").write_text(f"raise ImportError({_HEADLESS_MESSAGE!r})\n")
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(shim.parent), *([path] if path else [])])
    os.environ["QLIB_HEADLESS_WIDGETS"] = str(shim.parent)


def _use_this_interpreter() -> None:
    """Make the "python3" kernel the interpreter running this process (the venv), headless
    (`_headless_widgets`), and let the executed notebooks keep their inline figures."""
    import logging

    _headless_widgets()

    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + path
    # `make` exports MPLBACKEND=Agg for scripts; kernels should draw inline (figures are saved
    # to files either way).
    if os.environ.get("MPLBACKEND", "").lower() == "agg":
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    quiet = _QuietParameterWarnings()
    for name in ("papermill", "papermill.translators"):
        if not any(isinstance(f, _QuietParameterWarnings) for f in logging.getLogger(name).filters):
            logging.getLogger(name).addFilter(quiet)


def _execute(
    step: Step,
    output: Path,
    *,
    notebook_dir: Path,
    log_output: bool,
    progress_bar: bool,
    start_timeout: int,
    cell_timeout: int | None = None,
) -> None:
    import papermill as pm

    source = Path(notebook_dir) / step.notebook
    if not source.is_file():
        raise PipelineError(f"Notebook {step.notebook} does not exist in {notebook_dir}.")
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
            execution_timeout=cell_timeout,
            cwd=str(notebook_dir),
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


def _with_threads(threads: int | None, work: Callable[[], Any]) -> Any:
    """Run `work` with `threads` torch intra-op threads (None: leave torch's setting), then
    restore the previous count. Float sums may be split differently with another count, so a
    training's thread count is fixed (and recorded in its config.json)."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return work()
    finally:
        torch.set_num_threads(previous)


def _train(parameters: dict) -> None:
    from . import train as qtrain

    qtrain.train(training_config(parameters))


def _warm_start(parameters: dict) -> None:
    """Train (or find cached) the classifier warm start exactly as `train` would."""
    from . import train as qtrain
    from .train.setup import repeatable_cpu
    from .train.warmstart import classifier_state
    from .utils import resolve_device

    config = training_config(parameters)
    device = resolve_device(config.device)
    with repeatable_cpu(device, config.threads):
        classifier_state(config, qtrain.build_datasets(config), device)


def _run_step(step: Step, options: dict) -> float:
    """Execute one step (in this process); returns its wall time in seconds."""
    tic = time.perf_counter()
    if step.kind == "notebook":
        _execute(
            step,
            Path(options["executed_dir"]) / step.name,
            notebook_dir=Path(options["notebook_dir"]),
            log_output=options["log_output"],
            progress_bar=options["progress_bar"],
            start_timeout=options["start_timeout"],
            cell_timeout=options["cell_timeout"],
        )
    elif step.kind in ("train", "warmstart"):
        work = _train if step.kind == "train" else _warm_start
        try:
            _with_threads(options["threads"], lambda: work(step.parameters))
        except Exception as err:
            raise PipelineError(
                f"Step {step.name!r} failed: {type(err).__name__}: {str(err).rstrip('.')}."
            ) from err
    else:
        raise PipelineError(f"Step {step.name!r} has an unknown kind {step.kind!r}.")
    return time.perf_counter() - tic


def _worker_init() -> None:
    _use_this_interpreter()


def default_workers() -> int:
    """Processes side by side: one per CPU core (at most 8) on a CPU, one on a GPU (a run
    there already uses the whole device)."""
    import torch

    return 1 if torch.cuda.is_available() else max(1, min(os.cpu_count() or 1, 8))


def _load() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def run_pipeline(
    steps: Sequence[Step],
    executed_dir: str | Path,
    *,
    resume: bool = False,
    workers: int = 1,
    threads: int | None = 1,
    log_output: bool = False,
    progress_bar: bool = True,
    start_timeout: int = 120,
    cell_timeout: int | None = None,
    echo: Callable[[str], None] = print,
) -> list[dict]:
    """Execute `steps`, each once the steps named in its `after` are done, on `workers`
    processes (1: in this process), earlier steps first; executed notebooks go to
    `executed_dir`. A training whose parameters say `resume` (or every training, with
    `resume=True`) is skipped when its run is finished. Returns one record per step (`name`,
    `kind`, `seconds`, `status`) in completion order; raises `PipelineError` at the first
    failure (steps already running finish first); a notebook cell running longer than
    `cell_timeout` seconds is a failure. Timings, load and layout are also written to
    `<run_root>/pipeline_timings.json`."""
    from . import checks

    checks.integer("workers", workers, 1)
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ValueError("step names must be unique within a pipeline.")
    unknown = sorted({a for s in steps for a in s.after} - set(names))
    if unknown:
        raise ValueError(f"steps wait for unknown steps {unknown}.")
    _use_this_interpreter()
    options = {
        "executed_dir": str(executed_dir),
        "notebook_dir": str(NOTEBOOK_DIR),
        "threads": threads,
        "log_output": log_output,
        "progress_bar": progress_bar and workers == 1,
        "start_timeout": start_timeout,
        "cell_timeout": cell_timeout,
    }
    records: list[dict] = []
    index = {s.name: i for i, s in enumerate(steps, 1)}
    label = {
        s.name: f"[{index[s.name]}/{len(steps)}] {s.name.removesuffix('.ipynb')}" for s in steps
    }
    start, load_start = time.perf_counter(), _load()

    def skip(step: Step) -> bool:
        wants = resume or bool(step.parameters.get("resume"))
        return step.kind == "train" and wants and run_finished(step.run_dir)

    done: set[str] = set()
    pending = list(steps)

    def ready() -> list[Step]:
        return [s for s in pending if set(s.after) <= done]

    def finish(step: Step, seconds: float, status: str) -> None:
        done.add(step.name)
        records.append({"name": step.name, "kind": step.kind, "notebook": step.notebook,
                        "seconds": seconds, "status": status})  # fmt: skip
        said = "skipped, finished before" if status == "skipped" else f"{seconds:.1f} s"
        echo(f"{label[step.name]}: {said}")

    def take_skips() -> None:
        for step in ready():
            if skip(step):
                pending.remove(step)
                finish(step, 0.0, "skipped")
                take_skips()
                return

    if workers == 1:
        while pending:
            take_skips()
            if not pending:
                break
            if not ready():
                raise PipelineError(
                    f"steps {[s.name for s in pending]} wait for steps that never ran."
                )
            step = ready()[0]
            pending.remove(step)
            echo(f"{label[step.name]} ...")
            finish(step, _run_step(step, options), "ran")
    else:
        _run_parallel(pending, ready, take_skips, finish, options, workers, label, echo)

    total = time.perf_counter() - start
    echo("\nElapsed per step (wall time, steps overlap when workers > 1):")
    for record in records:
        echo(f"  {record['name'].removesuffix('.ipynb'):<40} {record['seconds']:8.1f} s  "
             f"{record['status']}")  # fmt: skip
    echo(f"Total: {total:.1f} s ({total / 60:.1f} min) for {len(steps)} steps on {workers} "
         f"worker(s), {threads or 'default'} torch thread(s) per training")  # fmt: skip
    summary = {
        "steps": records,
        "total_seconds": total,
        "workers": workers,
        "torch_threads_per_training": threads,
        "cpu_count": os.cpu_count(),
        "load_average_start": load_start,
        "load_average_end": _load(),
    }
    for run_root in {s.parameters.get("run_root") for s in steps} - {None}:
        write_json(resolve_path(run_root) / "pipeline_timings.json", summary)
    return records


def _run_parallel(pending, ready, take_skips, finish, options, workers, label, echo) -> None:
    """The scheduler of `run_pipeline` on a pool of spawned processes."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")  # no fork of a threaded torch process
    running: dict = {}
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
        try:
            while pending or running:
                take_skips()
                for step in ready():
                    if len(running) >= workers:
                        break
                    # One notebook at a time: kernels started in parallel processes can race
                    # for the same ports and hang (papermill issues 239, 511).
                    if step.kind == "notebook" and any(
                        s.kind == "notebook" for s in running.values()
                    ):
                        continue
                    pending.remove(step)
                    echo(f"{label[step.name]} ...")
                    running[pool.submit(_run_step, step, options)] = step
                if not running:
                    if pending:
                        raise PipelineError(
                            f"steps {[s.name for s in pending]} wait for steps that never ran."
                        )
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    step = running.pop(future)
                    finish(step, future.result(), "ran")
        except BaseException:
            for future in running:
                future.cancel()
            raise


def train_many(
    parameters: Sequence[dict],
    *,
    workers: int | None = None,
    threads: int | None = 1,
    resume: bool = True,
    echo: Callable[[str], None] = print,
) -> list[dict]:
    """Train many runs side by side (`parameters`: `training_config` overrides, each with
    `preset`, `method`, `seed`, `run_root`, optionally `run_name`, ...), each warm start
    first; finished runs are skipped when `resume`. For `scripts/tune.py` and
    `scripts/study.py`; returns `run_pipeline`'s records."""
    steps, warm = [], {}
    for params in parameters:
        params = {"resume": resume, **params, "run_root": portable_path(params["run_root"])}
        group = (params["run_root"], _warm_start_group(params))
        after: tuple[str, ...] = ()
        if group[1]:
            if group not in warm:
                name = f"warmstart {len(warm) + 1} ({params['run_root']})"
                warm[group] = Step(None, params, name, kind="warmstart")
                steps.append(warm[group])
            after = (warm[group].name,)
        config = training_config(params)
        run_dir = resolve_path(config.run_root) / config.name
        steps.append(
            Step(
                None,
                params,
                f"train {run_dir.parent.name}/{run_dir.name}",
                run_dir,
                kind="train",
                after=after,
            )  # fmt: skip
        )
    # Warm starts first, then the runs in the order given.
    steps.sort(key=lambda s: s.kind != "warmstart")
    return run_pipeline(
        steps,
        executed_dir=repo_root() / "notebooks" / "executed" / "train_many",
        workers=workers or default_workers(),
        threads=threads,
        echo=echo,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m qlib.pipeline",
        description="Data (01), training runs, notebooks 02-04 and Table 1 (05).",
    )
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--root", help="Stanford Cars folder (reproduce)")
    parser.add_argument("--run-root", help="experiment folder (default runs/<demo|smoke|paper>)")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds")
    parser.add_argument("--methods", nargs="+", choices=METHODS, help="methods to train")
    parser.add_argument("--evaluate", nargs="*", help="methods notebook 04 evaluates")
    parser.add_argument("--coarse", default="suffix22", help="coarse vocabulary (Stanford Cars)")
    parser.add_argument("--figures-dir", help="where figures go (default <run_root>/figures)")
    parser.add_argument("--executed-dir", help="where executed notebooks go")
    parser.add_argument("--workers", type=int, help="processes side by side (default: cores)")
    parser.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    parser.add_argument("--no-resume", action="store_true", help="retrain finished runs")
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
            resume=False if args.no_resume else None,
            figures_dir=args.figures_dir,
        )
        executed_dir = args.executed_dir or NOTEBOOK_DIR / "executed" / args.mode
        run_pipeline(
            steps,
            executed_dir,
            workers=args.workers or default_workers(),
            log_output=args.log_output,
            # A hung kernel fails instead of waiting forever; on Stanford Cars notebooks 01 and
            # 04 take minutes.
            cell_timeout=3600 if args.mode == "reproduce" else 600,
        )
    except (PipelineError, ValueError) as err:
        print(f"\nPipeline stopped: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
