# Helpers every rule file uses: config validation, the launcher command, target registry, signal handling.
import os
import re
import signal
import sys

import jsonschema
import yaml
from snakemake.utils import validate

SCALES = ["tiny", "toy", "paper"]
REPO = os.path.abspath(os.path.join(workflow.current_basedir, "..", ".."))  # this file is workflow/rules/


def _uses_conda():
    from snakemake.settings.types import DeploymentMethod

    return DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method


# With --sdm conda each rule runs in its project's environment (envs/<project>.yml), so `python` is that
# environment's; otherwise rules use the interpreter snakemake runs in (SLURM jobs reuse it through submitit).
PY = "python" if _uses_conda() else sys.executable

# Every step, light or heavy, local or on SLURM (sbatch exports this environment), computes on the pinned CPU
# code paths (shared.launch.NUMERICS_ENV: the same toy numbers on any x86-64 machine).
if REPO not in sys.path:
    sys.path.insert(0, REPO)
from shared.launch import pin_numerics  # noqa: E402

pin_numerics(os.environ)


def conda_env(project):
    """The conda environment file of a project (generated from pyproject.toml by envs/sync.py)."""
    return os.path.join(REPO, "envs", f"{project}.yml")


def _validate_config(cfg, schema_path):
    """Fail before any job runs, naming the key and what is allowed."""
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    problems = []
    for err in jsonschema.validators.validator_for(schema)(schema).iter_errors(cfg):  # the draft $schema names
        key = ".".join(str(p) for p in err.absolute_path)
        if err.validator == "additionalProperties":
            unknown = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            allowed = ", ".join(err.schema.get("properties", {}))
            problems.append(f"unknown key {', '.join(repr(u) for u in unknown)}; allowed keys: {allowed}")
        elif err.validator == "enum":
            problems.append(f"key '{key}': {err.instance!r} is not allowed; expected one of {err.validator_value}")
        elif err.validator == "type":
            problems.append(f"key '{key}': {err.instance!r} is not of type {err.validator_value}")
        elif "description" in err.schema:
            problems.append(f"key '{key}': {err.instance!r} is not valid; expected {err.schema['description']}")
        else:
            problems.append(f"key '{key}': {err.message}")
    if problems:
        raise ValueError("invalid workflow config (config.yaml / --config):\n  " + "\n  ".join(problems))
    validate(cfg, schema_path)  # fills defaults


_validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))

def one_of(names):
    """A wildcard pattern matching exactly the given names (a registry's keys), so that the rules' patterns follow
    the projects' registries instead of repeating them as regexes."""
    return "|".join(re.escape(n) for n in names)


# Seeds (issue 18): a run or sample folder made with seed N > 0 is named <name>_seed<N>; seed 0 is the bare name.
# SEED_SUFFIX is the optional suffix as a wildcard pattern; shared/tables.py joins rows that differ by it alone.
SEED_SUFFIX = r"(_seed[1-9][0-9]*)?"


def seeded_name(name, seed):
    return name if seed == 0 else f"{name}_seed{seed}"


def split_seed(name):
    """'finetune_seed2' -> ('finetune', 2); a bare name is seed 0."""
    stem, sep, seed = name.rpartition("_seed")
    return (stem, int(seed)) if sep and seed.isdigit() else (name, 0)


# Rule files import the projects' registries (projects/<name>/recipes.py, ...) from the repository.
if REPO not in sys.path:
    sys.path.insert(0, REPO)

wildcard_constraints:
    scale=one_of(SCALES),


# --- targets: each rule file registers what its experiments produce at a given scale ------------------
# The default target must stay under ~15 minutes on 2 CPU cores at toy scale; a project's fuller toy
# reproduction registers with in_default=False and gets its own target, but always joins `smoke` (tiny).
_TARGETS = []


def register_targets(fn=None, *, in_default=True):
    """Decorator: fn(scale) -> output files the `smoke` target (tiny) and, if in_default, `all` should build."""
    def add(f):
        _TARGETS.append((f, in_default))
        return f

    return add(fn) if fn is not None else add


def targets_for(scale, default_only=False):
    return [path for fn, in_default in _TARGETS if in_default or not default_only for path in fn(scale)]


# --- heavy steps go through shared.launch (local process, or a SLURM job) -----------------------------
def step_threads(wildcards):
    """Local threads of a heavy step: tiny-scale steps are mostly imports, so two of them share the cores."""
    return 1 if wildcards.get("scale") == "tiny" else config["local_threads"]


def train_threads(wildcards):
    """Cores a local training step reserves: 1. Training steps run torch on one thread (their `threads=1`), so
    that (a) their weights, hence every table, do not depend on local_threads (a backward pass sums in a
    thread-count-dependent order) and (b) they keep their speed beside other CPU work (2 OpenMP threads on a busy
    2-core machine ran 10-20x slower; bench/bench_threads.py). Two of them run side by side under --cores 2.
    On SLURM the job still asks for local_threads CPUs (data loading, GPU steps)."""
    return 1 if config["launcher"] == "local" else step_threads(wildcards)


def heavy(gpus=0, nodes=1, cpus_per_task=None, mem_mb=4000, runtime=60, nproc_per_node=0):
    """Resources of a heavy rule; shared.launch maps them onto sbatch when launcher=slurm.

    Without an explicit cpus_per_task, a tiny-scale step asks for 1 CPU (it is mostly imports) and others for
    local_threads, so tiny jobs pack two to a small node.
    """
    cpus = cpus_per_task or (lambda wildcards: step_threads(wildcards))
    return dict(gpus=gpus, nodes=nodes, cpus_per_task=cpus, mem_mb=mem_mb, runtime=runtime,
                nproc_per_node=nproc_per_node)


