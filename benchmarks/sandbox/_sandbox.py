"""Run model-written code in a separate, resource-limited, network-less process.

Isolation modes (`isolation=`; the CLI's ``--sandbox``):

* ``namespace`` (the default; ``auto`` means this one): the program runs under
  ``unshare --net --pid --mount --fork --kill-child --mount-proc`` -- no usable network, its own PID
  namespace (killing it kills every descendant) and a private mount namespace in which **every mount of
  the host is remounted read-only** (the list is read from /proc/self/mountinfo, not a fixed list) and the
  only writable places are fresh private tmpfs mounts on /tmp, /var/tmp and /dev/shm; the work dir (cwd,
  HOME, TMPDIR) lives in /tmp. If the interpreter lives under a directory others cannot enter (e.g.
  /root/.pyenv), that directory is hidden behind a tmpfs and only the interpreter's prefix is bound back.
  When ``unshare`` is missing or fails, scoring is **refused** (ConfigError); there is no silent fallback.
* ``audit`` (only when asked for explicitly; a loud warning is printed): a plain child process, with a
  Python audit hook refusing sockets, process creation and writes outside the work dir in the candidate
  process. Best effort: native code (ctypes) can bypass an audit hook; the privilege drop below is what
  actually protects the host (no /etc/shadow, no signals to the harness, no writes to root-owned files).

Both modes: `python -I`, a scrubbed environment, a new session, RLIMIT_CPU / AS / FSIZE / NPROC / CORE,
stdout/stderr to capped files, a wall-clock timeout and a process-group kill. Before any model-written code
runs the process drops to uid/gid 65534 (nobody) with no supplementary groups (when started as root).

Verdict channel. The verdict is never read from the program's output or exit status alone:

* The trusted runner (the *checker*) receives the write end of a pipe from the host (``pass_fds``); the
  host reads the verdict only from that pipe. The checker marks itself non-dumpable
  (``prctl(PR_SET_DUMPABLE, 0)``), so a same-uid process can neither ptrace it nor open its
  ``/proc/<pid>/fd`` or ``/proc/<pid>/mem``. There is no secret: nothing on argv, in the environment or in
  a file would help the candidate, because only the checker holds the pipe.
* Model-written code runs in a *forked child* of the checker that closes the verdict fd before it runs
  anything. Whatever the child prints, however it exits (``os._exit(0)``, ``atexit``, ``sys.excepthook``),
  it cannot write the verdict.
* HumanEval: the child executes prompt + completion and then serves calls of the entry point. The checker
  executes the dataset's trusted code (the prompt and the ``check`` function; the prompt's stub is replaced
  by the proxy) and runs ``check(candidate)`` where ``candidate`` is a proxy: arguments go to the child (pickled, trusted
  to untrusted), results come back as JSON of a tagged tree that the checker decodes into plain builtins.
  **What is compared:** every ``==``/``<``/``abs`` in ``check`` runs in the checker on values of exactly
  these types: ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, and ``list``,
  ``tuple``, ``set``, ``frozenset``, ``dict`` of them (no subclasses). A return value of any other type
  (e.g. an object overloading ``__eq__``) makes that call raise, so the sample fails. A child that dies,
  exits or sends malformed data fails the sample. Arguments are copies, so a check that relies on the
  candidate mutating its argument in place would fail (none of HumanEval's does).
* Plain programs (``run_program(source)``): passed = the child ran the program to the end without an
  exception (exit status 0 of the child, observed by the checker via ``waitpid``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.core.errors import ConfigError
from harness.core.records import GenerationRecord, Item

Isolation = Literal["auto", "namespace", "audit"]

_PRELOAD = [
    "typing",
    "math",
    "re",
    "collections",
    "itertools",
    "functools",
    "hashlib",
    "string",
    "heapq",
    "statistics",
    "fractions",
    "bisect",
    "random",
    "copy",
    "operator",
    "decimal",
    "datetime",
    "json",
    "numbers",
    "array",
    "cmath",
    "textwrap",
    "pickle",
    "struct",
    "traceback",
    "ctypes",
]

AUDIT_WARNING = (
    "WARNING: --sandbox audit runs MODEL-WRITTEN CODE WITHOUT NAMESPACES: it shares the host's network, "
    "process table and file system (as uid nobody, with an audit hook that native code can bypass). "
    "Use it only on a throwaway machine."
)

_RUNNER = r"""
import os, sys, json
mode, job_path, verdict_fd = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(job_path, encoding="utf-8") as handle:
    job = json.load(handle)
