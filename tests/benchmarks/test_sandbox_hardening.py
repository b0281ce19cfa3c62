"""Issue 11: model-written code can neither forge a HumanEval pass nor touch the host.

Each test here passed the attack before the fix (a fake pass@1 = 1.0, a file on the host, a silent
fallback, root in audit mode) and must now see it contained or refused.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from benchmarks import get_benchmark
from benchmarks.sandbox import (
    humaneval_candidate,
    namespaces_available,
    resolve_isolation,
    run_humaneval,
    run_humaneval_samples,
    run_program,
)
from harness.core.errors import ConfigError
from harness.core.records import GenerationRecord, Item

FAST = {"timeout_s": 10.0, "cpu_s": 5, "memory_mb": 512, "fsize_mb": 4, "nproc": 32}
MODES = ["namespace", "audit"] if namespaces_available() else ["audit"]
ROOT = os.geteuid() == 0


def _item() -> Item:
    return get_benchmark("humaneval").load(limit=1)[0]


def _wrong(item: Item, tail: str, body: str = "    return None") -> str:
    """A full, wrong definition of the entry point followed by the attack, as a model would write it."""
    entry = item.metadata["entry_point"]
    return f"```python\nimport os, sys\ndef {entry}(*args):\n{body}\n{tail}\n```"


FORGE = "print(NONCE, flush=True)\nos._exit(0)"
ATTACKS = {
    "argv_nonce": "NONCE = sys.argv[-1]\n" + FORGE,
    "proc_cmdline_nonce": ("NONCE = open('/proc/self/cmdline', 'rb').read().split(b'\\0')[-2].decode()\n" + FORGE),
    "atexit_nonce": (
        "import atexit\nNONCE = sys.argv[-1]\natexit.register(lambda: (print(NONCE, flush=True), os._exit(0)))"
    ),
    "excepthook_nonce": ("NONCE = sys.argv[-1]\nsys.excepthook = lambda *a: (print(NONCE, flush=True), os._exit(0))"),
    # write a pass verdict into every fd of this process and of its parent (the checker). Only these two
    # processes: run unsandboxed as root, a glob over /proc/*/fd/* writes into every process on the machine.
    "write_every_fd": (
        "import glob\n"
        "for path in glob.glob('/proc/self/fd/*') + glob.glob(f'/proc/{os.getppid()}/fd/*'):\n"
        "    try:\n"
        "        fd = os.open(path, os.O_WRONLY)\n"
        "        os.write(fd, b'pass\\n')\n"
        "    except OSError:\n"
        "        pass\n"
        "for fd in range(3, 256):\n"
        "    try:\n"
        "        os.write(fd, b'pass\\n')\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)"
    ),
}


def _gen(item: Item, completion: str, index: int = 0) -> GenerationRecord:
    return GenerationRecord(
        item_id=item.id,
        benchmark="humaneval",
        sample_index=index,
        prompt_text="p",
        prompt_hash="h",
        completion=completion,
        model_hash="m",
        gen_config_hash="g",
        backend="dummy",
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_fake_pass_through_output_or_exit_is_a_failure(mode: str, attack: str) -> None:
    item = _item()
    result = run_humaneval(item, _wrong(item, ATTACKS[attack]), isolation=mode, **FAST)  # type: ignore[arg-type]
    assert not result.passed, result.output_tail
    # the same sample, but correct, passes in the same mode: the attack, not the harness, made it fail
    good = run_humaneval(item, item.metadata["canonical_solution"], isolation=mode, **FAST)  # type: ignore[arg-type]
    assert good.passed, good.output_tail


@pytest.mark.parametrize("mode", MODES)
def test_object_with_overloaded_eq_is_a_failure(mode: str) -> None:
    item = _item()
    body = (
        "    class Anything:\n        def __eq__(self, other):\n            return True\n"
        "        __ne__ = lambda self, other: False\n        __bool__ = lambda self: True\n"
        "    return Anything()"
    )
    subclass = "    class B(int):\n        __eq__ = lambda s, o: True\n    return B(0)"
    gens = [_gen(item, _wrong(item, "", body), 0), _gen(item, _wrong(item, "", subclass), 1)]
    assert run_humaneval_samples(
        gens,
        {item.id: item},
        allow_code_execution=True,
        isolation=mode,  # type: ignore[arg-type]
        **FAST,
    ) == {item.id: [False, False]}  # type: ignore[arg-type]


@pytest.mark.skipif("namespace" not in MODES, reason="namespaces unavailable here")
def test_namespace_sandbox_cannot_write_anywhere_on_the_host(tmp_path: Path) -> None:
    """Walk the whole file system inside the sandbox and try to create a file in every directory."""
    name = f".realign-scan-{secrets.token_hex(8)}"
    scan = (
        "import os\n"
        f"name = {name!r}\n"
        "written = []\n"
        "for root, dirs, files in os.walk('/', topdown=True):\n"
        "    if root == '/':\n"
        "        dirs[:] = [d for d in dirs if d not in ('proc', 'sys')]\n"
        "    try:\n"
        "        with open(os.path.join(root, name), 'x') as handle:\n"
        "            handle.write('x')\n"
        "        written.append(root)\n"
        "    except OSError:\n"
        "        pass\n"
        "print('SCAN', len(written))\n"
        "for root in written:\n"
        "    print('W', root)\n"
    )
    result = run_program(scan, isolation="namespace", timeout_s=240, cpu_s=200, memory_mb=1024, fsize_mb=4, nproc=32)
    assert result.passed, result.output_tail
    written = [line[2:] for line in result.output_tail.splitlines() if line.startswith("W ")]
    # the scan works: the private tmpfs mounts are writable inside
    assert "/tmp" in written and "/tmp/work" in written, result.output_tail
    leaked = [root for root in written if os.path.exists(os.path.join(root, name))]
    for root in leaked:
        os.unlink(os.path.join(root, name))
    assert not leaked, f"sandbox wrote to the host in {leaked}"
    assert set(written) <= {"/tmp", "/tmp/work", "/var/tmp", "/dev/shm"}, written


def test_missing_unshare_is_refused_not_downgraded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    namespaces_available.cache_clear()
    try:
        assert not namespaces_available()
        item = _item()
        with pytest.raises(ConfigError, match="--sandbox audit"):
            run_humaneval_samples(
                [_gen(item, item.metadata["canonical_solution"])], {item.id: item}, allow_code_execution=True, **FAST
            )  # type: ignore[arg-type]
        for mode in ("auto", "namespace"):
            with pytest.raises(ConfigError, match="refusing"):
                run_program("pass\n", isolation=mode, **FAST)  # type: ignore[arg-type]
        with pytest.warns(RuntimeWarning, match="WITHOUT NAMESPACES"):
            assert resolve_isolation("audit") == "audit"
    finally:
        namespaces_available.cache_clear()


@pytest.mark.skipif(not ROOT, reason="privilege drop is tested where the harness runs as root")
def test_audit_mode_drops_privileges(tmp_path: Path) -> None:
    host_file = tmp_path / "host_written.txt"  # tmp_path is root-owned, 0755
    attacks = {
        "read_shadow": "print(open('/etc/shadow').read())\n",
        "kill_harness": f"import ctypes\nassert ctypes.CDLL(None).kill({os.getpid()}, 0) == 0\n",
        "is_root": "import os\nassert os.geteuid() == 0 or os.getegid() == 0 or 0 in os.getgroups()\n",
        "ctypes_host_write": (
            f"import ctypes\nfd = ctypes.CDLL(None).open({str(host_file).encode()!r}, 0o101, 0o644)\nassert fd >= 0\n"
        ),
        "read_harness_env": (f"data = open('/proc/{os.getpid()}/environ', 'rb').read()\nassert data\n"),
    }
    for name, source in attacks.items():
        result = run_program(source, isolation="audit", **FAST)  # type: ignore[arg-type]
        assert not result.passed, (name, result.output_tail)
    assert not host_file.exists()
    assert "root:" not in run_program(attacks["read_shadow"], isolation="audit", **FAST).output_tail  # type: ignore[arg-type]
    # the same process can still do honest work
    assert run_program("assert sum(range(4)) == 6\n", isolation="audit", **FAST).passed  # type: ignore[arg-type]


def test_candidate_part_never_contains_the_tests() -> None:
    item = _item()
    assert item.reference and item.reference.strip() not in humaneval_candidate(item, "    return None\n")


def test_realign_score_refuses_without_unshare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from harness.cli.cmd_benchmarks import score_cmd
    from harness.core.records import append_jsonl

    item = _item()
    gens = tmp_path / "gens.jsonl"
    append_jsonl(gens, [_gen(item, item.metadata["canonical_solution"])])
    bare = tmp_path / "bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    namespaces_available.cache_clear()
    try:
        result = CliRunner().invoke(
            score_cmd, ["--benchmark", "humaneval", "--generations", str(gens), "--allow-code-execution"]
        )
        assert result.exit_code != 0 and "pass@1" not in result.output
        assert "--sandbox audit" in str(result.exception) + result.output
    finally:
        namespaces_available.cache_clear()


@pytest.mark.slow
def test_every_canonical_humaneval_solution_passes_through_the_checker() -> None:
    """The proxy design must not cost honest solutions: all 164 canonical solutions pass (about 70 s)."""
    items = {i.id: i for i in get_benchmark("humaneval").load()}
    gens = [_gen(item, item.metadata["canonical_solution"]) for item in items.values()]
    results = run_humaneval_samples(gens, items, allow_code_execution=True, timeout_s=20, cpu_s=15)
    assert len(results) == 164
    assert [k for k, v in results.items() if v != [True]] == []
