"""The spec's ``notify:`` section and hook commands (``on_success``, ``on_failure``, ``on_finish``):
accepted shapes, and each bad one as one SpecError naming the file and the field (exit 2)."""

from __future__ import annotations

import pytest

from rota.engine.notify import TaskHooks, task_hooks, wanted
from rota.errors import SpecError
from rota.spec.load import load_spec
from tests.helpers import write_spec


def load(tmp_path, text):
    return load_spec(write_spec(tmp_path, text))


def test_notify_shapes_and_their_defaults(tmp_path):
    full = load(tmp_path, """
        notify: {urls: ["ntfy://a", "json://127.0.0.1:9/x"], events: failed, timeout: 30s}
        tasks: [{name: a, command: "true"}]
    """)
    n = full.file.notify
    assert n is not None and n.urls == ["ntfy://a", "json://127.0.0.1:9/x"]
    assert n.events == ["failed"] and n.timeout == 30.0
    short = load(tmp_path, """
        notify: ntfy://a
        tasks: [{name: a, command: "true"}]
    """).file.notify
    assert short is not None and short.urls == ["ntfy://a"]
    assert short.events == ["failed", "finished", "stopped"] and short.timeout == 10.0
    assert wanted(full)
    assert not wanted(load(tmp_path, 'tasks: [{name: a, command: "true"}]'))


def test_hook_commands_per_task_with_defaults_and_for_the_run(tmp_path):
    spec = load(tmp_path, """
        on_finish: ./report.sh
        defaults: {on_failure: "mail -s failed me"}
        tasks:
          - {name: "train-{seed}", command: "true", matrix: {seed: [1, 2]}, on_success: "echo ok"}
          - {name: quiet, command: "true", on_failure: null}
    """)
    assert spec.file.on_finish == "./report.sh" and spec.file.on_failure is None
    assert task_hooks(spec) == {"train-{seed}": TaskHooks(on_success="echo ok", on_failure="mail -s failed me")}
    assert [t.group for t in spec.tasks[:2]] == ["train-{seed}", "train-{seed}"]  # how the hook finds them
    assert wanted(spec)


@pytest.mark.parametrize("section, field, words", [
    ("notify: {urls: []}", "notify.urls", "at least one apprise URL"),
    ("notify: {urls: [slack]}", "notify.urls", "expected an apprise URL"),
    ("notify: {urls: ['json://h/p'], events: [fail]}", "notify.events.0", "'failed', 'finished' or 'stopped'"),
    ("notify: {urls: ['json://h/p'], on: [failed]}", "notify", "under 'events:'"),
    ("notify: {urls: ['json://h/p'], timeout: 0}", "notify.timeout", "greater than 0"),
    ("notify: {urls: ['json://h/p'], timeout: null}", "notify.timeout", "found null"),
    ("notify: {url: 'json://h/p'}", "notify", "did you mean 'urls'?"),
    ("notify: 5", "notify", "dictionary"),
    ("on_finish: ''", "on_finish", "empty"),
    ("on_failure: [a, b]", "on_failure", "string"),
    ("on_sucess: x", None, "did you mean 'on_success'?"),
])
def test_a_bad_section_is_one_error_naming_file_and_field(tmp_path, section, field, words):
    with pytest.raises(SpecError) as e:
        load(tmp_path, f"""
            {section}
            tasks: [{{name: a, command: "true"}}]
        """)
    assert e.value.file and e.value.file.endswith("rota.yaml")
    assert e.value.field == field and words in e.value.detail, str(e.value)


def test_a_bad_task_hook_names_the_task_and_field(tmp_path):
    with pytest.raises(SpecError) as e:
        load(tmp_path, """
            tasks: [{name: a, command: "true", on_success: "  "}]
        """)
    assert e.value.task == "a" and e.value.field == "on_success" and "empty" in e.value.detail
    same_name = load(tmp_path, """
        tasks:
          - {name: "t-{x}", command: "true", matrix: {x: [1]}, on_failure: "echo 1"}
          - {name: "t-{x}", command: "true", matrix: {x: [2]}, on_failure: "echo 2"}
    """)
    with pytest.raises(SpecError) as e:
        task_hooks(same_name)
    assert e.value.task == "t-{x}" and "distinct names" in e.value.detail
