"""Run `--help` of many step scripts in one interpreter (imports are paid once), as `python file.py` and as
`python -m module` would; print one JSON line per script with both outputs."""
import contextlib
import io
import json
import runpy
import sys
from pathlib import Path


def capture(run, argv0):
    out = io.StringIO()
    sys.argv = [argv0, "--help"]
    code = 0
    with contextlib.redirect_stdout(out):
        try:
            run()
        except SystemExit as e:
            code = e.code or 0
        except Exception as e:  # an import error or crash is a failure with its reason
            code, out = 1, io.StringIO(f"{type(e).__name__}: {e}")
    return code, out.getvalue()


repo = Path(sys.argv[1])
for rel in sys.argv[2:]:
    path = repo / rel
    module = ".".join(Path(rel).with_suffix("").parts)
    sys.path.insert(0, str(path.parent))  # what `python file.py` puts first on sys.path
    file_code, file_out = capture(lambda: runpy.run_path(str(path), run_name="__main__"), str(path))
    sys.path.pop(0)
    mod_code, mod_out = capture(lambda: runpy.run_module(module, run_name="__main__", alter_sys=True), module)
    print(json.dumps({"script": rel, "file_code": file_code, "file_out": file_out, "module_code": mod_code,
                      "module_out": mod_out}), flush=True)
