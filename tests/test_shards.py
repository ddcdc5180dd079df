"""Sharded checkpoints encoded shard by shard: each shard a unit (the command line's --shard, local
processes with --jobs, Dask's workers) and the same files as one serial run, byte for byte; the
index only once every shard is there, and never over a missing or foreign one."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

import icqcodec
from icqcodec import checkpoints
from icqcodec.cli import main
from icqcodec.encode import EncodeOptions

OPTIONS = EncodeOptions(bits=3)


@pytest.fixture
def sharded(tmp_path, rng):
    """A checkpoint of 4 shards."""
    source = tmp_path / "source"
    source.mkdir()
    weight_map = {}
    for index in range(4):
        shard = f"model-{index + 1:05d}-of-00004.safetensors"
        tensors = {f"layers.{index}.weight": rng.standard_t(4, size=(48, 256)).astype(np.float32),
                   f"layers.{index}.bias": rng.standard_normal(48).astype(np.float32)}  # fmt: skip
        save_file(tensors, str(source / shard))
        weight_map.update(dict.fromkeys(tensors, shard))
    (source / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map})
    )
    return source


def files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def serial(sharded, tmp_path):
    checkpoints.encode_checkpoint(sharded, tmp_path / "serial", OPTIONS)
    return files(tmp_path / "serial")


def test_shard_by_shard_and_local_processes_give_the_serial_files(sharded, serial, tmp_path):
    for shard in checkpoints.shard_names(sharded):
        checkpoints.encode_shard(sharded, tmp_path / "units", shard, OPTIONS)
    checkpoints.finalize_shards(sharded, tmp_path / "units")
    assert files(tmp_path / "units") == serial
    checkpoints.encode_checkpoint(sharded, tmp_path / "jobs", OPTIONS, jobs=2)
    assert files(tmp_path / "jobs") == serial
    assert len(serial) == 5 and json.loads(serial["model.icq.index.json"])["weight_map"]["layers.2.bias"] == \
        "model-00003-of-00004.icq"  # fmt: skip


def test_dask_workers_give_the_serial_files(sharded, serial, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            futures = client.map(checkpoints.encode_shard, [sharded] * 4, [tmp_path / "dask"] * 4,
                                 checkpoints.shard_names(sharded), options=OPTIONS)  # fmt: skip
            client.gather(futures)
    checkpoints.finalize_shards(sharded, tmp_path / "dask")
    assert files(tmp_path / "dask") == serial


def test_finalize_refuses_a_missing_or_foreign_shard(sharded, tmp_path):
    target = tmp_path / "out"
    names = checkpoints.shard_names(sharded)
    for shard in names[:3]:
        checkpoints.encode_shard(sharded, target, shard, OPTIONS)
    with pytest.raises(icqcodec.InputError, match="model-00004-of-00004.icq: missing; encode shard"):
        checkpoints.finalize_shards(sharded, target)
    assert not (target / "model.icq.index.json").exists()
    checkpoints.encode_shard(sharded, target, names[3], EncodeOptions(bits=2))
    with pytest.raises(
        icqcodec.InputError, match="model-00004-of-00004.icq: a foreign shard, encoded with other options"
    ):
        checkpoints.finalize_shards(sharded, target)
    checkpoints.encode_shard(sharded, target, names[3], OPTIONS, force=True)
    index = sharded / "model.safetensors.index.json"
    index.write_text(index.read_text().replace('"total_size": 1', '"total_size": 2'))  # another checkpoint now
    with pytest.raises(icqcodec.InputError, match="model-00001-of-00004.icq: a foreign shard, not encoded from"):
        checkpoints.finalize_shards(sharded, target)
    assert not (target / "model.icq.index.json").exists()
    with pytest.raises(icqcodec.InputError, match="no shard 'other.safetensors'"):
        checkpoints.encode_shard(sharded, target, "other.safetensors", OPTIONS)


def test_the_command_line_shard_by_shard(sharded, serial, tmp_path):
    runner = CliRunner()
    target = tmp_path / "cli"
    for shard in checkpoints.shard_names(sharded):
        done = runner.invoke(main, ["encode", str(sharded), str(target), "--bits", "3", "--shard", shard])
        assert done.exit_code == 0, done.output
    done = runner.invoke(main, ["encode", str(sharded), str(target), "--finalize"])
    assert done.exit_code == 0 and "model.icq.index.json" in done.output, done.output
    assert files(target) == serial
    refused = runner.invoke(main, ["encode", str(sharded), str(tmp_path / "x"), "--bpw", "3", "--jobs", "2"])
    assert refused.exit_code == 2 and "cannot be split by --shard or --jobs" in refused.output
