"""Configuration: TOML + --set overrides, loud errors that name the key."""

import pytest
from helpers import DEMO, REPO

from lcr.config import ConfigError, load_config, parse_override, valid_keys


def test_shipped_jobs_load():
    for path in sorted((REPO / "jobs").glob("*.toml")):
        cfg = load_config(path)
        assert cfg.run.name


def test_override_values_are_toml():
    assert parse_override("sampling.seeds=[0,1]") == {"sampling": {"seeds": [0, 1]}}
    assert parse_override("data.source=local") == {"data": {"source": "local"}}
    cfg = load_config(DEMO, ["sampling.seeds=[3, 4]", "shards.count=5", "sampling.top_p=1"])
    assert cfg.sampling.seeds == [3, 4] and cfg.shards.count == 5
    assert cfg.sampling.top_p == 1.0 and isinstance(cfg.sampling.top_p, float)


@pytest.mark.parametrize("override, message", [
    ("sampling.temprature=0.5", "unknown key sampling.temprature; valid keys in [sampling]"),
    ("sampler.seeds=[0]", "unknown section [sampler]; valid sections: run, data"),
    ("sampling.seeds=0", "sampling.seeds: expected list, got int 0"),
    ("sampling.seeds=['a']", "sampling.seeds[0]: expected int"),
    ("shards.count=0", "shards.count = 0; must be at least 1"),
    ("shards.count=-2", "shards.count = -2; must be at least 1"),
    ("shards.count='many'", "shards.count: expected int, got str"),
    ("engine.enforce_eager=1", "engine.enforce_eager: expected bool"),
    ("run.name='../etc'", "run.name '../etc' is not a safe file name"),
    ("run.name='x; rm -rf /'", "is not a safe file name"),
    ("judge.prompt='v2'", "judge.prompt = 'v2'; expected one of v1.0, v1.1"),
    ("sampling.seeds=[]", "sampling.seeds is empty"),
    ("noequals", "expected section.key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, [override])
    assert message in str(e.value)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, ["model.pth=x"])
    for key in ("path", "tokenizer", "system_prompt"):
        assert key in str(e.value)


def test_replicas_times_tp_must_match_gpus():
    with pytest.raises(ConfigError, match=r"engine.replicas \(2\) x engine.tensor_parallel_size"
                       r" \(2\) = 4 must equal slurm.gpus_per_node \(8\)"):
        load_config(DEMO, ["engine.replicas=2", "engine.tensor_parallel_size=2",
                           "slurm.gpus_per_node=8"])


def test_bad_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nname='x'")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[run]\nnmae = 'x'\n")
    with pytest.raises(ConfigError, match="unknown.toml: unknown key run.nmae"):
        load_config(unknown)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")


def test_keys_users_rely_on_exist():
    keys = set(valid_keys())
    for key in ("run.name", "run.root", "data.source", "data.path", "data.revision",
                "model.path", "sampling.seeds", "sampling.temperature", "sampling.top_p",
                "sampling.top_k", "sampling.max_new_tokens", "shards.count"):
        assert key in keys


def test_unknown_revision_names_the_known_ones(capsys):
    from lcr.cli import main

    job = REPO / "jobs" / "llama31-8b-aalcr.toml"
    v10 = "bdae010bbce259820c0e34c1d7cce210d966fb75"
    v11 = "9a77ef56b717057ade24ceab4d273712a0b4f19e"
    assert main(["plan", str(job), "--set", "data.revision=main"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lcr plan: error: data.revision = 'main' is not a known AA-LCR revision")
    assert f"v1.0 = {v10}" in err and f"v1.1 = {v11}" in err
    assert 'data.protocol = "v1.0" or "v1.1"' in err
    # a private mirror declares its protocol, which the judge prompt must then match
    mirror = load_config(job, ["data.revision=mirror-1", "data.protocol=v1.1"])
    assert mirror.generation_hash() == load_config(
        job, ["data.revision=mirror-1", "data.protocol=v1.1", "judge.force=true"]).generation_hash()
    with pytest.raises(ConfigError, match=r"judge.prompt = 'v1.1' does not match data.protocol = "
                                          r"'v1.0', which goes with judge.prompt = 'v1.0'"):
        load_config(job, ["data.revision=mirror-1", "data.protocol=v1.0"])
    with pytest.raises(ConfigError, match="contradicts data.revision"):
        load_config(job, ["data.protocol=v1.0", "judge.prompt=v1.0"])
    # the v1.0 revision goes with the v1.0 judge prompt, and only with it
    assert load_config(job, [f"data.revision={v10}", "judge.prompt=v1.0"]).judge.prompt == "v1.0"
    with pytest.raises(ConfigError, match=rf"does not match data.revision = '{v10}'"):
        load_config(job, [f"data.revision={v10}"])
    # judge.force vouches for an unknown revision; a declared protocol must still be valid
    assert load_config(job, ["data.revision=main", "judge.force=true"]).data.revision == "main"
    with pytest.raises(ConfigError, match="data.protocol = 'v2'; expected one of"):
        load_config(DEMO, ["data.protocol=v2"])


def test_sample_and_local_revisions_are_labels_unless_a_protocol_is_declared():
    demo = load_config(DEMO)  # revision "sample-v2" with the v1.0 judge prompt
    assert (demo.data.revision, demo.judge.prompt) == ("sample-v2", "v1.0")
    with pytest.raises(ConfigError, match="does not match data.protocol = 'v1.1'"):
        load_config(DEMO, ["data.protocol=v1.1"])
    assert load_config(DEMO, ["data.protocol=v1.0"]).data.protocol == "v1.0"
    # a local snapshot labelled with a hub revision follows that revision's protocol
    with pytest.raises(ConfigError, match="goes with judge.prompt = 'v1.1'"):
        load_config(DEMO, ["data.source=local", "data.path=/snap",
                           "data.revision='9a77ef56b717057ade24ceab4d273712a0b4f19e'"])
    with pytest.raises(ConfigError, match="not a known AA-LCR revision"):
        load_config(DEMO, ["data.source=hf"])  # "sample-v2" is no hub revision
