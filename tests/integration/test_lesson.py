"""The README's lesson cannot drift: its commands are the lesson's, and each one ends as it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from minicontainer import lesson

README = Path(__file__).resolve().parent.parent.parent / "README.md"


def test_readme_shows_exactly_the_lessons_commands() -> None:
    shown = lesson.readme_commands(README.read_text())
    assert shown, "README.md has no lesson section: python -m minicontainer.lesson --write README.md"
    assert shown == lesson.all_commands(), \
        "README.md is out of date: python -m minicontainer.lesson --write README.md"


def test_readme_steps_follow_the_seed_question() -> None:
    text = README.read_text()
    section = text[text.index(lesson.START):text.index(lesson.END)]
    titles = re.findall(r"^### \d+\. (.+)$", section, flags=re.M)
    assert titles == [step.title for step in lesson.STEPS]


@pytest.fixture(scope="module")
def results(demo_tar: Path):
    """The whole lesson, run once for real (it makes and removes its own temporary store)."""
    return lesson.run_lesson(demo_tar)


def test_every_command_of_the_lesson_ends_as_the_lesson_says(results) -> None:
    ran = [r for step in results for r in step]
    assert [r.command.shown for r in ran] == lesson.all_commands()
    assert [r.status for r in ran] == [r.command.expect for r in ran]
    by_command = {r.command.shown: r.output for r in ran}
    # the facts each step is there to show
    assert "Loaded image: minicontainer-demo:latest" in by_command["minicontainer load build/demo.tar"]
    one = by_command["minicontainer exec one sh -c 'hostname; ps'"]
    two = by_command["minicontainer exec two sh -c 'hostname; ps'"]
    assert "    1 root     sleep 600" in one and "    1 root     sleep 600" in two
    assert one.splitlines()[0] != two.splitlines()[0]  # two hostnames
    assert "A /home/student/note.txt" in by_command["minicontainer diff one"]
    assert by_command["minicontainer diff two"] == ""
    assert "PID 1 inside" in by_command["minicontainer anatomy one"]
    assert "unshare(CLONE_NEWPID)" in by_command[
        "minicontainer run --rm --network none --explain minicontainer-demo hostname"]
    assert by_command["busybox wget -qO- http://127.0.0.1:8080/os-release"].startswith("NAME=")
    committed = by_command["minicontainer commit one classroom:v1"].strip()
    assert f"Loaded image ID: {committed}" in by_command["minicontainer load classroom.tar"]
    assert by_command["minicontainer run --rm --network none classroom:v1 cat /home/student/note.txt"] \
        == "hello\n"


def test_the_readme_section_is_rendered_from_the_results(results, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{lesson.START}\nold text\n{lesson.END}\n\nafter\n")
    lesson.write_section(readme, lesson.render(results))
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n\n") and text.endswith("\nafter\n")
    assert "old text" not in text
    assert lesson.readme_commands(text) == lesson.all_commands()
    assert "[exit status 137]" in text
