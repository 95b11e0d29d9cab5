"""Static checks of the launch files, parameter files and the installed ament layout (no ROS needed;
``launch`` / ``launch_ros`` are not installable from pip)."""

from __future__ import annotations

import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from embodied_steer.ros.layout import LaunchError, check_node_params, install, plan_launch
from embodied_steer.ros.params import NODES

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.xml"))


@pytest.fixture(scope="module")
def prefix(tmp_path_factory) -> Path:
    return install(tmp_path_factory.mktemp("ament"))


def test_ament_layout(prefix):
    assert (prefix / "share/ament_index/resource_index/packages/embodied_steer").is_file()
    pkg = ET.parse(prefix / "share/embodied_steer/package.xml").getroot()
    assert pkg.attrib["format"] == "3" and pkg.findtext("name") == "embodied_steer"
    assert pkg.find("export/build_type").text == "ament_python"
    for f in LAUNCH_FILES:
        assert (prefix / "share/embodied_steer/launch" / f.name).read_text() == f.read_text()
    for f in (ROOT / "launch/config").glob("*.yaml"):
        assert (prefix / "share/embodied_steer/config" / f.name).is_file()
    for exe in NODES:
        path = prefix / "lib/embodied_steer" / exe
        assert path.stat().st_mode & stat.S_IXUSR
        assert path.read_text().startswith("#!/")
    assert len(LAUNCH_FILES) >= 2


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files_resolve_and_match_declared_parameters(launch_file, prefix):
    nodes = plan_launch(launch_file, [prefix], {"record": "true"})
    assert nodes
    for node in nodes:
        assert node.package == "embodied_steer" and node.executable in NODES
        assert check_node_params(node) == [], node.name
        argv = node.argv()
        assert argv[0] == str(prefix / "lib/embodied_steer" / node.executable) and "--ros-args" in argv


def test_parameter_files_parse_and_name_their_node():
    for f in (ROOT / "launch/config").glob("*.yaml"):
        data = yaml.safe_load(f.read_text())
        (key,) = data.keys()
        assert key.startswith("/") and "ros__parameters" in data[key], f


def test_static_check_catches_mistakes(tmp_path, prefix):
    bad_param = tmp_path / "bad.yaml"
    bad_param.write_text("/policy_server:\n  ros__parameters:\n    control_rate_hz: 20\n    no_such: 1\n")
    bad_key = tmp_path / "badkey.yaml"
    bad_key.write_text("policy_srv:\n  ros__parameters:\n    policy: x\n")
    launch = tmp_path / "x.launch.xml"
    launch.write_text(f"""<launch><node pkg="embodied_steer" exec="policy_server" name="policy_server">
        <param from="{bad_param}"/><param from="{bad_key}"/><param name="lockstep" value="maybe"/></node></launch>""")
    (node,) = plan_launch(launch, [prefix])
    problems = "\n".join(check_node_params(node))
    assert "control_rate_hz=20 has the wrong type" in problems  # an int where a float is declared
    assert "no parameter 'no_such'" in problems
    assert "no section for node '/policy_server'" in problems
    assert "lockstep='maybe' has the wrong type" in problems
    for body, message in [
        ('<node pkg="embodied_steer" exec="nope" name="n"/>', "missing or not executable"),
        ('<node pkg="other_pkg" exec="x" name="n"/>', "not in the ament index"),
        ('<node pkg="embodied_steer" exec="sim_arm" name="n"><param name="a" value="$(env HOME)"/></node>',
         "not supported"),
        ('<include file="x.launch.xml"/>', "not supported"),
        ('<node pkg="embodied_steer" exec="sim_arm" name="n"><param name="a" value="$(var nope)"/></node>',
         "not a declared"),
    ]:
        launch.write_text(f"<launch>{body}</launch>")
        with pytest.raises(LaunchError, match=message):
            plan_launch(launch, [prefix])


def test_console_scripts_are_registered():
    import importlib.metadata as md

    scripts = {ep.name: ep.value for ep in md.entry_points(group="console_scripts")}
    for name in ("embodied-steer-policy-server", "embodied-steer-sim-arm", "embodied-steer-recorder",
                 "embodied-steer-ros-install"):
        assert scripts.get(name, "").startswith("embodied_steer.ros.entry:"), name


def test_loopback_environment(tmp_path):
    from embodied_steer.ros.netenv import loopback_env

    env = loopback_env(tmp_path, 7, base={"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "PATH": os.environ["PATH"]})
    assert "ROS_AUTOMATIC_DISCOVERY_RANGE" not in env  # never both: it would override the profile
    assert env["ROS_DOMAIN_ID"] == "7" and env["ROS_LOG_DIR"].startswith(str(tmp_path))
    profile = ET.parse(env["FASTDDS_DEFAULT_PROFILES_FILE"]).getroot()
    ns = {"d": "http://www.eprosima.com"}
    assert [e.text for e in profile.iterfind(".//d:interfaceWhiteList/d:interface", ns)] == ["lo"]
    assert profile.find(".//d:useBuiltinTransports", ns).text == "false"
    assert profile.find(".//d:initialPeersList//d:address", ns).text == "127.0.0.1"
    with pytest.raises(ValueError):
        loopback_env(tmp_path, 500)
