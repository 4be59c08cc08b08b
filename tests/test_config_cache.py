"""The cache of checked governance files: a second read gives the same rules and workflows as
checking afresh, any change to a file's text or to the workflow states misses it, and a cache
that is damaged or cannot be written is passed over."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from qip_flow import SHIPPED_CONFIG
from qip_flow.config import cache
from qip_flow.config.files import GovernanceFiles
from qip_flow.config.rules import RuleBook, iter_leaves, load_rules
from qip_flow.decide.vocabulary import EngineVocabulary
from qip_flow.errors import InvalidDefinition
from qip_flow.workflow.machines import Workflows


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache.ENV, str(folder))
    return folder


def shipped() -> tuple[GovernanceFiles, Workflows, EngineVocabulary]:
    files = GovernanceFiles.from_folder(SHIPPED_CONFIG)
    workflows = Workflows.from_folder(files.folder / "workflows",
                                      texts=dict(files.part("workflows")))
    defs = workflows.defs
    return files, workflows, EngineVocabulary(defs["plan"].state_names(),
                                              defs["action"].state_names())


def book(files: GovernanceFiles, vocab: EngineVocabulary) -> RuleBook:
    return load_rules(files.folder / "rules", vocab, texts=files.part("rules"))


def dumped(rules: RuleBook) -> list[dict[str, object]]:
    return [f.model_dump() | {"path": f.path, "digest": f.digest} for f in rules.files]


def test_a_cached_read_equals_checking_afresh(cache_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    files, workflows, vocab = shipped()
    first = book(files, vocab)
    assert sorted(p.name.split("-")[0] for p in cache_dir.iterdir()) == [
        "rules", "workflow", "workflow"]
    again = book(files, vocab)
    _, workflows_again, _ = shipped()
    monkeypatch.setenv(cache.ENV, "")
    fresh = book(files, vocab)
    assert again is not first
    assert (again.version, dumped(again)) == (first.version, dumped(first)) == (
        fresh.version, dumped(fresh))
    assert [r.subject for r in again.rules.values()] == [r.subject for r in fresh.rules.values()]
    assert [leaf.op for r in again.rules.values() for leaf in iter_leaves(r.when)] == [
        leaf.op for r in fresh.rules.values() for leaf in iter_leaves(r.when)]
    for kind, wf in workflows_again.defs.items():
        assert (wf.version, wf.model_dump()) == (workflows.defs[kind].version,
                                                 workflows.defs[kind].model_dump())


def test_a_changed_file_or_vocabulary_is_checked_again(cache_dir: Path) -> None:
    files, _, vocab = shipped()
    book(files, vocab)
    name = next(n for n in files.texts if n.startswith("rules/"))
    broken = GovernanceFiles({**files.texts, name: files.texts[name] + "\nnot_a_field: 1\n"},
                             files.origin, files.folder)
    with pytest.raises(InvalidDefinition):
        book(broken, vocab)
    fewer_states = EngineVocabulary(["draft"], ["open"])
    with pytest.raises(InvalidDefinition):
        book(files, fewer_states)


def test_a_damaged_entry_is_rebuilt(cache_dir: Path) -> None:
    files, _, vocab = shipped()
    first = book(files, vocab)
    for entry in cache_dir.glob("rules-*"):
        entry.write_bytes(b"not a pickle")
    again = book(files, vocab)
    assert dumped(again) == dumped(first)
    assert all(e.read_bytes() != b"not a pickle" for e in cache_dir.glob("rules-*"))


def test_an_unwritable_cache_is_passed_over(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(cache.ENV, str(blocker / "cache"))
    files, _, vocab = shipped()
    assert book(files, vocab).version == book(files, vocab).version
    assert blocker.read_text() == "not a folder"


def test_the_oldest_entries_go(cache_dir: Path) -> None:
    for n in range(cache.KEEP + 3):
        assert cache.cached("probe", [str(n)], lambda n=n: n) == n
    kept = sorted(cache_dir.glob("probe-*.pickle"))
    assert len(kept) == cache.KEEP
    assert cache.cached("probe", [str(cache.KEEP + 2)], lambda: "rebuilt") == cache.KEEP + 2


def test_a_folder_others_can_write_is_neither_read_nor_written(cache_dir: Path) -> None:
    """A pickle is code: one planted in a folder another user could write is never loaded."""
    cache_dir.mkdir(mode=0o700)
    assert cache.cached("probe", ["x"], lambda: "built") == "built"
    entry = next(cache_dir.glob("probe-*.pickle"))
    entry.write_bytes(pickle.dumps("planted"))
    assert cache.cached("probe", ["x"], lambda: "built") == "planted"  # our own folder: read
    cache_dir.chmod(0o777)
    try:
        assert cache.cached("probe", ["x"], lambda: "built again") == "built again"
        assert pickle.loads(entry.read_bytes()) == "planted"  # and not written over either
    finally:
        cache_dir.chmod(0o700)


def test_an_entry_others_could_write_or_a_link_is_not_read(cache_dir: Path) -> None:
    """The file itself is checked once open: writable by others, or a symbolic link, it is
    passed over (the folder may have been swapped after it was checked)."""
    assert cache.cached("probe", ["y"], lambda: "built") == "built"
    entry = next(cache_dir.glob("probe-*.pickle"))
    entry.write_bytes(pickle.dumps("planted"))
    entry.chmod(0o666)
    assert cache.cached("probe", ["y"], lambda: "built again") == "built again"
    elsewhere = cache_dir.parent / "elsewhere.pickle"
    elsewhere.write_bytes(pickle.dumps("linked"))
    elsewhere.chmod(0o600)
    entry.unlink()
    entry.symlink_to(elsewhere)
    assert cache.cached("probe", ["y"], lambda: "built once more") == "built once more"
