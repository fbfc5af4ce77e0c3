#!/usr/bin/python3
"""Executes every notebook of notebooks/ headless through the tdrl kernel, as a user would:
`jupyter nbconvert --execute --to notebook` (Debian's jupyter-nbconvert), each in a fresh
folder, then reads the executed notebook: every code cell ran, no cell raised, the outputs a
reader expects are there (images, tables, numbers). Its time is reported, not checked: the time
limit is a failure bound for a notebook that hangs, generous enough for a machine whose cores
are all busy with other work.

usage: /usr/bin/python3 tests/kernel/run_notebooks.py [path/to/tdrl] [notebook.ipynb ...]
Environment: TDRL_NOTEBOOK_LIMIT (seconds per notebook, default 900), TDRL_NOTEBOOK_KEEP (a folder
that receives the executed notebooks).
Prints "ok - ..." / "not ok - ..." lines; exits 1 when a check failed.
"""
import glob
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tdrl"))
LIMIT = float(os.environ.get("TDRL_NOTEBOOK_LIMIT", "900"))  # seconds per notebook: a failure bound only

# What each notebook must show besides running cleanly: a number of image outputs, and
# patterns found in its text outputs (stream or result), with the reason.
EXPECT = {
    "quickstart.ipynb": {
        "images": 1,
        "text": [(r"tensor of size 2x3", "a tensor summary"), (r"grad", "a gradient"),
                 (r"random images", "display of markdown"), (r"the kernel is still here", "a cell after an error")],
    },
    "diffusion.ipynb": {
        "images": 2,
        "text": [(r"loss", "the training losses"), (r"step\s+\d+", "a loss table by step"),
                 (r"parameters", "the model size")],
    },
    "trajectories.ipynb": {
        "images": 3,
        "text": [(r"accuracy", "head accuracies"), (r"NMI", "the NMI matrix"), (r"JSD", "attention JSD")],
    },
    "custom_head.ipynb": {
        "images": 1,
        "text": [(r"register", "the head registered"), (r"accuracy", "its accuracy through the protocol")],
    },
}

failures = 0


def ok(name, cond, detail=""):
    global failures
    if cond:
        print("ok - notebook " + name, flush=True)
    else:
        failures += 1
        print("not ok - notebook %s%s" % (name, (": " + str(detail)) if detail != "" else ""), flush=True)
    return cond


def texts_of(cell):
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            yield "".join(o.get("text", ""))
        elif o.get("output_type") in ("execute_result", "display_data"):
            for mime in ("text/plain", "text/markdown"):
                t = o.get("data", {}).get(mime)
                if t:
                    yield "".join(t)


def main():
    notebooks = [os.path.abspath(p) for p in sys.argv[2:]] or sorted(glob.glob(os.path.join(ROOT, "notebooks",
                                                                                           "*.ipynb")))
    if not notebooks:
        ok("folder holds notebooks", False, "no notebooks/*.ipynb")
        return
    tmp = tempfile.mkdtemp(prefix="tdrl-notebooks-")
    try:
        subprocess.run([os.path.join(ROOT, "scripts", "install_kernel.sh"), "--prefix", tmp, "--bin", BIN],
                       check=True, stdout=subprocess.DEVNULL)
        env = dict(os.environ)
        env["JUPYTER_PATH"] = os.path.join(tmp, "share", "jupyter")
        env["JUPYTER_RUNTIME_DIR"] = os.path.join(tmp, "runtime")
        env["JUPYTER_CONFIG_DIR"] = os.path.join(tmp, "config")  # no user configuration
        env.setdefault("TDRL_NUM_THREADS", "2")
        jupyter = "/usr/bin/jupyter" if os.path.exists("/usr/bin/jupyter") else "jupyter"
        for nb in notebooks:
            name = os.path.basename(nb)
            work = os.path.join(tmp, os.path.splitext(name)[0])
            os.makedirs(work)
            shutil.copy(nb, work)
            cmd = [jupyter, "nbconvert", "--execute", "--to", "notebook", "--ExecutePreprocessor.kernel_name=tdrl",
                   "--ExecutePreprocessor.timeout=%d" % int(LIMIT), "--ExecutePreprocessor.startup_timeout=60",
                   "--output", "executed.ipynb", "--output-dir", work, os.path.join(work, name)]
            t0 = time.time()
            cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            try:
                p = subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   timeout=LIMIT + 120)
                rc, log = p.returncode, p.stdout.decode("utf-8", "replace")
            except subprocess.TimeoutExpired as e:
                rc, log = "timeout", (e.output or b"").decode("utf-8", "replace")
            secs = time.time() - t0
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # nbconvert and its kernel, once waited for
            cpu = ru.ru_utime + ru.ru_stime - cpu0.ru_utime - cpu0.ru_stime
            if not ok("%s executes headless with nbconvert" % name, rc == 0,
                      "status %s after %.0f s\n%s" % (rc, secs, "\n".join("#   " + l for l in log[-4000:].splitlines()))):
                continue
            print("# %s ran in %.0f s (%.0f s of CPU)" % (name, secs, cpu), flush=True)
            keep = os.environ.get("TDRL_NOTEBOOK_KEEP")  # a folder for the executed notebooks
            if keep:
                os.makedirs(keep, exist_ok=True)
                shutil.copy(os.path.join(work, "executed.ipynb"), os.path.join(keep, name))
            with open(os.path.join(work, "executed.ipynb")) as f:
                doc = json.load(f)
            ok("%s: its kernel is tdrl (language lua)" % name,
               doc["metadata"].get("kernelspec", {}).get("name") == "tdrl"
               and doc["metadata"].get("language_info", {}).get("name") == "lua", doc["metadata"])
            cells = [c for c in doc["cells"] if c["cell_type"] == "code"]
            unrun = [i for i, c in enumerate(cells) if c.get("execution_count") is None]
            # a cell tagged raises-exception shows an error on purpose (nbclient lets it through)
            errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(cells) for o in c.get("outputs", [])
                      if o.get("output_type") == "error" and "raises-exception" not in c["metadata"].get("tags", [])]
            meant = [c for c in cells if "raises-exception" in c["metadata"].get("tags", [])]
            if meant:
                ok("%s: the cells meant to fail show an error with a traceback" % name, all(
                    any(o.get("output_type") == "error" and len(o.get("traceback", [])) > 1 for o in c["outputs"])
                    for c in meant), [c["outputs"] for c in meant])
            stderr = ["".join(o.get("text", "")) for c in cells for o in c.get("outputs", [])
                      if o.get("output_type") == "stream" and o.get("name") == "stderr"
                      and re.search(r"error|traceback", "".join(o.get("text", "")), re.I)]
            ok("%s: every code cell ran (%d cells), none raised" % (name, len(cells)), cells and not unrun and not errors
               and not stderr, {"not run": unrun, "errors": errors, "stderr": stderr[:3]})
            exp = EXPECT.get(name, {})
            images = sum(1 for c in cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
            if exp.get("images"):
                ok("%s shows at least %d inline image(s) (%d)" % (name, exp["images"], images), images >= exp["images"])
            alltext = "\n".join(t for c in cells for t in texts_of(c))
            for pattern, why in exp.get("text", []):
                ok("%s shows %s" % (name, why), re.search(pattern, alltext) is not None, "no match for /%s/" % pattern)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


try:
    main()
except Exception as e:  # noqa: BLE001
    import traceback
    ok("runner ran to the end", False, "".join(traceback.format_exception(e)))
sys.exit(1 if failures else 0)
