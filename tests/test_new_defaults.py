"""Honest defaults: ``mlctl new`` takes the accelerator from the machine and says every default it took.

This machine's GPUs are looked for the cheap way (the NVIDIA driver's /proc files, else ``nvidia-smi -L``).
The command-line tests use what this machine really has; the core is also handed a machine with GPUs
(``gpus=``), and the detection reads a folder laid out as the NVIDIA driver lays out
/proc/driver/nvidia/gpus (one folder per GPU, named by PCI bus id, with an ``information`` file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mlctl.adapters.gpu import GpuSighting, parse_nvidia_smi_list, seen_gpus
from mlctl.reporting import RecordingReporter
from mlctl.scaffold.create import accelerator_default, new_service

H200 = GpuSighting(("NVIDIA H200",), "nvidia-smi")
NONE = GpuSighting((), "no /proc/driver/nvidia/gpus, no nvidia-smi")


def test_a_machine_with_a_gpu_defaults_to_cuda_and_says_why(isolated: Path) -> None:
    result = new_service("svc", git=False, dry_run=True, gpus=H200)
    assert result.answers["accelerator"] == "cuda"
    taken = {d.name: (d.value, d.why) for d in result.defaults}
    assert taken["accelerator"] == ("cuda", "1 NVIDIA GPU seen (NVIDIA H200, by nvidia-smi)")
    assert taken["gpu_count"] == (1, "the template's default")  # asked only for cuda, so listed
    assert result.notes == ()


def test_a_machine_without_a_gpu_defaults_to_cpu_and_says_why(isolated: Path) -> None:
    result = new_service("svc", git=False, dry_run=True, gpus=NONE)
    assert result.answers["accelerator"] == "cpu"
    taken = {d.name: (d.value, d.why) for d in result.defaults}
    assert taken["accelerator"] == ("cpu", "no NVIDIA GPU seen (no /proc/driver/nvidia/gpus, no nvidia-smi)")
    assert "gpu_count" not in taken  # not a question for cpu
    assert list(taken) == ["description", "accelerator", "python_version", "torch_version", "port",
                           "max_batch_size", "registry", "namespace"]  # fmt: skip


def test_given_answers_are_not_defaults(isolated: Path) -> None:
    result = new_service("svc", git=False, dry_run=True, answers={"accelerator": "cpu", "port": "9000"}, gpus=H200)
    assert {d.name for d in result.defaults} >= {"description", "registry"}
    assert not {"accelerator", "port"} & {d.name for d in result.defaults}


def test_cuda_on_a_machine_without_a_gpu_is_allowed_with_a_note(isolated: Path) -> None:
    reporter = RecordingReporter()
    result = new_service("svc", git=False, answers={"accelerator": "cuda"}, gpus=NONE, reporter=reporter)
    assert result.answers["accelerator"] == "cuda"
    assert (isolated / "svc" / "mlctl.yaml").is_file()  # made, as asked
    [note] = result.notes
    assert note.startswith(
        "accelerator=cuda, but no NVIDIA GPU seen (no /proc/driver/nvidia/gpus, no nvidia-smi): the service is made "
        "for NVIDIA GPUs as asked; here `mlctl run` and `mlctl deploy --target local` run it on the CPU"
    )
    assert ("warn", note) in reporter.events
    with_gpu = new_service("svc2", git=False, dry_run=True, answers={"accelerator": "cuda"}, gpus=H200)
    assert with_gpu.notes == ()


def test_the_cli_says_every_default_it_took_without_a_terminal(cli, isolated: Path) -> None:
    expected, why = accelerator_default(seen_gpus())  # what this machine really has
    result = cli("--json", "new", "svc", "--no-git")
    data = json.loads(result.stdout)
    assert data["answers"]["accelerator"] == expected
    assert {"name": "accelerator", "value": expected, "why": why} in data["defaults"]
    plain = cli("new", "svc2", "--no-git", "--yes")
    assert "Defaults taken (--yes; choose with --set NAME=VALUE):\n" in plain.stdout
    assert f"  accelerator     {expected.ljust(23)}  {why}\n" in plain.stdout


def test_piped_output_takes_and_lists_the_defaults(isolated: Path) -> None:
    """A terminal on stdin but not on stdout (``mlctl new svc | tee log``): no prompt, the defaults listed."""
    import pexpect

    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS", "GITLAB_CI")}
    command = f"{sys.executable} -m mlctl new svc --no-git | cat"
    child = pexpect.spawn("sh", ["-c", command], env=env, cwd=str(isolated), encoding="utf-8", timeout=60)
    output = child.read()
    child.close()
    assert child.exitstatus == 0, output
    assert "Defaults taken (output is not a terminal; choose with --set NAME=VALUE):" in output
    assert "  accelerator     " in output
    assert "(cuda)" not in output  # no prompt was shown


def test_doctor_says_what_new_would_take(cli, isolated: Path) -> None:
    expected, why = accelerator_default(seen_gpus())
    report = json.loads(cli("--json", "doctor", "--timeout", "1").stdout)
    [check] = [c for c in report["checks"] if c["name"] == "new defaults"]
    assert (check["status"], check["detail"]) == ("info", f"mlctl new takes accelerator={expected} here: {why}")


def test_gpus_are_read_from_the_drivers_proc_files(tmp_path: Path) -> None:
    proc = tmp_path / "gpus"
    for bus, model in (("0000:17:00.0", "NVIDIA H200"), ("0000:2a:00.0", "NVIDIA H200")):
        (proc / bus).mkdir(parents=True)
        (proc / bus / "information").write_text(
            f"Model: \t\t {model}\nIRQ:   \t\t 146\nGPU UUID: \t GPU-0f3b\nBus Location: \t {bus}\n"
        )
    sighting = seen_gpus(proc_gpus=proc, nvidia_smi=None)
    assert sighting == GpuSighting(("NVIDIA H200", "NVIDIA H200"), str(proc))
    assert sighting.describe() == f"2 NVIDIA GPUs seen (NVIDIA H200, by {proc})"
    assert accelerator_default(sighting) == ("cuda", sighting.describe())
    nothing = seen_gpus(proc_gpus=tmp_path / "absent", nvidia_smi=None)
    assert nothing.count == 0
    assert accelerator_default(nothing)[0] == "cpu"


def test_nvidia_smi_lists_are_read_as_documented() -> None:
    listed = (
        "GPU 0: NVIDIA H200 (UUID: GPU-8c2f3a1e-0000-1111-2222-333344445555)\n"
        "GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-1d4e)\n"
        "  MIG 3g.40gb     Device  0: (UUID: MIG-5b7c)\n"
    )
    assert parse_nvidia_smi_list(listed) == ("NVIDIA H200", "NVIDIA A100-SXM4-80GB")
    assert parse_nvidia_smi_list("No devices were found\n") == ()


def test_looking_for_gpus_never_loads_torch() -> None:
    code = "import sys\nfrom mlctl.adapters.gpu import seen_gpus\nseen_gpus()\nprint('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "False\n"