def launch(command):
    """Shell command running `command` (a step script and its key=value options) through shared.launch."""
    opts = [
        f"--backend {config['launcher']}", "--name {rule}", "--log-dir logs/slurm/{rule}",
        "--nodes {resources.nodes}", "--gpus-per-node {resources.gpus}",
        "--nproc-per-node {resources.nproc_per_node}", "--cpus-per-task {resources.cpus_per_task}",
        "--mem-mb {resources.mem_mb}", "--runtime {resources.runtime}",
    ]
    if config["slurm_partition"]:
        opts.append(f"--partition {config['slurm_partition']}")
    if config["slurm_account"]:
        opts.append(f"--account {config['slurm_account']}")
    opts += [f"--sbatch {item}" for item in config["slurm_extra"].split(",") if item]
    return f"{PY} -m shared.launch {' '.join(opts)} -- {PY} {REPO}/{command}{LOG}"


def step(command):
    """Shell command for a light step that always runs on this machine (downloads, tables)."""
    return f"{PY} {REPO}/{command}{LOG}"


# Every rule has a `log:` file (logs/<scale>/<rule>...log): the step's stdout and stderr are copied there and still
# shown on the console. Snakemake's strict bash (pipefail) keeps the step's exit code (75 = preempted, saved).
# A rule without `log:` formats {log} as nothing, and tee then only passes the output through.
LOG = " 2>&1 | tee {log}"


# --- SIGTERM: cancel running jobs -----------------------------------------------------------------------
# Snakemake's own SIGTERM handling waits for running jobs to finish. A cluster user who stops the workflow
# wants their SLURM jobs cancelled, so we first pass SIGTERM to each running job's process tree
# (shared.launch then scancels its job), then let snakemake shut down as usual.
# The jobs are found through the process table (psutil), not snakemake's private shell registry: each job's
# shell command runs as a direct child of this snakemake process (a bash), and its step processes under it.
# The bash itself is left alone so that it reports the step's exit status back to snakemake. (Snakemake
# 9's `snakemake.shell.shell._processes`, read here before, no longer listed the jobs: SIGTERM cancelled nothing.)
def _forward_sigterm_to_jobs():
    import psutil

    previous = signal.getsignal(signal.SIGTERM)
    me = os.getpid()

    def handler(signum, frame):
        try:
            shells = psutil.Process(me).children()
        except psutil.Error:
            shells = []
        for shell_proc in shells:
            try:
                for p in shell_proc.children(recursive=True):
                    if p.name() != "tee":  # the log's tee exits once its writers do, after their last words
                        p.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, handler)


onstart:
    _forward_sigterm_to_jobs()


# --- the HTML report at the end of a run ----------------------------------------------------------------
def write_report_after(report_targets):
    """After a successful run of one of `report_targets` (none named = the default target), write
    results/<scale>/report.html with `snakemake --report` (same Snakefile, directory and --config)."""
    import subprocess

    targets = set(workflow.dag_settings.targets) or {"all"}
    if not targets <= set(report_targets):
        return
    scale = "toy" if targets == {"toy"} else config["scale"]
    out = os.path.join("results", scale, "report.html")
    overrides = [f"{k}={v}" for k, v in workflow.config_settings.overwrite_config.items()]
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", workflow.main_snakefile, "--directory", os.getcwd(),
           "--nolock", "--report", out, *sorted(targets)]
    if overrides:
        cmd += ["--config", *overrides]
    print(f"writing the report: {out}", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"the report failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}", file=sys.stderr, flush=True)
    else:
        print(f"report: {out} (open it in a browser)", flush=True)


# --- the HTML report (snakemake --report): one category per project ---------------------------------------------
# Subcategories: Tables (the .html page shared/tables.py writes beside each .md), Samples (grids), Plots, Training
# (curves), Provenance (a run's resolved config.yaml and run.json: host, git commit, packages). Captions are
# workflow/report/<caption>.rst; labels={"name": ...} (may use the rule's wildcards) names each entry.
REPORT_CATEGORIES = {
    "digits": "Digits (toy data)",
    "samplers": "Samplers",
    "sd_flux_lab": "sd_flux_lab (SD1.5, SDXL, FLUX.2)",
    "dmd2": "DMD2",
    "glide_finetune": "GLIDE",
    "titok_rar": "TiTok / RAR",
    "leaderboard": "Leaderboard",
}


def reported(path, project, subcategory, name, caption, **kwargs):
    """`path` as an entry of the report: under the project's category, `subcategory`, labelled `name`."""
    return report(path, caption=f"../report/{caption}.rst", category=REPORT_CATEGORIES[project],
                  subcategory=subcategory, labels={"name": name}, **kwargs)


def provenance(run_dir, project, name):
    """Output entries of a run's resolved config.yaml and run.json (written by shared.config.save_resolved, which
    shared.train.Trainer calls at the start of every run), for a rule's output: `**provenance(...)`."""
    return {"config": reported(f"{run_dir}/config.yaml", project, "Provenance", f"{name} config.yaml", "provenance"),
            "run": reported(f"{run_dir}/run.json", project, "Provenance", f"{name} run.json", "provenance")}


def curves(run_dir, project, name):
    """Output entries of a training run's curves, under the project's Training: `<run_dir>/curves.png` and the
    `curves.csv` behind it, which shared.train.Trainer.finish draws from metrics.jsonl at the end of every run (a
    tiny run's few rows too), for the output of the rule that trains: `**curves(...)`."""
    return {"curves": reported(f"{run_dir}/curves.png", project, "Training", f"{name} curves", "training_curves"),
            "curves_csv": reported(f"{run_dir}/curves.csv", project, "Training", f"{name} curves.csv",
                                   "training_curves")}
