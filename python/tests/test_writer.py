"""The seed's interface (create_cache, write_to_caches, run) and unicache_rs.write."""

import io
import json
import os
from pathlib import Path

import pytest

import unicache_rs
from conftest import DATA


def seed_records():
    with open(DATA, encoding="utf-8") as f:
        return json.load(f)


def test_run_matches_the_seed_summary(tmp_path):
    cfg = seed_records()
    inp = tmp_path / "in.json"
    inp.write_text(json.dumps(cfg), encoding="utf-8")
    out = tmp_path / "out" / "summary.json"
    summary = unicache_rs.run(inp, out)
    assert summary == {
        "records_written": len(cfg["records"]),
        "backends_used": cfg.get("backends", ["memory"]),
    }
    assert out.read_text(encoding="utf-8") == json.dumps(summary, indent=2)
    if "file" in summary["backends_used"]:
        assert (out.parent / "cache_file.json").exists()


def test_run_missing_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="Input not found"):
        unicache_rs.run(Path(tmp_path / "nope.json"), Path(tmp_path / "o.json"))


def test_create_cache_seed_semantics(tmp_path):
    for name, path in [("memory", None), ("file", tmp_path / "d" / "c.json"),
                       ("sqlite", tmp_path / "c.sqlite3"), ("sqlite", None)]:
        c = unicache_rs.create_cache(name, path)
        assert c.get("k") is None
        c.set("k", json.dumps({"a": 1}))
        assert json.loads(c.get("k")) == {"a": 1}
        assert c.stats() == {"backend": name, "size": 1, "hits": 1, "misses": 1}
        assert c.delete("k") is True and c.delete("k") is False
        c.set("x", "y")
        c.clear()
        assert c.stats()["size"] == 0
        c.close()
    assert os.stat(tmp_path / "d" / "c.json").st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match="Unknown backend: nope"):
        unicache_rs.create_cache("nope")


def test_write_to_caches_seed_values(tmp_path):
    records = [{"key": "a", "n": 1}, {"key": "b", "n": 2}, {"key": "a", "n": 3}, {"n": 4}]
    result = unicache_rs.write_to_caches(records, ["sqlite", "file"], tmp_path)
    assert result == unicache_rs.WriteResult(written=4, backends_used=["sqlite", "file"])
    c = unicache_rs.create_cache("file", tmp_path / "cache_file.json")
    assert c.get("a") == json.dumps({"key": "a", "n": 3})
    assert c.get("") == json.dumps({"n": 4})
    c.close()


def test_write_from_a_path_to_urls(tmp_path):
    summary = unicache_rs.write(DATA, caches=[f"sqlite:{tmp_path}/w.sqlite3", "memory"])
    n = len(seed_records()["records"])
    assert summary["records_read"] == n
    assert summary["records_written"] + summary["records_skipped"] == n
    assert [t["name"] for t in summary["targets"]] == [f"sqlite:{tmp_path}/w.sqlite3", "memory"]
    with unicache_rs.Cache(f"sqlite:{tmp_path}/w.sqlite3") as c:
        assert json.loads(c.get("user:1"))["name"] == "Ada Lovelace"
        assert len(c) == summary["records_written"]


def test_write_seed_backends_resolve_under_dir(tmp_path):
    inp = tmp_path / "in.json"
    inp.write_text(json.dumps({"records": [{"key": "k", "v": 1}], "backends": ["sqlite"]}))
    summary = unicache_rs.write(inp, dir=str(tmp_path))
    assert summary["records_written"] == 1
    assert (tmp_path / "cache.sqlite3").exists()


def test_write_iterable_of_dicts_into_cache_objects(tmp_path):
    target = unicache_rs.Cache(f"file:{tmp_path}/w.jsonl")
    records = ({"id": i, "v": "x" * (i % 7)} for i in range(5000))
    summary = unicache_rs.write(records, caches=[target], key_field="id", ttl=3600)
    assert summary["records_written"] == 5000
    assert target.get("4999") == json.dumps({"id": 4999, "v": "x" * (4999 % 7)},
                                            separators=(",", ":")).encode()
    assert 3500 < target.ttl("10") <= 3600
    target.close()


