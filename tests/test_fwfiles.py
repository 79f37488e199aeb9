"""`flywheel init`: the FireWorks/jobflow files a cluster needs, from one URI."""

from __future__ import annotations

import yaml

from flywheel.launchers.cli import main as cli


def test_init_writes_cluster_files(tmp_path):
    uri = "mongodb://user:pw@mongo.example.org:27017/camp?authSource=admin"
    assert cli(["init", str(tmp_path), "--uri", uri, "--cpu-partition", "normal",
                "--gpu-partition", "a100", "--gpus", "2", "--walltime", "04:00:00",
                "--venv", "/opt/venvs/fw"]) == 0
    load = lambda name: yaml.safe_load((tmp_path / name).read_text())
    lp = load("my_launchpad.yaml")
    assert lp["host"] == uri and lp["name"] == "camp" and lp["uri_mode"] is True
    assert load("my_fworker_cpu.yaml")["category"] == "cpu"
    assert load("my_fworker_gpu.yaml")["category"] == "gpu"
    gpu, cpu = load("my_qadapter_gpu.yaml"), load("my_qadapter_cpu.yaml")
    assert (gpu["queue"], gpu["gres"], gpu["walltime"]) == ("a100", "gpu:2", "04:00:00")
    assert cpu["queue"] == "normal" and "gres" not in cpu
    for q in (gpu, cpu):
        assert q["_fw_q_type"] == "SLURM"
        assert "source /opt/venvs/fw/bin/activate" in q["pre_rocket"]
        assert f"JOBFLOW_CONFIG_FILE={tmp_path}/jobflow.yaml" in q["pre_rocket"]
        assert q["rocket_launch"].endswith("singleshot")
        assert (tmp_path / "qlogs").is_dir()
    store = load("jobflow.yaml")["JOB_STORE"]
    assert store["docs_store"]["uri"] == uri and store["docs_store"]["database"] == "camp"
    assert store["additional_stores"]["data"]["type"] == "GridFSStore"
    assert load("FW_config.yaml")["PING_TIME_SECS"] == 60
    camp = load("campaign.yaml")
    assert camp["database"]["uri"] == uri
    # the example campaign is valid
    from flywheel.config import load_campaign

    assert load_campaign(tmp_path / "campaign.yaml").filter.ensemble_size == 2
