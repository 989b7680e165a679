# The cross-project leaderboard: every evaluation JSON of a run in one table + an FD-vs-NFE scatter.
#   leaderboard_default: what the default target ran (digits + sampler comparison), its last step
#   leaderboard_all:     every project's registered targets at this scale (the `leaderboard` and `toy` targets)
# The JSONs are found by glob under the folders below (shared/tables.py skips files that are not evaluations),
# after the targets that write them have run.
LEADERBOARD_SOURCES = {
    "default": ["results/{scale}/sampler_compare/eval/*.json", "results/{scale}/metrics/digits/*.json"],
    "all": ["results/{scale}/**/*.json"],
}


# Registered targets that are tool smoke runs, not evaluations (and have no rule at paper scale).
LEADERBOARD_SKIP = ("/sd_flux_lab/generate/",)


def _leaderboard_rule_inputs(which):
    def inputs(wildcards):
        return [t for t in targets_for(wildcards.scale, default_only=(which == "default"))
                if not any(skip in t for skip in LEADERBOARD_SKIP)]

    return inputs


for _which in ("default", "all"):

    rule:
        name:
            f"leaderboard_{_which}"
        input:
            _leaderboard_rule_inputs(_which),
        output:
            md=f"results/{{scale}}/leaderboard/{_which}/leaderboard.md",
            csv=f"results/{{scale}}/leaderboard/{_which}/leaderboard.csv",
            html=report(f"results/{{scale}}/leaderboard/{_which}/leaderboard.html",
                        caption="../report/leaderboard.rst", category="Leaderboard",
                        labels={"name": f"leaderboard ({_which})"}),
            png=report(f"results/{{scale}}/leaderboard/{_which}/leaderboard_fd_vs_nfe.png",
                       caption="../report/leaderboard.rst", category="Leaderboard",
                       labels={"name": f"FD vs NFE ({_which})"}),
        log:
            f"logs/{{scale}}/leaderboard_{_which}.log",
        params:
            inputs=lambda wildcards, w=_which: "[" + ",".join(
                p.format(scale=wildcards.scale) for p in LEADERBOARD_SOURCES[w]) + "]",
            title="Leaderboard: what the default target ran" if _which == "default" else "Leaderboard: all projects",
        conda:
            conda_env("shared")
        shell:
            step("shared/tables.py kind=leaderboard scale={wildcards.scale} inputs='{params.inputs}' "
                 "title='{params.title}' out_md={output.md} out_csv={output.csv} out_png={output.png}")
