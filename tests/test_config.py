"""Each process's one config: read from an environment mapping, validated, naming the bad variable."""
import pytest

from node1.config import Node1Config
from node2.config import Node2Config
from shared.config import ConfigError, ModelSettings, TeeSettings


def test_defaults_from_an_empty_environment():
    c1, c2 = Node1Config.from_env({}), Node2Config.from_env({})
    assert (c1.port, c2.port, c1.node2_url) == (5002, 5001, "http://127.0.0.1:5001")
    assert c1.model == ModelSettings() and c1.model.torch_dtype.is_floating_point
    assert c1.tee.kind == "simulated" and c1.pipeline_slots == 2


@pytest.mark.parametrize("env, names", [
    ({"TWINTEE_MAX_BATCH": "lots"}, "TWINTEE_MAX_BATCH"),
    ({"TWINTEE_DTYPE": "int4"}, "TWINTEE_DTYPE"),
    ({"TWINTEE_DTYPE": "float16"}, "float16 needs"),
    ({"TWINTEE_DEVICE": "tpu"}, "TWINTEE_DEVICE"),
    ({"TWINTEE_TEE": "sgx"}, "TWINTEE_TEE"),
    ({"TWINTEE_NODE1_PORT": "70000"}, "TWINTEE_NODE1_PORT"),
    ({"TWINTEE_NODE2_URL": "ftp://x"}, "TWINTEE_NODE2_URL"),
    ({"TWINTEE_PIPELINE_SLOTS": "9"}, "TWINTEE_PIPELINE_SLOTS"),
    ({"TWINTEE_REKEY_SECONDS": "soon"}, "TWINTEE_REKEY_SECONDS"),
])
def test_bad_settings_name_the_variable(env, names):
    with pytest.raises(ConfigError, match=names):
        Node1Config.from_env(env)


def test_configs_are_frozen():
    c = TeeSettings.from_env({"TWINTEE_DATA_DIR": "/tmp/x"})
    with pytest.raises(AttributeError):
        c.kind = "tdx"
    assert str(c.data_dir) == "/tmp/x"


def test_every_step_sets_the_computing_threads_own_torch_threads():
    # OpenMP keeps the count per thread: a request thread must get the decode setting on each step,
    # and a prefill's all-cores setting must not leak into the decode steps that follow it.
    import threading

    import torch

    settings, seen = ModelSettings(threads=1, prefill_threads=2), []

    def steps():
        settings.use_threads_for(400)
        seen.append(torch.get_num_threads())
        settings.use_threads_for(1)
        seen.append(torch.get_num_threads())
        settings.use_threads_for(1, alone=True)  # the only step in flight: the nodes take turns
        seen.append(torch.get_num_threads())
        settings.use_threads_for(1)
        seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    try:
        t = threading.Thread(target=steps)
        t.start()
        t.join()
    finally:
        torch.set_num_threads(before)
    assert seen == [2, 1, 2, 1]


def test_a_step_is_alone_only_while_no_other_slot_has_one_in_flight():
    from node1.scheduler import InFlight

    in_flight = InFlight()
    with in_flight as first:
        with in_flight as second:
            assert (first, second) == (True, False)
    with in_flight as again:
        assert again
