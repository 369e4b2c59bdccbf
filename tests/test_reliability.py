"""Faults injected into real ``facezoo rank`` child processes, and bad inputs through the CLI.

The scenarios and their checks are those of ``benchmarks/reliability.py`` (its docstring lists them): a child process
really killed with SIGKILL at five points, failing models, two jobs at once on one home, a full disk, an unusable
home, and twenty bad inputs. Each test fails with the checks that did not hold.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reliability  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def zoo(work):
    path = work / "tiny.yaml"
    path.write_text(reliability.ZOO)
    return path


@pytest.fixture(scope="module")
def expected(work, zoo):
    scores = reliability.reference(work, zoo)
    assert len(scores) == 9  # 3 models × 3 metrics
    return scores


def _held(outcome):
    return {check for check, ok in outcome.checks.items() if not ok} or outcome.ok


@pytest.mark.parametrize("fault", reliability.KILLS)
def test_a_run_killed_with_sigkill_recovers_on_re_run_and_loses_nothing(work, zoo, expected, fault):
    outcome = reliability.kill_scenario(work, zoo, fault, expected)
    assert _held(outcome) is True, outcome.detail
    assert outcome.rows_lost == 0


def test_failing_models_leave_the_others_and_the_job_says_partial(work, expected):
    outcome = reliability.faulty_models_scenario(work)
    assert _held(outcome) is True, outcome.detail


def test_two_jobs_at_once_on_one_home_both_complete(work, zoo, expected):
    outcome = reliability.concurrent_scenario(work, zoo, expected)
    assert _held(outcome) is True, outcome.detail


def test_a_disk_that_fills_up_mid_run_fails_every_model_with_that_reason(work, zoo, expected):
    outcome = reliability.disk_full_scenario(work, zoo)
    assert _held(outcome) is True, outcome.detail


def test_a_full_or_unusable_home_is_refused_before_any_work(work, zoo):
    for outcome in reliability.home_scenarios(work, zoo):
        assert _held(outcome) is True, (outcome.name, outcome.detail)


def test_every_bad_input_is_refused_in_one_line_naming_it(work):
    cases = reliability.bad_inputs(work / "inputs")
    assert len(cases) >= 19
    outcomes = reliability.run_bad_inputs(cases, work / "inputs" / "home")
    failed = {o.name: (sorted(k for k, v in o.checks.items() if not v), o.detail) for o in outcomes if not o.ok}
    assert not failed


# -------------------------------------------------------------------------------------------------------------- trust
def test_yaml_tags_that_would_build_python_objects_are_refused(tmp_path):
    from facezoo import FaceZooError
    from facezoo.models.zoo import ZooConfig
    from flows.reevaluate import load_schedule

    marker = tmp_path / "pwned"
    payload = f"!!python/object/apply:os.system ['touch {marker}']"
    zoo, schedule = tmp_path / "zoo.yaml", tmp_path / "schedule.yaml"
    zoo.write_text(f"name: evil\nmodels: {payload}\n")
    schedule.write_text(f"zoo: {payload}\ncron: '0 3 * * *'\n")
    for load, path in ((ZooConfig.from_yaml, zoo), (load_schedule, schedule)):
        with pytest.raises(FaceZooError, match=path.name) as caught:
            load(path)
        assert "python/object" in str(caught.value) and "\n" not in str(caught.value)
    assert not marker.exists()


def test_the_servers_the_project_starts_listen_on_localhost_only(monkeypatch, tmp_path):
    import tasks._prefect as prefect_setup
    from prefect.server.api.server import SubprocessASGIServer
    from storage.tracking import Tracker

    started = []
    monkeypatch.setattr(prefect_setup.subprocess, "Popen", lambda args, **options: started.append(args))
    SubprocessASGIServer(port=54321)._run_uvicorn_command()  # Prefect's ephemeral API, as a flow starts it
    (args,) = started
    assert args[1:4] == ["-m", "tasks._server_guard", str(__import__("os").getpid())]
    assert args[args.index("--host") + 1] == "127.0.0.1"
    ui = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts").ui_command()  # facezoo ui
    assert ui[ui.index("--host") + 1] == "127.0.0.1"
