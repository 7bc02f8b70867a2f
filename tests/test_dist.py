"""hpcdiff.dist: one table from launcher environments to a rank description."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from hpcdiff import dist
from hpcdiff.dist import DEFAULT_PORT, DistEnv, detect, expand_nodelist, expand_tasks_per_node
from hpcdiff.errors import HpcdiffError


def test_no_launcher_is_world_size_one():
    env = detect({"HOME": "/root", "SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_PROCID": "0"})
    assert dataclasses.replace(env, master_port=DEFAULT_PORT) == DistEnv()
    assert env.is_main and not env.is_distributed


def test_single_processes_get_their_own_free_port():
    first = detect({})
    with socket.socket() as listening:  # the first training's rendezvous, as torch.distributed holds it
        listening.bind(("127.0.0.1", first.master_port))
        listening.listen()
        second = detect({"SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_JOB_ID": "7"})
        assert second.world_size == 1 and second.master_port != first.master_port
        with socket.socket() as other:
            other.bind(("127.0.0.1", second.master_port))


def test_launcher_set_port_is_kept():
    assert detect({"MASTER_PORT": "29511"}).master_port == 29511
    assert detect({"RANK": "0", "WORLD_SIZE": "1", "MASTER_PORT": "29512"}).master_port == 29512


def test_torchrun():
    env = detect({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2",
                  "GROUP_RANK": "1", "MASTER_ADDR": "node7", "MASTER_PORT": "1234"})
    assert env == DistEnv(rank=3, local_rank=1, world_size=4, local_world_size=2, node_rank=1,
                          master_addr="node7", master_port=1234, launcher="torchrun")


def test_torchrun_wins_over_slurm_inside_a_step():
    env = detect({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "SLURM_PROCID": "0",
                  "SLURM_NTASKS": "1", "SLURM_STEP_ID": "0"})
    assert (env.launcher, env.rank, env.world_size) == ("torchrun", 1, 2)


def test_slurm_step_two_nodes():
    env = detect({
        "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
        "SLURM_NTASKS": "8", "SLURM_NODEID": "1", "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
        "SLURM_JOB_NODELIST": "gpu[001-004,010]", "SLURM_STEP_NODELIST": "gpu[003-004]",
    })
    assert env == DistEnv(rank=5, local_rank=1, world_size=8, local_world_size=4, node_rank=1,
                          master_addr="gpu003", master_port=20000 + 4242, launcher="slurm")


def test_slurm_uneven_tasks_per_node_uses_this_nodes_count():
    env = detect({"SLURM_STEP_ID": "0", "SLURM_PROCID": "4", "SLURM_LOCALID": "0", "SLURM_NTASKS": "5",
                  "SLURM_NODEID": "1", "SLURM_STEP_TASKS_PER_NODE": "4,1", "SLURM_JOB_NODELIST": "a,b"})
    assert (env.local_world_size, env.master_addr, env.master_port) == (1, "a", DEFAULT_PORT)


def test_slurm_master_addr_override():
    env = detect({"SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0",
                  "SLURM_JOB_NODELIST": "n[1-2]", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"})
    assert (env.master_addr, env.master_port) == ("127.0.0.1", 29999)


@pytest.mark.parametrize(
    ("environ", "launcher"),
    [
        ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}, "mpich"),
        ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
          "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "OMPI_COMM_WORLD_NODE_RANK": "0"}, "openmpi"),
        ({"PMIX_RANK": "1", "PMIX_SIZE": "2", "PMIX_LOCAL_RANK": "1", "PMIX_LOCAL_SIZE": "2"}, "pmix"),
    ],
)
def test_mpi_flavours(environ, launcher):
    env = detect(environ)
    assert (env.launcher, env.rank, env.local_rank, env.world_size, env.local_world_size) == (
        launcher, 1, 1, 2, 2)


def test_inconsistent_environment_is_an_error():
    with pytest.raises(HpcdiffError, match="torchrun environment is inconsistent"):
        detect({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(HpcdiffError, match="WORLD_SIZE='two' is not an integer"):
        detect({"RANK": "0", "WORLD_SIZE": "two"})


@pytest.mark.parametrize(
    ("spec", "hosts"),
    [
        ("node1", ["node1"]),
        ("gpu[001-004,010]", ["gpu001", "gpu002", "gpu003", "gpu004", "gpu010"]),
        ("a[1-2],b3,c[09-11]", ["a1", "a2", "b3", "c09", "c10", "c11"]),
        ("r[1-2]n[01-02]", ["r1n01", "r1n02", "r2n01", "r2n02"]),
        ("x[7]-ib", ["x7-ib"]),
    ],
)
def test_expand_nodelist(spec, hosts):
    assert expand_nodelist(spec) == hosts


@pytest.mark.parametrize("spec", ["gpu[001-004", "gpu]1[", "gpu[a-b]", ""])
def test_bad_nodelist(spec):
    with pytest.raises(HpcdiffError):
        expand_nodelist(spec)


def test_expand_tasks_per_node():
    assert expand_tasks_per_node("4(x2),3") == [4, 4, 3]
    with pytest.raises(HpcdiffError):
        expand_tasks_per_node("4(2)")


def test_dist_imports_without_torch():
    code = "import sys, hpcdiff.dist; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_collectives_on_a_single_process():
    values = torch.tensor([1.0, 2.5], dtype=torch.float64)
    dist.barrier()
    assert dist.all_reduce_sum(values) is values


COLLECTIVES = textwrap.dedent("""
    import torch, torch.distributed
    from hpcdiff import dist
    env = dist.detect()
    torch.distributed.init_process_group("gloo", rank=env.rank, world_size=env.world_size,
                                         init_method=f"tcp://{env.master_addr}:{env.master_port}")
    mine = torch.tensor([env.rank + 1.0, 10.0], dtype=torch.float64)
    total = dist.all_reduce_sum(mine)
    dist.barrier()
    print(total.tolist(), mine.tolist())
    torch.distributed.destroy_process_group()
""")


def test_collectives_over_two_gloo_ranks():
    port = dist.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "RANK", "WORLD_"))}
    procs = [subprocess.Popen([sys.executable, "-c", COLLECTIVES], stdout=subprocess.PIPE, text=True,
                              env={**env, "RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                                   "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}) for r in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == ["[3.0, 20.0] [1.0, 10.0]", "[3.0, 20.0] [2.0, 10.0]"]  # summed; inputs left alone


@pytest.fixture
def torch_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


@pytest.mark.parametrize(("environ", "threads"), [
    ({"SLURM_CPUS_PER_TASK": "1"}, 1),
    ({"SLURM_CPUS_PER_TASK": "3", "OMP_NUM_THREADS": "1"}, 1),  # an explicit OMP_NUM_THREADS wins
    ({}, 1),
])
def test_set_threads_after_torch_is_imported(torch_threads, monkeypatch, environ, threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert torch.get_num_threads() == 2
    assert dist.set_threads() == threads
    assert torch.get_num_threads() == threads and os.environ["OMP_NUM_THREADS"] == str(threads)


@pytest.mark.parametrize("value", ["0", "many"])
def test_set_threads_refuses_a_bad_count(torch_threads, value):
    with pytest.raises(HpcdiffError, match=f"SLURM_CPUS_PER_TASK={value!r}"):
        dist.set_threads({"SLURM_CPUS_PER_TASK": value})
