#!/usr/bin/python3
"""Drives `tdrl --kernel` with a Jupyter client (Debian's python3-jupyter-client, python3-zmq):
kernel_info, heartbeat, execute (results, streams, errors, display), completion, inspection,
is_complete, history, comm_info, user_expressions, stop_on_error, interrupts (SIGINT during a Lua
loop, interrupt_request on the control channel during a long C kernel, SIGINT while idle),
malformed and unexpected messages on the shell and control channels, and shutdown.

usage: /usr/bin/python3 tests/kernel/protocol_test.py [path/to/tdrl]
Prints "ok - ..." / "not ok - ..." lines; exits 1 when a check failed.
"""
import base64
import hashlib
import hmac
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tdrl"))

failures = 0


def ok(name, cond, detail=""):
    global failures
    if cond:
        print("ok - kernel: " + name, flush=True)
    else:
        failures += 1
        print("not ok - kernel: %s%s" % (name, (": " + str(detail)[:2000]) if detail != "" else ""), flush=True)
    return cond


tmp = tempfile.mkdtemp(prefix="tdrl-kernel-test-")
subprocess.run([os.path.join(ROOT, "scripts", "install_kernel.sh"), "--prefix", tmp, "--bin", BIN, "--name",
                "tdrl"], check=True, stdout=subprocess.DEVNULL)
os.environ["JUPYTER_PATH"] = os.path.join(tmp, "share", "jupyter")
os.environ["JUPYTER_RUNTIME_DIR"] = os.path.join(tmp, "runtime")
os.environ.setdefault("TDRL_NUM_THREADS", "2")
os.environ["TDRL_TRACE_LONG_OPS"] = "1"  # the core says "tdrl: matmul started" on stderr: see wait_marker

import zmq  # noqa: E402
from jupyter_client.manager import start_new_kernel  # noqa: E402

kernel_log_path = os.path.join(tmp, "kernel.log")
kernel_log = open(kernel_log_path, "wb")
km, kc = start_new_kernel(kernel_name="tdrl", startup_timeout=60, cwd=tmp, stderr=kernel_log)
info = km.get_connection_info()
KEY = info["key"] if isinstance(info["key"], bytes) else info["key"].encode()
CTX = zmq.Context.instance()


