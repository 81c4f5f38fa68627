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


@pytest.mark.parametrize("env, slots", [
    ({"TWINTEE_DTYPE": "q4_1"}, 1),  # one batch: the q4 kernel shares dequantization from 4 rows up
    ({"TWINTEE_DTYPE": "float32"}, 2),
    ({"TWINTEE_DTYPE": "q4_1", "TWINTEE_PIPELINE_SLOTS": "2"}, 2),
])
def test_pipeline_slots_default_by_dtype_and_obey_the_variable(env, slots):
    assert Node1Config.from_env(env).pipeline_slots == slots


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
    ({"TWINTEE_NODE2_STEP_URL": "http://127.0.0.1:5004"}, "TWINTEE_NODE2_STEP_URL"),
    ({"TWINTEE_NODE2_STEP_URL": "tcp://127.0.0.1"}, "TWINTEE_NODE2_STEP_URL"),
    ({"TWINTEE_NODE2_STEP_PORT": "many"}, "TWINTEE_NODE2_STEP_PORT"),
])
def test_bad_settings_name_the_variable(env, names):
    with pytest.raises(ConfigError, match=names):
        Node1Config.from_env(env)


@pytest.mark.parametrize("env, step_url", [
    ({}, "tcp://127.0.0.1:5004"),
    ({"TWINTEE_NODE2_URL": "http://node2:5001", "TWINTEE_NODE2_STEP_PORT": "6000"}, "tcp://node2:6000"),
    ({"TWINTEE_NODE2_STEP_PORT": "0"}, ""),  # node2 has no step socket: steps over HTTP
    ({"TWINTEE_NODE2_STEP_URL": "tcp://relay:7000"}, "tcp://relay:7000"),
    ({"TWINTEE_NODE2_STEP_URL": ""}, ""),
])
def test_node1_finds_node2s_step_socket_at_node2s_host_unless_told(env, step_url):
    assert Node1Config.from_env(env).node2_step_url == step_url


@pytest.mark.parametrize("port", ["-1", "70000", "5001"])
def test_node2s_step_port_is_off_or_a_port_of_its_own(port):
    with pytest.raises(ConfigError, match="TWINTEE_NODE2_STEP_PORT"):
        Node2Config.from_env({"TWINTEE_NODE2_STEP_PORT": port})


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