os.set_inheritable(verdict_fd, False)


def _verdict(ok, why=""):
    os.write(verdict_fd, (("pass" if ok else "fail") + "\n" + why[:500]).encode("utf-8", "replace"))
    os.close(verdict_fd)


if mode == "namespace":
    import subprocess
    fresh = ["/tmp", "/var/tmp", "/dev/shm"]
    for target in fresh:
        if os.path.isdir(target):
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=1777", "tmpfs", target], check=True)
    prefix = sys.base_prefix
    parts = prefix.split("/")
    blocked = next(("/".join(parts[:i]) for i in range(2, len(parts) + 1)
                    if not os.stat("/".join(parts[:i])).st_mode & 0o001), None)
    if blocked is not None and os.geteuid() == 0:
        os.mkdir("/tmp/.prefix")
        subprocess.run(["mount", "--bind", prefix, "/tmp/.prefix"], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", blocked], check=True)
        os.makedirs(prefix, mode=0o755, exist_ok=True)
        subprocess.run(["mount", "--bind", "/tmp/.prefix", prefix], check=True)
        subprocess.run(["umount", "/tmp/.prefix"], check=True)
        os.rmdir("/tmp/.prefix")
    # Read-only view of the host: remount every mount read-only except the fresh tmpfs mounts.
    import re
    def _unescape(field):
        return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        mounts = [(_unescape(line.split()[4]), line.split()[5].split(",")) for line in handle]
    for point, options in mounts:
        if point in fresh or "ro" in options:
            continue
        subprocess.run(["mount", "-o", "remount,bind,ro", point], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = "/tmp/work"
    os.mkdir(work)
else:
    work = os.getcwd()
if os.geteuid() == 0:
    os.chown(work, 65534, 65534)
os.chdir(work)
os.environ.update(HOME=work, TMPDIR=work)
for name in PRELOAD:
    try:
        __import__(name)
    except ImportError:
        pass
import pickle, struct, ctypes, traceback
if os.geteuid() == 0:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
if os.geteuid() == 0 or os.getuid() == 0:
    raise SystemExit("sandbox: could not drop root")
ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0: no ptrace, no /proc/<pid>/fd

request_r, request_w = os.pipe()
reply_r, reply_w = os.pipe()
child = os.fork()
if child == 0:  # ---- untrusted: model-written code from here on; no verdict fd ----
    try:
        os.close(verdict_fd)
        os.close(request_w)
        os.close(reply_r)
        if mode == "audit":
            def _guard(event, args, _work=os.path.realpath(work)):
                if event.startswith("socket.") or event in (
                    "os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                    "os.forkpty", "pty.spawn", "os.kill", "os.killpg"):
                    raise PermissionError(f"sandbox: {event} is not allowed")
                if event == "open" and len(args) > 1 and isinstance(args[1], str) and any(c in args[1] for c in "wax+"):
                    path = args[0]
                    if isinstance(path, (str, bytes)):
                        full = os.path.realpath(os.path.join(_work, os.fsdecode(path)))
                        if not (full == _work or full.startswith(_work + os.sep)):
                            raise PermissionError(f"sandbox: writing {path} is not allowed")
                if event in ("os.remove", "os.rmdir", "os.rename", "shutil.rmtree", "os.chmod", "os.mkdir"):
                    path = args[0]
                    if isinstance(path, (str, bytes)):
                        full = os.path.realpath(os.path.join(_work, os.fsdecode(path)))
                        if not (full == _work or full.startswith(_work + os.sep)):
                            raise PermissionError(f"sandbox: {event} {path} is not allowed")
            sys.addaudithook(_guard)
        namespace = {"__name__": "__main__"}
        exec(compile(job["source"], "program.py", "exec"), namespace)
        if job["kind"] == "humaneval":
            function = namespace[job["entry"]]
            plain = {type(None): "none", bool: "bool", int: "int", str: "str", bytes: "bytes"}
            def encode(value, depth=0):
                kind = type(value)
                if depth > 50:
                    raise TypeError("nested too deeply")
                if kind in plain:
                    return [plain[kind], value.hex() if kind is bytes else value]
                if kind is float:
                    return ["float", value.hex()]
                if kind is complex:
                    return ["complex", value.real.hex(), value.imag.hex()]
                if kind in (list, tuple, set, frozenset):
                    return [kind.__name__, [encode(v, depth + 1) for v in value]]
                if kind is dict:
                    return ["dict", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]]
                raise TypeError(f"return value of type {kind.__name__} is not a plain value")
            requests = os.fdopen(request_r, "rb")
            replies = os.fdopen(reply_w, "wb")
            while True:
                header = requests.read(4)
                if len(header) < 4:
                    break
                args = pickle.loads(requests.read(struct.unpack(">I", header)[0]))
                try:
                    reply = json.dumps(["ok", encode(function(*args))]).encode()
                except BaseException as exc:
                    reply = json.dumps(["raise", repr(exc)[:300]]).encode()
                replies.write(struct.pack(">I", len(reply)) + reply)
                replies.flush()
        sys.stdout.flush()
        os._exit(0)
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
# ---- trusted checker ----
os.close(request_r)
os.close(reply_w)
if job["kind"] == "program":
    _, status = os.waitpid(child, 0)
    _verdict(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status}")
    # pass the child's end on as the runner's exit code (128 + signal, as a shell does), for the report only
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))