def test_write_file_objects_text_and_binary(tmp_path):
    lines = "".join(json.dumps({"key": f"k{i}"}) + "\n" for i in range(300)) + "not json\n"
    for f in (io.StringIO(lines), io.BytesIO(lines.encode())):
        c = unicache_rs.Cache("memory://")
        summary = unicache_rs.write(f, caches=[c], rejects=str(tmp_path / "rej.jsonl"))
        assert summary["records_written"] == 300
        assert summary["records_skipped"] == 1
        assert len(c) == 300
    assert os.stat(tmp_path / "rej.jsonl").st_mode & 0o777 == 0o600


def test_write_errors():
    with pytest.raises(unicache_rs.NotFoundError):
        unicache_rs.write("/nonexistent/input.json", caches=["memory"])
    with pytest.raises(unicache_rs.InvalidInputError, match="no caches"):
        unicache_rs.write([{"key": "a"}])
    with pytest.raises(unicache_rs.InvalidUrlError):
        unicache_rs.write([{"key": "a"}], caches=["nope://"])
    with pytest.raises(unicache_rs.InvalidInputError):
        unicache_rs.write([{"key": "a"}], caches=["memory"], missing_key="maybe")


def test_write_to_servers(redis_server, memcached_server):
    records = [{"key": f"r{i}", "i": i} for i in range(2000)]
    urls = [redis_server.url + "?namespace=w", memcached_server.url + "?namespace=w"]
    summary = unicache_rs.write(records, caches=urls)
    assert summary["records_written"] == 2000
    for u in urls:
        with unicache_rs.Cache(u) as c:
            assert json.loads(c.get("r1999"))["i"] == 1999


def seed_file_cache_write(path, records):
    """What the seed's write_to_caches(records, ["file"], dir) leaves in
    cache_file.json: its FileCache.set per record, each rewriting the whole
    store with json.dumps (one JSON object, no newline)."""
    store = {}
    for rec in records:
        store[str(rec.get("key", ""))] = json.dumps(rec)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(store), encoding="utf-8")
    return store


def test_create_cache_file_reads_the_seeds_cache_file(tmp_path, caplog):
    records = seed_records()["records"] + [{"key": "k:ü", "n": 1}]
    path = tmp_path / "cache_file.json"
    store = seed_file_cache_write(path, records)
    seed_text = path.read_bytes()
    c = unicache_rs.create_cache("file", path)
    for key, value in store.items():
        assert c.get(key) == value
    assert c.stats()["size"] == len(store)
    c.set("new", "x")
    c.close()
    assert "converted" in caplog.text
    # The seed's file is kept beside the log, untouched.
    assert (tmp_path / "cache_file.json.seed").read_bytes() == seed_text
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cache_file.json", "cache_file.json.lock", "cache_file.json.seed"]
    # Opened again: a unicache log now, nothing converted twice.
    c = unicache_rs.create_cache("file", path)
    assert c.get("new") == "x" and c.get("k:ü") == store["k:ü"]
    c.close()
    assert not (tmp_path / "cache_file.json.seed.1").exists()


def test_seed_cache_file_values_that_are_not_strings(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"s": "v", "n": 5, "o": {"a": [1]}, "z": None}))
    (tmp_path / "c.json.seed").write_text("an older backup")
    c = unicache_rs.create_cache("file", path)
    assert (c.get("s"), c.get("n"), c.get("o"), c.get("z")) == ("v", "5", '{"a":[1]}', None)
    c.close()
    assert (tmp_path / "c.json.seed").read_text() == "an older backup"
    assert json.loads((tmp_path / "c.json.seed.1").read_text())["n"] == 5


def test_run_over_a_seed_cache_file(tmp_path):
    cfg = seed_records()
    cfg["backends"] = ["file"]
    seed_file_cache_write(tmp_path / "cache_file.json", [{"key": "old", "n": 0}])
    inp = tmp_path / "in.json"
    inp.write_text(json.dumps(cfg), encoding="utf-8")
    unicache_rs.run(inp, tmp_path / "summary.json")
    c = unicache_rs.create_cache("file", tmp_path / "cache_file.json")
    assert json.loads(c.get("old")) == {"key": "old", "n": 0}
    c.close()
