"""``dspex.datasets``: the same splits and samples as DSPy's ``Dataset``/``DataLoader``."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

import dspex
from dspex.datasets import DataLoader, Dataset
from dspex.errors import CallError, ConfigurationError, ImplementationUnavailable, UserError

RECORDS = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(20)]


def make(base: type) -> Any:
    class Toy(base):  # type: ignore[misc,valid-type]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._train, self._dev, self._test = RECORDS[:10], RECORDS[10:16], RECORDS[16:]

    return Toy


def rows(examples: list[Any]) -> list[tuple[Any, ...]]:
    return [(e.question, e.answer, e.dspy_split, sorted(e.inputs().keys())) for e in examples]


def test_splits_are_seeded_sampled_and_tagged() -> None:
    toy = make(Dataset)(
        train_seed=3, train_size=4, eval_seed=1, dev_size=3, input_keys=["question"]
    )
    train = toy.train
    assert len(train) == 4 and toy.train is train  # cached until the seeds change
    assert {e.dspy_split for e in train} == {"train"} and len({e.dspy_uuid for e in train}) == 4
    assert list(train[0].inputs().keys()) == ["question"]
    assert len(toy.dev) == 3 and len(toy.test) == 4
    # a smaller sample is a prefix of a larger one: the shuffle does not depend on the size
    bigger = make(Dataset)(train_seed=3, train_size=8, input_keys=["question"]).train
    assert rows(bigger[:4]) == rows(train)
    toy.reset_seeds(train_seed=4)
    assert toy.train is not train and toy.train_size == 4 and toy.dev_seed == 1


def test_prepare_by_seed_cuts_the_dev_set_per_seed() -> None:
    sets = make(Dataset).prepare_by_seed(train_seeds=[1, 2], train_size=3, dev_size=6)
    assert [len(s) for s in sets.train_sets] == [3, 3] and [len(s) for s in sets.eval_sets] == [
        3,
        3,
    ]
    with pytest.raises(UserError, match="too small"):
        make(Dataset).prepare_by_seed(train_seeds=[1], train_size=30, dev_size=2)


def test_a_subclass_without_a_split_gets_a_clear_error() -> None:
    with pytest.raises(UserError, match="no train split"):
        _ = Dataset().train


def test_matches_dspy_dataset_and_dataloader() -> None:
    pytest.importorskip("dspy")
    from dspy.datasets.dataloader import DataLoader as DSPyLoader
    from dspy.datasets.dataset import Dataset as DSPyDataset

    ours = make(Dataset)(
        train_seed=7, train_size=5, eval_seed=2, dev_size=4, input_keys=["question"]
    )
    theirs = make(DSPyDataset)(
        train_seed=7, train_size=5, eval_seed=2, dev_size=4, input_keys=["question"]
    )
    assert rows(ours.train) == rows(theirs.train) and rows(ours.dev) == rows(theirs.dev)
    assert rows(ours.test) == rows(theirs.test)

    data = [dspex.Example(**r).with_inputs("question") for r in RECORDS]
    a = DataLoader().train_test_split(data, train_size=0.6, test_size=5, random_state=11)
    b = DSPyLoader().train_test_split(data, train_size=0.6, test_size=5, random_state=11)
    assert {k: [e.question for e in v] for k, v in a.items()} == {
        k: [e.question for e in v] for k, v in b.items()
    }


def test_dataloader_argument_errors_are_typed() -> None:
    loader = DataLoader()
    with pytest.raises(CallError, match="cannot exceed"):
        loader.train_test_split(list(range(4)), train_size=3, test_size=3)
    with pytest.raises(CallError, match="Invalid `train_size`"):
        loader.train_test_split(list(range(4)), train_size=1.5)
    with pytest.raises(CallError, match="list"):
        loader.sample(tuple(range(4)), 2)  # type: ignore[arg-type]
    with pytest.raises(CallError, match="tuple of input keys"):
        loader.from_huggingface("x", input_keys=["q"])  # type: ignore[arg-type]
    with pytest.raises(ImplementationUnavailable, match="from_huggingface"):
        _ = dspex.datasets.HotPotQA


@pytest.mark.skipif(
    importlib.util.find_spec("datasets") is not None, reason="datasets is installed"
)
def test_file_loaders_name_the_missing_package(tmp_path: Any) -> None:
    path = tmp_path / "d.csv"
    path.write_text("question,answer\nq,a\n")
    with pytest.raises(ConfigurationError, match="pip install datasets"):
        DataLoader().from_csv(str(path))


def test_from_pandas() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"question": ["q1", "q2"], "answer": ["a1", "a2"], "extra": [1, 2]})
    examples = DataLoader().from_pandas(
        frame, fields=["question", "answer"], input_keys=("question",)
    )
    assert [(e.question, e.answer) for e in examples] == [("q1", "a1"), ("q2", "a2")]
    assert list(examples[0].inputs().keys()) == ["question"]
