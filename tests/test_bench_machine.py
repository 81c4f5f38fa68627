"""What `make bench` records about the code it measured."""
import subprocess

from benchmarks.machine import git_revision


def git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_the_revision_says_uncommitted_for_code_but_not_for_the_benchs_own_outputs(tmp_path):
    (tmp_path / "benchmarks" / "runs").mkdir(parents=True)
    files = ["node1.py", "benchmarks/RESULTS.md", "benchmarks/results-avx2-capped.png", "benchmarks/runs/avx2.json"]
    for f in files:
        (tmp_path / f).write_text("v1")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    clean = git_revision(tmp_path)
    assert clean and "uncommitted" not in clean and clean != "unknown"
    for f in files[1:]:
        (tmp_path / f).write_text("v2")  # another CPU kind's bench just rewrote the report
    assert git_revision(tmp_path) == clean
    (tmp_path / "node1.py").write_text("v2")
    assert git_revision(tmp_path) == f"{clean} + uncommitted changes"
