# README numbers are generated, not copied (shared/results_md.py): after a target's tables, copy each into its
# README's committed folder (projects/<name>/results/<scale>/<table>.csv + .provenance.json; the default
# target's in shared/toy/results/) and rewrite that README's section between its results markers.
#   snakemake --cores 2 readme             the default target, then README.md's section
#   snakemake --cores 2 readme_eval_sdxl   eval_sdxl, then projects/dmd2/README.md's section (readme_<target>)
# Only toy and paper scale write READMEs (tiny numbers check plumbing). The committed files are outputs inside the
# repository (REPO), whatever --directory the run uses: they are what the README shows. Snakemake reruns a collect
# when the table is newer than the committed copy; `python -m shared.results_md` itself always re-collects.
from shared.results_md import READMES, SCALES as README_SCALES, readme_rule


for _key, _entry in READMES.items():

    rule:
        name:
            f"results_md_{_key}"
        input:
            # a plot's CSV is no declared output: wait for its PNG (the step writes both)
            lambda w, e=_entry: f"results/{w.scale}/{e.table(w.table).after or e.table(w.table).source}",
        output:
            csv=f"{REPO}/{_entry.folder}/{{scale}}/{{table}}.csv",
            provenance=f"{REPO}/{_entry.folder}/{{scale}}/{{table}}.provenance.json",
        log:
            f"logs/{{scale}}/results_md_{_key}.{{table}}.log",
        wildcard_constraints:
            scale=one_of(README_SCALES), table=one_of([t.name for t in _entry.tables]),
        conda:
            conda_env("shared")
        params:
            readme=_key,  # the shell line is formatted when the job runs, after the loop: no loop variable in it
        shell:
            step(f"shared/results_md.py readme={{params.readme}} scale={{wildcards.scale}} "
                 f"tables=[{{wildcards.table}}] repo={REPO}")


def _readme_inputs(target, scale):
    return [f"{REPO}/{e.folder}/{scale}/{t.name}.csv" for e in READMES.values() for t in e.tables
            if t.target == target and scale in t.scales]


# readme (the default target) and readme_<target> for every target a README table names
for _target in dict.fromkeys(t.target for e in READMES.values() for t in e.tables):

    rule:
        name:
            readme_rule(_target)
        input:
            _readme_inputs(_target, config["scale"]),