requests = os.fdopen(request_w, "wb")
replies = os.fdopen(reply_r, "rb")


def _decode(node, depth=0):
    if type(node) is not list or not node or type(node[0]) is not str or depth > 50:
        raise TypeError("malformed reply")
    tag = node[0]
    if tag == "none" and len(node) == 2 and node[1] is None:
        return None
    if tag in ("bool", "int", "str") and len(node) == 2 and type(node[1]) is {"bool": bool, "int": int, "str": str}[tag]:
        return node[1]
    if tag == "bytes" and len(node) == 2 and type(node[1]) is str:
        return bytes.fromhex(node[1])
    if tag == "float" and len(node) == 2 and type(node[1]) is str:
        return float.fromhex(node[1])
    if tag == "complex" and len(node) == 3 and type(node[1]) is str and type(node[2]) is str:
        return complex(float.fromhex(node[1]), float.fromhex(node[2]))
    if tag in ("list", "tuple", "set", "frozenset") and len(node) == 2 and type(node[1]) is list:
        return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](_decode(v, depth + 1) for v in node[1])
    if tag == "dict" and len(node) == 2 and type(node[1]) is list:
        out = {}
        for pair in node[1]:
            if type(pair) is not list or len(pair) != 2:
                raise TypeError("malformed reply")
            out[_decode(pair[0], depth + 1)] = _decode(pair[1], depth + 1)
        return out
    raise TypeError("malformed reply")


class CandidateFailed(Exception):
    pass


def candidate(*args):
    payload = pickle.dumps(args)
    requests.write(struct.pack(">I", len(payload)) + payload)
    requests.flush()
    header = replies.read(4)
    if len(header) < 4:
        raise CandidateFailed("candidate process ended")
    size = struct.unpack(">I", header)[0]
    if size > 64 << 20:
        raise CandidateFailed("reply too large")
    body = replies.read(size)
    if len(body) < size:
        raise CandidateFailed("candidate process ended")
    reply = json.loads(body)
    if type(reply) is not list or len(reply) != 2 or reply[0] != "ok":
        raise CandidateFailed(f"candidate raised: {reply[1] if type(reply) is list and len(reply) == 2 else '?'}")
    return _decode(reply[1])


try:
    trusted = {"__name__": "__check__"}
    exec(compile(job["trusted"], "check.py", "exec"), trusted)
    trusted[job["entry"]] = candidate  # some checks name the entry point itself (HumanEval/33)
    trusted["check"](candidate)
    ok, why = True, ""
