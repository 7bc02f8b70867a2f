"""hpcdiff.dist: one table from launcher environments to a rank description."""

from __future__ import annotations

import pytest

from hpcdiff.dist import DEFAULT_PORT, DistEnv, detect, expand_nodelist, expand_tasks_per_node
from hpcdiff.errors import HpcdiffError


def test_no_launcher_is_world_size_one():
    env = detect({"HOME": "/root", "SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_PROCID": "0"})
    assert env == DistEnv()
    assert env.is_main and not env.is_distributed


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
