# The whole product as one workflow: download -> prepare -> train -> sample -> evaluate -> tables.
#
#   snakemake --cores 2                  the default target at config.yaml's scale (toy on CPU)
#   snakemake --cores 2 smoke            every experiment at tiny scale (seconds to minutes)
#   snakemake --profile slurm <target>   on a SLURM cluster at paper scale (heavy rules through shared.launch)
#
# Outputs carry their scale in the path (results/<scale>/...), so tiny, toy and paper numbers never mix.

# Paths resolve against the repository, so `--directory /scratch/run` keeps outputs elsewhere.
configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/digits.smk"
include: "workflow/rules/samplers.smk"
include: "workflow/rules/sd_flux_lab_tools.smk"
include: "workflow/rules/sd_flux_lab.smk"
include: "workflow/rules/dmd2.smk"
include: "workflow/rules/leaderboard.smk"

report: "workflow/report/workflow.rst"
include: "workflow/rules/titok_rar.smk"
include: "workflow/rules/titok_rar_generators.smk"
include: "workflow/rules/glide_finetune.smk"
include: "workflow/rules/results.smk"


rule all:
    default_target: True
    input:
        targets_for(config["scale"], default_only=True),
        f"results/{config['scale']}/leaderboard/default/leaderboard.md",


rule smoke:
    input:
        targets_for("tiny"),


# One table over every project at the configured scale (runs every project's chain first).
rule leaderboard:
    input:
        f"results/{config['scale']}/leaderboard/all/leaderboard.md",


# Every project's toy chain, then the full leaderboard (and, at the end, the report: see onsuccess below).
rule toy:
    input:
        targets_for("toy"),
        "results/toy/leaderboard/all/leaderboard.md",


# The default target, `toy` and `leaderboard` end with the HTML report of what they ran
# (results/<scale>/report.html; `--no-hooks` skips it). Any target: snakemake --report report.html <target>.
REPORT_TARGETS = {"all", "toy", "leaderboard"}


onsuccess:
    write_report_after(REPORT_TARGETS)