except BaseException as exc:
    ok, why = False, repr(exc)
try:
    os.kill(child, 9)
except OSError:
    pass
os.waitpid(child, 0)
_verdict(ok, why)
os._exit(0)
"""


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    status: Literal["passed", "failed", "timeout", "error"]
    returncode: int | None
    seconds: float
    output_tail: str


@functools.lru_cache(maxsize=1)
def namespaces_available() -> bool:
    """True when `unshare` can give us net+pid+mount namespaces here."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    flags = [] if os.geteuid() == 0 else ["--map-root-user"]
    try:
        done = subprocess.run(
            ["unshare", *flags, "--net", "--pid", "--mount", "--fork", "--kill-child", "--mount-proc", "true"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def resolve_isolation(isolation: Isolation) -> Literal["namespace", "audit"]:
    """The mode to use; refuses (ConfigError) rather than falling back when namespaces are missing."""
    if isolation == "audit":
        warnings.warn(AUDIT_WARNING, RuntimeWarning, stacklevel=2)
        print(AUDIT_WARNING, file=sys.stderr)
        return "audit"
    if isolation not in ("auto", "namespace"):
        raise ConfigError(f"unknown sandbox isolation {isolation!r}: use 'namespace' or 'audit'")
    if not namespaces_available():
        raise ConfigError(
            "refusing to run model-written code: the namespace sandbox is not available here (`unshare` "
            "and `mount` must be on PATH and able to create net/pid/mount namespaces). Pass "
            "--sandbox audit to run it in the much weaker audit sandbox instead (not recommended)."
        )
    return "namespace"


def _limits(cpu_s: int, memory_mb: int, fsize_mb: int, nproc: int) -> None:
    os.setsid()  # own session and process group, so the whole group can be killed
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_mb << 20, fsize_mb << 20))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _run_job(
    job: dict[str, str],
    *,
    timeout_s: float,
    cpu_s: int,
    memory_mb: int,
    fsize_mb: int,
    nproc: int,
    isolation: Isolation,
) -> SandboxResult:
    mode = resolve_isolation(isolation) if isolation != "audit" else "audit"
    host_dir = Path(tempfile.mkdtemp(prefix="realign-sandbox-"))
    started = time.monotonic()
    verdict_r, verdict_w = os.pipe()
    try:
        work = host_dir / "work"
        work.mkdir()
        job_path = host_dir / "job.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        runner = host_dir / "runner.py"
        runner.write_text(f"PRELOAD = {_PRELOAD!r}\n" + _RUNNER, encoding="utf-8")
        for path in (host_dir, work):
            path.chmod(0o755)
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(work),
            "TMPDIR": str(work),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        python = getattr(sys, "_base_executable", sys.executable)
        command = [python, "-I", str(runner), mode, str(job_path), str(verdict_w)]
        if mode == "namespace":
            flags = [] if os.geteuid() == 0 else ["--map-root-user"]
            command = [
                "unshare",
                *flags,
                "--net",
                "--pid",
                "--mount",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--",
                *command,
            ]
        stdout_path, stderr_path = host_dir / "stdout", host_dir / "stderr"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            process = subprocess.Popen(
                command,
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                pass_fds=(verdict_w,),
                preexec_fn=functools.partial(_limits, cpu_s, memory_mb, fsize_mb, nproc),
            )
            os.close(verdict_w)
            verdict_w = -1
            try:
                returncode: int | None = process.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                returncode, timed_out = None, True
            finally:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        os.set_blocking(verdict_r, False)
        verdict = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(verdict_r, 4096):
                verdict += chunk
                if len(verdict) > 4096:
                    break
        passed = not timed_out and verdict.split(b"\n", 1)[0] == b"pass"
        status: Literal["passed", "failed", "timeout", "error"]
        status = "passed" if passed else ("timeout" if timed_out else "failed")
        stdout = stdout_path.read_bytes()[-4000:].decode("utf-8", "replace")
        stderr = stderr_path.read_bytes()[-4000:].decode("utf-8", "replace")
        tail = (stdout + stderr + verdict.decode("utf-8", "replace"))[-2000:]
        return SandboxResult(passed, status, returncode, time.monotonic() - started, tail)
    except OSError as exc:  # e.g. the tmp dir could not be made: still a failed sample
        return SandboxResult(False, "error", None, time.monotonic() - started, repr(exc))
    finally:
        os.close(verdict_r)
        if verdict_w >= 0:
            os.close(verdict_w)
        shutil.rmtree(host_dir, ignore_errors=True)