# Every timeout below is a failure bound only, generous enough for a machine whose cores are all
# taken by other work: no check depends on how fast the host is. Where a check needs the kernel
# to be at a given point (inside a loop, inside a C kernel), the cell prints a marker and the
# test waits for it (wait_marker) instead of sleeping.
def shell_reply(msg_id, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = kc.get_shell_msg(timeout=max(0.1, deadline - time.time()))
        if r["parent_header"].get("msg_id") == msg_id:
            return r
    raise TimeoutError("no reply to " + msg_id)


stash = []  # iopub messages of other requests, read while looking for one's


def collect(msg_id, timeout=60):
    """iopub messages of one request, up to its status idle"""
    outs = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        mine = [m for m in stash if m["parent_header"].get("msg_id") == msg_id]
        if mine:
            stash[:] = [m for m in stash if m["parent_header"].get("msg_id") != msg_id]
            m = mine[0]
            stash[0:0] = mine[1:]
        else:
            m = kc.get_iopub_msg(timeout=max(0.1, deadline - time.time()))
        if m["parent_header"].get("msg_id") != msg_id:
            stash.append(m)
            del stash[:-1000]
            continue
        if m["msg_type"] == "status":
            if m["content"]["execution_state"] == "idle":
                return outs
            continue
        outs.append(m)
    raise TimeoutError("no idle status for " + msg_id)


def wait_marker(msg_id, marker, timeout=60):
    """waits until the cell msg_id has printed `marker` (stdout or stderr); its messages stay for collect()"""
    deadline = time.time() + timeout
    text = "".join(m["content"]["text"] for m in stash if m["parent_header"].get("msg_id") == msg_id
                   and m["msg_type"] == "stream")
    while marker not in text:
        m = kc.get_iopub_msg(timeout=max(0.1, deadline - time.time()))
        stash.append(m)
        if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "stream":
            text += m["content"]["text"]
    return True


def execute(code, timeout=60, **kw):
    mid = kc.execute(code, **kw)
    outs = collect(mid, timeout)
    return shell_reply(mid, timeout)["content"], outs


def of_type(outs, t):
    return [m["content"] for m in outs if m["msg_type"] == t]


def stream_text(outs, name="stdout"):
    return "".join(c["text"] for c in of_type(outs, "stream") if c["name"] == name)


def request(method, **kw):
    mid = getattr(kc, method)(**kw)
    return shell_reply(mid)["content"]


def png_size(b64):
    data = base64.b64decode(b64)
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", data[16:24])


def hb_ping(timeout=30.0):
    s = CTX.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect("%s://%s:%d" % (info["transport"], info["ip"], info["hb_port"]))
    payload = uuid.uuid4().hex.encode()
    s.send(payload)
    got = s.poll(int(timeout * 1000))
    reply = s.recv() if got else None
    s.close()
    return reply == payload


# ---- raw messages, for the malformed ones --------------------------------------------------------

def raw_socket(port_name):
    s = CTX.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect("%s://%s:%d" % (info["transport"], info["ip"], info[port_name]))
    return s  # a DEALER queues what is sent until the connection is up: no wait needed


def sign(parts, key=KEY):
    h = hmac.new(key, digestmod=hashlib.sha256)
    for p in parts:
        h.update(p)
    return h.hexdigest().encode()


def header(msg_type):
    return {"msg_id": uuid.uuid4().hex, "session": "raw-test", "username": "test", "date": "2024-01-01T00:00:00Z",
            "msg_type": msg_type, "version": "5.3"}


def raw_send(sock, parts, key=KEY, signature=None):
    parts = [p if isinstance(p, bytes) else json.dumps(p).encode() for p in parts]
    sig = signature if signature is not None else sign(parts, key)
    sock.send_multipart([b"<IDS|MSG>", sig] + parts)


def raw_recv(sock, timeout=30.0):
    """the reply as (header, parent, content), its signature checked; None when nothing came"""
    if not sock.poll(int(timeout * 1000)):
        return None
    frames = sock.recv_multipart()
    i = frames.index(b"<IDS|MSG>")
    sig, parts = frames[i + 1], frames[i + 2:i + 6]
    if not hmac.compare_digest(sig, sign(parts)):
        return ("bad signature on the kernel's reply", None, None)
    return tuple(json.loads(p) for p in (parts[0], parts[1], parts[3]))


def alive():
    try:
        r = request("kernel_info")
        return r.get("status") == "ok"
    except Exception as e:  # noqa: BLE001
        return False


try:
    # ---- basics ----------------------------------------------------------------------------------
    r = request("kernel_info")
    ok("kernel_info_reply: protocol 5.3, language lua, implementation tdrl",
       r.get("protocol_version") == "5.3" and r["language_info"]["name"] == "lua" and r["implementation"] == "tdrl"
       and r["status"] == "ok", r)
    ok("heartbeat echoes", hb_ping())

    r, outs = execute("1 + 1")
    res = of_type(outs, "execute_result")
    ok("an expression shows its value as execute_result", r["status"] == "ok" and len(res) == 1
       and res[0]["data"].get("text/plain") == "2" and res[0]["execution_count"] == r["execution_count"], (r, res))
    n0 = r["execution_count"]
    r, outs = execute("x = 40")
    ok("a statement shows nothing; the execution count goes up", r["status"] == "ok" and not of_type(
        outs, "execute_result") and r["execution_count"] == n0 + 1, (r, outs))
    r, outs = execute("x + 2")
    ok("globals persist across cells", of_type(outs, "execute_result")[0]["data"]["text/plain"] == "42", outs)
    inputs = of_type(outs, "execute_input")
    ok("execute_input is published with the code", inputs and inputs[0]["code"] == "x + 2", outs)

    r, outs = execute("local a = 3\nlocal b = a * 2\nb + 1")
    res = of_type(outs, "execute_result")
    ok("a cell's last line that is an expression shows its value", res and res[0]["data"]["text/plain"] == "7",
       (r, outs))
    r, outs = execute("local t = {}\nfor i = 1, 3 do t[i] = i * i end\nt[3]")
    res = of_type(outs, "execute_result")
    ok("last expression after a loop", res and res[0]["data"]["text/plain"] == "9", (r, outs))
    r, outs = execute("y = 5\n- 2")
    ok("a continued expression is not split (y = 5 - 2)", not of_type(outs, "execute_result") and execute(
        "y")[1][-1]["content"]["data"]["text/plain"] == "3", outs)
    r, outs = execute("1 + 1;")
    ok("a trailing ';' keeps the value quiet", r["status"] == "ok" and not of_type(outs, "execute_result"), outs)
    r, outs = execute("return 1, 'two', nil")
    res = of_type(outs, "execute_result")
    ok("several values show tab-separated, as print does", res and res[0]["data"]["text/plain"] == "1\ttwo\tnil",
       outs)

    r, outs = execute("{a = 1, b = {1, 2}, c = 'x'}")
    res = of_type(outs, "execute_result")
    ok("a table shows its contents, nested", res and res[0]["data"]["text/plain"]
       == '{\n  a = 1,\n  b = {1, 2},\n  c = "x",\n}', res)
    r, outs = execute("T.zeros(8, 32, 32, 16):size()")
    res = of_type(outs, "execute_result")
    ok("a size shows as {8, 32, 32, 16}", res and res[0]["data"]["text/plain"] == "{8, 32, 32, 16}", res)
    r, outs = execute("T.ones(2, 3)")
    res = of_type(outs, "execute_result")
    ok("a tensor shows as text", res and "tensor of size 2x3" in res[0]["data"]["text/plain"], outs)

    r, outs = execute('print("hello", 1) io.write("w\\n") io.stdout:write("s\\n") io.stderr:write("err\\n")\n'
                      'os.execute("echo from-a-subprocess") os.execute("echo sub-err 1>&2")')
    out, err = stream_text(outs), stream_text(outs, "stderr")
    ok("print, io.write and io.stdout:write go to the stdout stream", "hello\t1\nw\ns\n" in out, out)
    ok("io.stderr:write goes to the stderr stream", "err\n" in err, err)
    ok("a subprocess's output is captured too", "from-a-subprocess" in out and "sub-err" in err, (out, err))
    ok("output ends before the reply (nothing arrives after idle)", r["status"] == "ok")

    go = os.path.join(tmp, "go-partial")
    mid = kc.execute("io.write('partial line') while not io.open(%s) do end io.write(' done')" % json.dumps(go))
    try:
        shown = wait_marker(mid, "partial line", timeout=30)
    except Exception:  # noqa: BLE001
        shown = False
    open(go, "w").close()
    outs = collect(mid)
    ok("a partial line (io.write, no newline) shows while the cell still runs", shown
       and stream_text(outs) == "partial line done", stream_text(outs))
    r, outs = execute('io.write("a") os.execute("echo b") io.write("c") os.execute("echo d 1>&2") print("e")')
    ok("partial lines and a subprocess's output keep their order", stream_text(outs) == "ab\nce\n"
       and stream_text(outs, "stderr") == "d\n", (stream_text(outs), stream_text(outs, "stderr")))
    r, outs = execute('io.write("bad \\255 bytes, \\195") io.stdout:flush() io.write("\\169t\\195\\169\\n") return "x\\254y"')
    out, res = stream_text(outs), of_type(outs, "execute_result")
    ok("bytes that are not UTF-8 arrive as U+FFFD; a character split across writes stays whole",
       out == "bad \ufffd bytes, \u00e9t\u00e9\n" and res and res[0]["data"]["text/plain"] == "x\ufffdy", (out, res))

    r, outs = execute('print("a") display(plot.grid(T.rand(2, 1, 8, 8))) print("b")')
    kinds = [(m["msg_type"], m["content"].get("text", "")) for m in outs if m["msg_type"] in ("stream",
                                                                                             "display_data")]
    ok("streams and display_data keep their order", kinds == [("stream", "a\n"), ("display_data", ""),
                                                               ("stream", "b\n")], kinds)

    # ---- input from the notebook: io.read with allow_stdin ---------------------------------------------
    def with_input(code, answers):
        mid = kc.execute(code, allow_stdin=True)
        prompts = []
        for a in answers:
            req = kc.get_stdin_msg(timeout=60)
            prompts.append(req)
            kc.input(a)
        outs = collect(mid)
        return shell_reply(mid)["content"], outs, prompts

    r, outs, reqs = with_input("print('name?') local s = io.read() return 'hello ' .. s", ["Ada"])
    res = of_type(outs, "execute_result")
    ok("io.read() sends input_request and returns the input_reply's value", reqs
       and reqs[0]["msg_type"] == "input_request" and res and res[0]["data"]["text/plain"] == "hello Ada"
       and stream_text(outs) == "name?\n", (r, outs, reqs))
    r, outs, reqs = with_input("local a, b = io.read('n', 'l') return a + 1, b", ["41", "rest"])
    res = of_type(outs, "execute_result")
    ok("io.read formats (n, l), io.stdin:read and io.lines", res and res[0]["data"]["text/plain"] == "42\trest", (r, outs))
    r, outs, reqs = with_input("local t = {} for l in io.lines() do if l == 'end' then break end t[#t + 1] = l end "
                               "return io.stdin:read() .. #t", ["x", "y", "end", "z"])
    res = of_type(outs, "execute_result")
    ok("... io.lines() and io.stdin:read() ask too", res and res[0]["data"]["text/plain"] == "z2", (r, outs))
    r, outs = execute("return io.read()", allow_stdin=False)
    res = of_type(outs, "execute_result")
    ok("without allow_stdin io.read() gets end of input", r["status"] == "ok" and res
       and res[0]["data"]["text/plain"] == "nil", (r, outs))
    mid = kc.execute("return io.read()", allow_stdin=True)
    kc.get_stdin_msg(timeout=60)
    km.interrupt_kernel()
    r = shell_reply(mid)["content"]
    collect(mid)
    ok("an interrupt while waiting for input stops the cell", r["status"] == "error"
       and "interrupted" in r["evalue"], r)
    r, outs = execute("1 + 1")
    ok("... and the kernel goes on", of_type(outs, "execute_result")[0]["data"]["text/plain"] == "2", outs)

    # ---- errors --------------------------------------------------------------------------------------
    r, outs = execute('local function f() error("boom") end\nf()')
    errs = of_type(outs, "error")
    ok("a runtime error: error on iopub and an error reply", r["status"] == "error" and errs
       and r["ename"] == "LuaError" and "boom" in r["evalue"] and errs[0]["evalue"] == r["evalue"], (r, outs))
    ok("the traceback names the cell and the function", any("stack traceback" in l for l in r["traceback"])
       and any("In[" in l and "in local 'f'" in l for l in r["traceback"]), r.get("traceback"))
    r, outs = execute("x = = 1")
    ok("a syntax error: SyntaxError with the line", r["status"] == "error" and r["ename"] == "SyntaxError"
       and ":1:" in r["evalue"], r)
    r, outs = execute("a = 1\nb = nil\nb.c")
    ok("a runtime error on a cell's last line names that line", r["status"] == "error"
       and ("In[%d]:3:" % r["execution_count"]) in r["evalue"] and "In[%d]:4" % r["execution_count"] not in r["evalue"],
       r)
    r, outs = execute("a = nil\nlocal v = a.b -- a comment")
    ok("... also when the line ends in a comment", r["status"] == "error"
       and ("In[%d]:2:" % r["execution_count"]) in r["evalue"], r)
    r, outs = execute("q = 2\nq.x.y -- the last line")
    ok("... and when the last line is an expression with a comment", r["status"] == "error"
       and ("In[%d]:2:" % r["execution_count"]) in r["evalue"], r)
    r, outs = execute("{1,")
    ok("a syntax error quotes the user's code, not the kernel's wrapper", r["status"] == "error"
       and r["ename"] == "SyntaxError" and "near ')'" not in r["evalue"] and "<eof>" in r["evalue"], r)
    r, outs = execute("local s = 'x'\nreturn s +* 2")
    ok("... on the line where it is", r["status"] == "error" and ":2:" in r["evalue"]
       and "__tdrl_values" not in r["evalue"] and "'*'" in r["evalue"], r)
    r, outs = execute("m = 5; m")
    res = of_type(outs, "execute_result")
    ok("stmt; expr on one line shows the expression's value", r["status"] == "ok" and res
       and res[0]["data"]["text/plain"] == "5", (r, outs))
    r, outs = execute("print('a;b'); 6")
    res = of_type(outs, "execute_result")
    ok("... after a statement that prints (a ';' inside a string is no split)", r["status"] == "ok" and res
       and res[0]["data"]["text/plain"] == "6" and stream_text(outs) == "a;b\n", (r, outs))
    r, outs = execute("local t = {1; 2}; #t")
    res = of_type(outs, "execute_result")
    ok("... after a table with ';' separators", res and res[0]["data"]["text/plain"] == "2", (r, outs))
    r, outs = execute("u1 = 1; u2 = 2")
    ok("stmt; stmt shows nothing", r["status"] == "ok" and not of_type(outs, "execute_result"), (r, outs))
    r, outs = execute("u1 = 3; u1;")
    ok("stmt; expr; stays quiet", r["status"] == "ok" and not of_type(outs, "execute_result"), (r, outs))
    r, outs = execute("T.zeros(2, 3):matmul(T.zeros(4, 5))")
    ok("a core error surfaces as a Lua error naming the op", r["status"] == "error" and "matmul" in r["evalue"], r)
    r, outs = execute("error(setmetatable({}, {__tostring = function() return 'custom' end}))")
    ok("a non-string error object", r["status"] == "error" and "custom" in r["evalue"], r)
    r, outs = execute("x")
    ok("the kernel goes on after errors", r["status"] == "ok" and of_type(outs, "execute_result")[0]["data"][
        "text/plain"] == "40", (r, outs))

    # ---- rich output ---------------------------------------------------------------------------------
    r, outs = execute("cv = plot.grid(T.rand(4, 3, 8, 8), {nrow = 2, scale = 2, padding = 1})\ncv")
    res = of_type(outs, "execute_result")
    ok("a figure returned by a cell shows as image/png", res and png_size(res[0]["data"].get("image/png", "")) == (
        35, 35) and "text/plain" in res[0]["data"], (r, [list(c["data"]) for c in res]))
    png = os.path.join(tmp, "fig.png")
    r, outs = execute('cv:save_png(%s) display(%s)' % (json.dumps(png), json.dumps(png)))
    d = of_type(outs, "display_data")
    ok("display(path) sends the PNG file", d and png_size(d[0]["data"].get("image/png", "")) == (35, 35), (r, d))
    r, outs = execute("display(T.rand(6, 1, 10, 10) * 4 - 2)")
    d = of_type(outs, "display_data")
    ok("display(tensor of images) sends an image grid (scaled to its range)", d and png_size(
        d[0]["data"].get("image/png", "")) is not None and "scaled" in d[0]["data"]["text/plain"], (r, d))
    r, outs = execute("display('# Title', 'text/markdown') display({['text/html'] = '<b>x</b>'}) display(T.ones(2))")
    d = of_type(outs, "display_data")
    ok("display(text, mime), a MIME bundle, any value as text", len(d) == 3 and d[0]["data"] == {
        "text/markdown": "# Title"} and d[1]["data"] == {"text/html": "<b>x</b>"} and "tensor" in d[2]["data"][
        "text/plain"], d)
    r, outs = execute("display('/nonexistent/x.png')")
    ok("display of a missing file is a clean error", r["status"] == "error" and "cannot read" in r["evalue"], r)
    r, outs = execute("clear_output()")
    ok("clear_output sends clear_output", of_type(outs, "clear_output"), outs)

    # ---- completion, inspection, is_complete, history, comms -------------------------------------------
    execute("xs = T.randn(3, 4)")
    r = request("complete", code="T.ze")
    ok("complete T.ze -> T.zeros", "T.zeros" in r["matches"] and r["cursor_start"] == 0 and r["cursor_end"] == 4, r)
    code = "local y = xs:su"
    r = request("complete", code=code, cursor_pos=len(code))
    ok("complete a tensor method after ':'", "xs:sum" in r["matches"] and r["cursor_start"] == 10, r)
    r = request("complete", code="pri")
    ok("complete a global", r["matches"] == ["print"], r)
    code = 'io.open("%s/fi' % tmp
    r = request("complete", code=code, cursor_pos=len(code))
    ok("file names inside a string", os.path.join(tmp, "fig.png") in r["matches"], r)
    execute("lst = {{name = 1}}", store_history=False)
    code = "y = lst[1].na"
    r = request("complete", code=code, cursor_pos=len(code))
    ok("complete after a subscript: lst[1].na -> .name", r["matches"] == [".name"] and r["cursor_start"] == 10, r)
    code = "xs:size():"
    r = request("complete", code=code, cursor_pos=len(code))
    ok("complete after a call offers no globals", r["matches"] == [], r)
    code = "xs.requires"
    r = request("complete", code=code, cursor_pos=len(code))
    ok("complete a tensor field (xs.requires -> xs.requires_grad)", "xs.requires_grad" in r["matches"], r)
    r = request("complete", code="zzzq")
    ok("no match: an empty list", r["status"] == "ok" and r["matches"] == [], r)
    r = request("inspect", code="T.zeros(", cursor_pos=8)
    ok("inspect a function", r["found"] and "T.zeros" in r["data"]["text/plain"], r)
    r = request("inspect", code="T.randn(", cursor_pos=8)
    t = r["data"].get("text/plain", "")
    ok("inspect a core C function: its signature and doc", r["found"] and "T.randn(size..." in t
       and "normal" in t and "built-in" not in t, r)
    code = "xs:matmul("
    r = request("inspect", code=code, cursor_pos=len(code))
    t = r["data"].get("text/plain", "")
    ok("inspect a tensor method: x:matmul(y)", r["found"] and "x:matmul(y)" in t, r)
    r, outs = execute("help(T.save)", store_history=False)
    ok("help(x) in a cell prints the same signature", "T.save(path, tensors" in stream_text(outs), outs)
    r = request("inspect", code="xs", cursor_pos=1)
    ok("inspect a tensor", r["found"] and "3x4" in r["data"]["text/plain"], r)
    execute("-- adds one\n-- (a doc comment)\nfunction add_one(v)\n  return v + 1\nend")
    r = request("inspect", code="add_one", detail_level=1)
    t = r["data"].get("text/plain", "")
    ok("inspect a function defined in a cell: signature, doc comment, source", r["found"]
       and "add_one(v)" in t and "a doc comment" in t and "return v + 1" in t, r)
    r = request("inspect", code="no_such_thing")
    ok("inspect an unknown name: found = false", r["status"] == "ok" and not r["found"], r)
    st = [request("is_complete", code=c)["status"] for c in ("for i = 1, 3 do", "x = 1", "x = = 1", "f(1,")]
    ok("is_complete: incomplete, complete, invalid", st == ["incomplete", "complete", "invalid", "incomplete"], st)
    st = [request("is_complete", code=c)["status"] for c in ("{1,", "1 +", "'abc' ..", "x = {", "1 +* 2", "m = 1; m")]
    ok("is_complete continues what the REPL continues", st == ["incomplete"] * 4 + ["invalid", "complete"], st)
    r = request("history", hist_access_type="tail", n=2, output=False, raw=True)
    ok("history tail", r["status"] == "ok" and len(r["history"]) == 2 and r["history"][0][2] == "xs = T.randn(3, 4)"
       and r["history"][1][2].startswith("-- adds one") and r["history"][1][1] == r["history"][0][1] + 1, r)
    mid = kc.session.msg("comm_info_request", {})
    kc.shell_channel.send(mid)
    r = shell_reply(mid["header"]["msg_id"])["content"]
    ok("comm_info", r == {"status": "ok", "comms": {}}, r)
    msg = kc.session.msg("comm_open", {"comm_id": "c1", "target_name": "nothing", "data": {}})
    kc.shell_channel.send(msg)
    outs = collect(msg["header"]["msg_id"])
    ok("comm_open to no target: comm_close", of_type(outs, "comm_close") and of_type(outs, "comm_close")[0][
        "comm_id"] == "c1", outs)
    r, outs = execute("z = 1", user_expressions={"a": "1 + 2", "b": "error('no')"})
    ue = r["user_expressions"]
    ok("user_expressions", ue["a"]["status"] == "ok" and ue["a"]["data"]["text/plain"] == "3"
       and ue["b"]["status"] == "error", ue)
    r, outs = execute("silent_val = 7", silent=True)
    ok("a silent execution publishes nothing", r["status"] == "ok" and not of_type(outs, "execute_input"), outs)

    # stop_on_error: a request queued behind a failing one is aborted
    # m1 runs until the kernel itself sees m2 waiting on its shell socket, then fails: no message
    # from this side could say when m2 has arrived there (a heartbeat travels on another
    # connection, and under load it overtook m2)
    m1 = kc.execute("print('m1 waits') local K = require('tdrl.kernel') while not K.shell_pending() do end "
                    "error('first')")
    wait_marker(m1, "m1 waits")
    m2 = kc.execute("second_ran = true")
    r1, r2 = shell_reply(m1)["content"], shell_reply(m2)["content"]
    collect(m1), collect(m2)
    r, outs = execute("second_ran")
    ok("stop_on_error: a queued execute is aborted", r1["status"] == "error" and r2["status"] == "aborted"
       and of_type(outs, "execute_result")[0]["data"]["text/plain"] == "nil", (r1, r2))

    # ---- interrupts ----------------------------------------------------------------------------------
    mid = kc.execute("print('in the loop') local n = 0 while true do n = n + 1 end")
    wait_marker(mid, "in the loop")
    t0 = time.time()
    km.interrupt_kernel()  # the kernelspec's mode: SIGINT
    r = shell_reply(mid, 60)["content"]  # the loop never ends by itself: the bound is a failure bound
    dt = time.time() - t0
    collect(mid)
    ok("SIGINT stops a Lua loop (%.2f s)" % dt, r["status"] == "error" and r["ename"] == "Interrupted", r)

    # matmul of 8192 x 8192 takes seconds even on a fast machine; the core announces it has started
    # (TDRL_TRACE_LONG_OPS), and the error names the op ("matmul: interrupted", as docs/repl.md says): the kernel itself
    # stopped (an interrupt that came after it would stop the next Lua instruction, with no op)
    big = "local a = T.zeros(8192, 8192) local c = a:matmul(a) return 'finished'"
    mid = kc.execute(big)
    wait_marker(mid, "tdrl: matmul started")
    t0 = time.time()
    km.interrupt_kernel()
    r = shell_reply(mid, 300)["content"]
    dt = time.time() - t0
    collect(mid)
    ok("SIGINT stops a long C kernel mid-way (%.2f s)" % dt, r["status"] == "error" and "interrupted" in r["evalue"]
       and "matmul: interrupted" in r["evalue"], r)

    mid = kc.execute(big)
    wait_marker(mid, "tdrl: matmul started")
    ok("heartbeat answers while a cell runs", hb_ping())
    t0 = time.time()
    imsg = kc.session.msg("interrupt_request", {})
    kc.control_channel.send(imsg)
    irep = kc.get_control_msg(timeout=60)
    r = shell_reply(mid, 300)["content"]
    dt = time.time() - t0
    collect(mid)
    ok("interrupt_request on control: interrupt_reply", irep["msg_type"] == "interrupt_reply"
       and irep["content"]["status"] == "ok", irep)
    ok("interrupt_request stops a long C kernel mid-way (%.2f s)" % dt, r["status"] == "error"
       and "matmul: interrupted" in r["evalue"], r)

    # kill() makes the signal pending at once and the interrupt_reply comes after the kernel
    # signalled itself: both are there before the next cell starts, with no wait
    os.kill(km.provisioner.process.pid, signal.SIGINT)
    imsg = kc.session.msg("interrupt_request", {})
    kc.control_channel.send(imsg)
    kc.get_control_msg(timeout=60)
    r, outs = execute("local s = 0 for i = 1, 2e6 do s = s + i end return s")
    ok("an interrupt while idle does not stop the next cell", r["status"] == "ok" and of_type(
        outs, "execute_result")[0]["data"]["text/plain"] == "2000001000000", (r, outs))

    # ---- malformed and unexpected messages -------------------------------------------------------------
    sh = raw_socket("shell_port")
    sh.send_multipart([b"garbage", b"more garbage"])
    rep = raw_recv(sh)
    ok("no <IDS|MSG> delimiter: an error reply", rep is not None and rep[2] and rep[2].get("status") == "error",
       rep)
    h = header("execute_request")
    raw_send(sh, [h, {}, {}, {"code": "hacked = true"}], key=b"not-the-key")
    rep = raw_recv(sh)
    ok("bad signature: an error reply, not executed", rep is not None and rep[2].get("status") == "error"
       and "signature" in rep[2].get("evalue", ""), rep)
    h = header("kernel_info_request")
    raw_send(sh, [h, {}, {}, b"{not json"])
    rep = raw_recv(sh)
    ok("content that is not JSON: kernel_info_reply with status error", rep is not None
       and rep[0]["msg_type"] == "kernel_info_reply" and rep[2]["status"] == "error" and rep[1].get(
        "msg_id") == h["msg_id"], rep)
    raw_send(sh, [{"msg_id": "x"}, {}, {}, {}])
    rep = raw_recv(sh)
    ok("a header without msg_type: an error reply", rep is not None and rep[2]["status"] == "error", rep)
    raw_send(sh, [b"[1, 2]", {}, {}, {}])
    rep = raw_recv(sh)
    ok("a header that is not an object: an error reply", rep is not None and rep[2]["status"] == "error", rep)
    sh.send_multipart([b"<IDS|MSG>", b"sig", b"{}"])
    rep = raw_recv(sh)
    ok("too few frames: an error reply", rep is not None and rep[2]["status"] == "error", rep)
    h = header("frobnicate_request")
    raw_send(sh, [h, {}, {}, {}])
    rep = raw_recv(sh)
    ok("an unknown request type: <type>_reply with status error", rep is not None
       and rep[0]["msg_type"] == "frobnicate_reply" and rep[2]["status"] == "error", rep)
    h = header("execute_request")
    raw_send(sh, [h, {}, {}, {"code": 42}])
    rep = raw_recv(sh)
    ok("execute_request whose code is not a string: an error reply", rep is not None
       and rep[0]["msg_type"] == "execute_reply" and rep[2]["status"] == "error", rep)
    h = header("complete_request")
    raw_send(sh, [h, {}, {}, {"code": "T.ze", "cursor_pos": 99999}])
    rep = raw_recv(sh)
    ok("complete_request with a cursor past the end", rep is not None and rep[2]["status"] == "ok", rep)
    rng = random.Random(7)
    for i in range(200):
        frames = [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40))) for _ in range(rng.randint(1, 8))]
        if rng.random() < 0.5:
            frames.insert(rng.randint(0, len(frames)), b"<IDS|MSG>")
        sh.send_multipart(frames)
    sh.send_multipart([b""] * 5000)  # absurdly many frames
    sh.close()  # the error replies still on their way are dropped with the socket
    ct = raw_socket("control_port")
    h = header("frobnicate_request")
    raw_send(ct, [h, {}, {}, {}])
    rep = raw_recv(ct)
    ok("control: an unknown request gets an error reply", rep is not None and rep[2]["status"] == "error", rep)
    raw_send(ct, [h, {}, {}, {}], signature=b"0" * 64)
    rep = raw_recv(ct)
    ok("control: a bad signature gets an error reply", rep is not None and rep[2]["status"] == "error", rep)
    ct.close()
    r, outs = execute("hacked")
    ok("after 200 garbage messages (and one of 5000 frames) the kernel answers; the unsigned code never ran", alive() and of_type(
        outs, "execute_result")[0]["data"]["text/plain"] == "nil" and hb_ping(), outs)

    # ---- shutdown ------------------------------------------------------------------------------------
    proc = km.provisioner.process
    t0 = time.time()
    smsg = kc.session.msg("shutdown_request", {"restart": False})
    kc.control_channel.send(smsg)
    srep = kc.get_control_msg(timeout=60)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        rc = None
    ok("shutdown_request: shutdown_reply, then the process exits by itself (%.2f s, status %s)" % (
        time.time() - t0, rc), srep["msg_type"] == "shutdown_reply" and rc == 0, srep)
except Exception as e:  # noqa: BLE001
    import traceback
    ok("protocol test ran to the end", False, "".join(traceback.format_exception(e)))
finally:
    try:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    except Exception:  # noqa: BLE001
        pass
    kernel_log.close()
    if failures:
        with open(kernel_log_path, "rb") as f:
            tail = f.read()[-3000:].decode("utf-8", "replace")
        print("# the kernel's log ends with:\n" + "\n".join("#   " + l for l in tail.splitlines()))
    shutil.rmtree(tmp, ignore_errors=True)

sys.exit(1 if failures else 0)
