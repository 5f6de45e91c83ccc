"""conf/euca.toml stays loadable and equal to the built-in defaults; bad configuration names its key."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from euca.core.config import Config, ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "conf" / "euca.toml"


def test_example_loads_and_matches_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EUCA_DATA_DIR", "/tmp/euca-test-data")
    from_file = load_config(EXAMPLE)
    built_in = load_config(None)
    # The example documents the defaults: if a default changes, the example must follow.
    assert msgspec.to_builtins(from_file) == msgspec.to_builtins(built_in)
    assert from_file.data_dir == "/tmp/euca-test-data"
    assert from_file.walrus.listen.port == 8773
    assert from_file.cc.listen.port == 8774
    assert from_file.nc.listen.port == 8775


def test_example_sets_every_key() -> None:
    import tomllib

    with open(EXAMPLE, "rb") as f:
        tree = tomllib.load(f)

    def keys(value: object, prefix: str = "") -> set[str]:
        if isinstance(value, dict):
            out: set[str] = set()
            for k, v in value.items():
                out |= keys(v, f"{prefix}{k}.")
            return out
        return {prefix.rstrip(".")}

    assert keys(tree) == keys(msgspec.to_builtins(Config(data_dir="")))


def test_overrides_win_over_the_file() -> None:
    cfg = load_config(EXAMPLE, {"walrus.listen.port": 19150, "region": "home"})
    assert cfg.walrus.listen.port == 19150
    assert cfg.region == "home"
    assert cfg.clc.listen.port == 8773


def test_unknown_key_is_refused_with_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[walrus]\nobject_dir = "x"\n')
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert "object_dir" in str(e.value)
    assert "walrus" in str(e.value)


def test_bad_value_is_refused_with_its_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[walrus.listen]\nport = "eighty"\n')
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert "$.walrus.listen.port" in str(e.value)


def test_out_of_range_port_is_refused_with_its_key() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, {"cc.listen.port": 70000})
    assert "cc.listen" in str(e.value)
    assert "70000" in str(e.value)


def test_bad_choice_is_refused_with_its_key() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, {"store.synchronous": "SOMETIMES"})
    assert "store" in str(e.value)
    assert "SOMETIMES" in str(e.value)


def test_unreadable_and_invalid_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[walrus\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_a_relative_data_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # qemu-img resolves an overlay's backing file against the overlay, dnsmasq runs from /: neither may get
    # a path relative to where `euca --data-dir rel` was started.
    monkeypatch.chdir(tmp_path)
    assert load_config(None, {"data_dir": "rel"}).data_dir == str(tmp_path / "rel")
    monkeypatch.setenv("EUCA_DATA_DIR", "env-rel")
    assert load_config(None).data_path == tmp_path / "env-rel"


def test_a_listen_host_alone_keeps_each_roles_own_port(tmp_path: Path) -> None:
    # `euca --role cc --host 10.0.0.2` (one role per host) sets every role's listen.host: the CC must stay
    # on 8774, not take Listen's 8773 (where it would collide with an SC or CLC on the same host).
    hosts = {f"{role}.listen.host": "10.0.0.2" for role in ("clc", "walrus", "sc", "cc", "nc")}
    cfg = load_config(None, hosts)
    assert [cfg.listen_for(r).port for r in ("clc", "walrus", "cc", "nc", "sc")] == [
        8773,
        8773,
        8774,
        8775,
        8776,
    ]
    assert cfg.cc.listen.host == "10.0.0.2"
    conf = tmp_path / "euca.toml"
    conf.write_text('[sc.listen]\nhost = "10.0.0.3"\n[nc.listen]\nport = 9000\n')
    cfg = load_config(conf)
    assert (cfg.sc.listen.host, cfg.sc.listen.port, cfg.nc.listen.port) == ("10.0.0.3", 8776, 9000)
