"""Which progress calls a job writes (pure logic: the database write and the event are recorded,
not made)."""

import uuid

import pytest

from shared.jobs import runner


class RecordingContext(runner.JobContext):
    """A JobContext whose guarded update records what it would write."""

    def __init__(self) -> None:
        super().__init__(uuid.uuid4(), None, "test", None, 1, 3, "worker-1")
        self.written: list[tuple[float, str | None]] = []

    def _beat(self, **values):  # type: ignore[no-untyped-def]
        self.written.append((values["progress"], values["stage"]))
        return object()


@pytest.fixture(autouse=True)
def no_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner.events, "publish", lambda job, **detail: None)


def test_every_new_stage_is_written_even_at_the_same_percent() -> None:
    ctx = RecordingContext()
    stages = ["loading likeness", "generating", "Studio: txt2img", "Studio: detail", "Studio: upscale"]
    for stage in stages:
        ctx.progress(0.05, stage)
    assert [s for _, s in ctx.written] == stages


def test_a_hot_loop_relabelling_its_step_is_throttled_but_ends_written() -> None:
    ctx = RecordingContext()
    for step in range(1, 401):
        ctx.progress(0.05 + 0.8 * step / 400, f"training step {step}/400, about {400 - step} s left")
    ctx.progress(1.0, "done")
    assert len(ctx.written) < 10  # 401 calls in well under a second
    assert ctx.written[0][1] == "training step 1/400, about 399 s left"
    assert ctx.written[-1] == (1.0, "done")