def run_program(
    source: str,
    *,
    timeout_s: float = 10.0,
    cpu_s: int = 10,
    memory_mb: int = 1024,
    fsize_mb: int = 16,
    nproc: int = 64,
    isolation: Isolation = "auto",
) -> SandboxResult:
    """Run a Python program in the sandbox; passed = it ran to the end without an exception."""
    return _run_job(
        {"kind": "program", "source": source},
        timeout_s=timeout_s,
        cpu_s=cpu_s,
        memory_mb=memory_mb,
        fsize_mb=fsize_mb,
        nproc=nproc,
        isolation=isolation,
    )


def run_humaneval(
    item: Item,
    completion: str,
    *,
    timeout_s: float = 10.0,
    cpu_s: int = 10,
    memory_mb: int = 1024,
    fsize_mb: int = 16,
    nproc: int = 64,
    isolation: Isolation = "auto",
) -> SandboxResult:
    """Run one HumanEval sample: the candidate in one process, the dataset's `check` in another."""
    entry = str(item.metadata["entry_point"])
    job = {
        "kind": "humaneval",
        "source": humaneval_candidate(item, completion),
        "entry": entry,
        "trusted": f"{item.metadata.get('code_prompt', '')}\n\n{item.reference}\n",
    }
    return _run_job(
        job, timeout_s=timeout_s, cpu_s=cpu_s, memory_mb=memory_mb, fsize_mb=fsize_mb, nproc=nproc, isolation=isolation
    )


_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.S)


def humaneval_candidate(item: Item, completion: str) -> str:
    """Prompt + completion (or the model's full function from a code block): the untrusted part."""
    code_prompt = str(item.metadata.get("code_prompt", ""))
    entry = str(item.metadata["entry_point"])
    blocks = _FENCE.findall(completion)
    body = blocks[0] if blocks else completion
    if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", body, re.M):
        # A complete function: keep the prompt's imports/helpers, then the model's definition.
        return code_prompt + "\n    pass\n\n" + body
    return code_prompt + body


def humaneval_program(item: Item, completion: str) -> str:
    """The whole sample as one program (candidate + tests + check()), for reading; scoring never runs it."""
    entry = str(item.metadata["entry_point"])
    return f"{humaneval_candidate(item, completion)}\n\n{item.reference}\n\ncheck({entry})\n"


def run_humaneval_samples(
    generations: Sequence[GenerationRecord],
    items: Mapping[str, Item],
    *,
    allow_code_execution: bool = False,
    workers: int = 2,
    isolation: Isolation = "auto",
    **limits: object,
) -> dict[str, list[bool]]:
    """Execute every HumanEval generation; returns {item_id: [passed per sample]}."""
    if not allow_code_execution:
        raise ConfigError(
            "scoring HumanEval executes model-written code; pass allow_code_execution=True "
            "(--allow-code-execution on the CLI) to run it in the sandbox"
        )
    isolation = resolve_isolation(isolation)  # refuse before any work; warn once for audit
    missing = sorted({g.item_id for g in generations} - set(items))
    if missing:
        raise ConfigError(f"generations for unknown items: {', '.join(missing[:5])}")

    def run_one(generation: GenerationRecord) -> bool:
        return run_humaneval(items[generation.item_id], generation.completion, isolation=isolation, **limits).passed  # type: ignore[arg-type]

    results: dict[str, list[bool]] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for generation, passed in zip(generations, pool.map(run_one, generations), strict=True):
            results.setdefault(generation.item_id, []).append(passed)
    return results
