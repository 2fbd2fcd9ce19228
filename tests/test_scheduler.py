from stablecore.engine.scheduler import WorkerView, plan
from stablecore.store import QueuedJob


def job(i: int, spec: str = "p.a", model: str | None = None, batch: str | None = None,
        ) -> QueuedJob:
    return QueuedJob(f"j{i}", spec, model_key=model, batch_key=batch)


def names(assignments) -> list[tuple[str, list[str]]]:
    return [(w.name, [j.id for j in jobs]) for w, jobs in assignments]


def test_head_of_queue_goes_first() -> None:
    workers = [WorkerView("w0", {"p.a"})]
    assert names(plan([job(1), job(2)], workers, {})) == [("w0", ["j1"])]


def test_a_warm_worker_gets_its_model() -> None:
    w0 = WorkerView("w0", {"p.a"}, {"p/m1"})
    w1 = WorkerView("w1", {"p.a"}, {"p/m2"})
    assert names(plan([job(1, model="p/m2"), job(2, model="p/m1")], [w0, w1], {})) == [
        ("w1", ["j1"]), ("w0", ["j2"])]


def test_a_cold_job_avoids_the_worker_whose_model_is_wanted_next() -> None:
    w0 = WorkerView("w0", {"p.a"}, {"p/m1"})
    w1 = WorkerView("w1", {"p.a"}, set())
    assert names(plan([job(1, model="p/m9"), job(2, model="p/m1")], [w0, w1], {})) == [
        ("w1", ["j1"]), ("w0", ["j2"])]


def test_a_cold_job_prefers_an_empty_worker() -> None:
    w0 = WorkerView("w0", {"p.a"}, {"p/m1"})
    w1 = WorkerView("w1", {"p.a"}, set())
    assert names(plan([job(1, model="p/m2")], [w0, w1], {})) == [("w1", ["j1"])]


def test_jobs_with_one_batch_key_run_together_up_to_the_limit() -> None:
    queue = [job(1, batch="k"), job(2, batch="other"), job(3, batch="k"), job(4, batch="k")]
    w0 = WorkerView("w0", {"p.a"})
    assert names(plan(queue, [w0], {"p.a": 2})) == [("w0", ["j1", "j3"])]
    w1 = WorkerView("w1", {"p.a"})
    assert names(plan(queue, [w0, w1], {"p.a": 8})) == [
        ("w0", ["j1", "j3", "j4"]), ("w1", ["j2"])]


def test_a_worker_without_the_spec_is_skipped() -> None:
    w0 = WorkerView("w0", {"p.other"})
    w1 = WorkerView("w1", {"p.a"})
    assert names(plan([job(1)], [w0, w1], {})) == [("w1", ["j1"])]
    assert plan([job(1)], [w0], {}) == []
